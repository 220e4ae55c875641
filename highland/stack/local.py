"""`highland stack up | down | status`: the embedded local stack, as one unit.

``up`` is idempotent: it starts only what is not running (as recorded by pid), then creates the
topics and applies the ClickHouse migrations, which are idempotent too. ``down`` stops only the
processes ``up`` started. Generated passwords live in ``<state_dir>/local.env``; the state folder
is 700 and its files 600 from their creation (highland/stack/private.py).
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from highland.settings import Settings
from highland.stack import broker, clickhouse_server, cluster, kafka
from highland.stack.private import private_folder, write_private
from highland.stack.processes import Service, port_open

SECRET_KEYS = ("HIGHLAND_CLICKHOUSE_PASSWORD", "HIGHLAND_CLICKHOUSE_READER_PASSWORD",
               "HIGHLAND_CLICKHOUSE_ADMIN_PASSWORD", "HIGHLAND_CLICKHOUSE_TOKEN_READER_PASSWORD")
# The local server's users mirror deploy/'s roles (docs/security.md, "The local stack"): the gateway
# looks tokens up as a user of its own, as in production.
LOCAL_USERS = {"HIGHLAND_CLICKHOUSE_TOKEN_READER_USER": "highland_tokens"}
# Settings a local broker needs, by broker. Tansu answers aiokafka's InitProducerId with UnknownError,
# so on Tansu producers run without idempotence (retries may then duplicate a message in the topic;
# the worker's deduplication by event_id absorbs that). Apache Kafka keeps the default (on), as production.
LOCAL_DEFAULTS: dict[str, dict[str, str]] = {
    "tansu": {"HIGHLAND_PRODUCER_IDEMPOTENCE": "false"},
    "kafka": {},
}

# What `stack up --cluster` writes into local.env, so every later command (push, worker, verify, ...)
# finds the cluster by its settings alone; `stack up --single` removes them (highland/stack/cluster.py).
def cluster_env(settings: Settings) -> dict[str, str]:
    return {"HIGHLAND_CLICKHOUSE_CLUSTER": cluster.NAME, "HIGHLAND_BROKER": "kafka",
            "HIGHLAND_KAFKA_BOOTSTRAP": kafka.cluster_bootstrap(settings),
            "HIGHLAND_TOPIC_REPLICATION": str(kafka.CLUSTER_NODES)}


LOSS_ON_RESTART = {
    "memory": "a broker restart LOSES every message and committed offset (ClickHouse keeps its rows)",
    "s3": "durable: messages and committed offsets survive restarting the broker and the S3 server",
}


def env_file(settings: Settings) -> Path:
    return settings.state_dir / "local.env"


def ensure_secrets(settings: Settings) -> dict[str, str]:
    """Read the local passwords, generating the missing ones once. Returns them by variable name."""
    path = env_file(settings)
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    changed = False
    for key in SECRET_KEYS:
        if not values.get(key):
            values[key] = os.environ.get(key) or secrets.token_urlsafe(18)
            changed = True
    wanted = LOCAL_DEFAULTS[settings.broker]
    # The reader is kept from the token tables by the databases it is allowed (sinks/reader_access.py).
    listing = {"HIGHLAND_CLICKHOUSE_READER_DATABASES_FILE": str(clickhouse_server.reader_databases_file(settings))}
    for key, value in {**LOCAL_USERS, **listing, **wanted}.items():
        if key not in values:
            values[key] = value
            changed = True
    # A state folder first used with another broker keeps that broker's defaults: drop them (only
    # while they still hold the value written here, so a deliberate edit of the file stays).
    for defaults in LOCAL_DEFAULTS.values():
        for key, value in defaults.items():
            if key not in wanted and values.get(key) == value:
                del values[key]
                changed = True
    if changed:  # 600 from its creation (highland/stack/private.py)
        write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def remember_topology(settings: Settings, as_cluster: bool) -> None:
    """Write (or remove) the cluster stack's settings in local.env."""
    path = env_file(settings)
    values = ensure_secrets(settings)
    wanted = cluster_env(settings)
    kept = {k: v for k, v in values.items() if k not in wanted}
    if as_cluster:
        kept.update(wanted)
    if kept != values:
        write_private(path, "".join(f"{k}={v}\n" for k, v in kept.items()))


def with_secrets(settings: Settings) -> Settings:
    """The settings re-read now that the local env file exists (the environment still wins)."""
    ensure_secrets(settings)
    return type(settings)(_env_file=env_file(settings), state_dir=settings.state_dir)


@dataclass
class UpReport:
    started: list[str]
    topics_created: list[str]
    migrations_applied: list[str]


def up(settings: Settings, as_cluster: bool | None = None) -> UpReport:
    """Start what is missing. ``as_cluster``: True the cluster stack (three Kafka brokers, ZooKeeper,
    2 x 2 ClickHouse servers), False one broker and one server, None whichever local.env names."""
    from highland.sinks.migrate import migrate
    from highland.topics import ensure_topics

    if as_cluster is None:
        as_cluster = settings.clickhouse_cluster == cluster.NAME
    _refuse_the_other_stack(settings, as_cluster)
    if not as_cluster:
        _refuse_the_other_broker(settings)  # before local.env gets the other broker's defaults
    private_folder(settings.state_dir)  # 700, also an older stack's folder
    if as_cluster:
        settings = settings.model_copy(update={"broker": "kafka"})  # the quorum's defaults in local.env
    remember_topology(settings, as_cluster)
    settings = with_secrets(settings)
    admin_password = ensure_secrets(settings)["HIGHLAND_CLICKHOUSE_ADMIN_PASSWORD"]
    if as_cluster:
        started = list(kafka.start_cluster(settings))
        started += cluster.start(settings, admin_password)
        created = ensure_topics(settings)
        applied = migrate(settings)  # ON CLUSTER: settings.clickhouse_cluster is set by now
        _sync_plan(settings)
        return UpReport(started, created, applied)
    started = []
    if settings.broker == "kafka":
        if kafka.start(settings):
            started.append("broker")
    else:
        if settings.broker_storage == "s3" and broker.start_s3(settings):
            started.append("s3")
        if broker.start_broker(settings):
            started.append("broker")
    if clickhouse_server.start(settings, admin_password):
        started.append("clickhouse")
    created = ensure_topics(settings)
    applied = migrate(settings)
    _sync_plan(settings)
    return UpReport(started, created, applied)


def _refuse_the_other_stack(settings: Settings, as_cluster: bool) -> None:
    """The single server and the cluster's first server share ports (as the single broker and the
    quorum's first node do): one of the two stacks at a time."""
    singles = [clickhouse_server.service(settings), kafka.service(settings), broker.broker_service(settings)]
    clustered = [*(s.service for s in cluster.servers(settings)), cluster.zookeeper_service(settings),
                 *(n.service for n in kafka.cluster_nodes(settings))]
    running = [svc.name for svc in (singles if as_cluster else clustered) if svc.pid() is not None]
    if running:
        was, now = ("single-node", "--cluster") if as_cluster else ("cluster", "--single")
        raise RuntimeError(f"the {was} stack still runs ({', '.join(running)}): `highland stack down` "
                           f"before `highland stack up {now}`")


def _refuse_the_other_broker(settings: Settings) -> None:
    """One broker per stack: the other one, started by an earlier `up`, holds the client port."""
    other = broker.broker_service(settings) if settings.broker == "kafka" else kafka.service(settings)
    if other.pid() is not None:
        names = {"kafka": "Apache Kafka", "tansu": "Tansu"}
        was = "tansu" if settings.broker == "kafka" else "kafka"
        raise RuntimeError(f"{names[was]} (started by this stack, pid {other.pid()}) still runs and HIGHLAND_BROKER "
                           f"is now {settings.broker}: `highland stack down` first, or HIGHLAND_BROKER={was}")


def _sync_plan(settings: Settings) -> None:
    """The catalog's plan numbers into ClickHouse, for the dashboards' SQL (a no-op when current)."""
    from highland.catalog.loader import catalog_at
    from highland.sinks.client import connect
    from highland.sinks.plan_tables import sync_plan_tables

    client = connect(settings)
    try:
        sync_plan_tables(client, settings.clickhouse_database, catalog_at(settings.catalog_dir))
    finally:
        client.disconnect()


def worker_service(settings: Settings) -> Service:
    return Service("worker", settings.state_dir)


def start_worker(settings: Settings) -> int | None:
    """A background `highland worker` managed with the stack (the demo's); None if one runs."""
    svc = worker_service(settings)
    if svc.pid() is not None:
        return None
    return svc.start([sys.executable, "-m", "highland", "worker"])


def down(settings: Settings) -> list[str]:
    stopped = ["worker"] if worker_service(settings).stop(grace_s=15.0) else []
    # Whichever broker `up` started, even under another HIGHLAND_BROKER than now (each by its own pid file).
    stopped += broker.stop(settings)
    if kafka.stop(settings):
        stopped.append("broker")
    if clickhouse_server.service(settings).stop(grace_s=15.0):
        stopped.append("clickhouse")
    # The cluster stack's processes, whichever stack local.env names now.
    stopped += cluster.stop(settings)
    stopped += kafka.stop_cluster(settings)
    return stopped


def status(settings: Settings) -> list[dict[str, object]]:
    """One row per component: what runs, where, its pid if the stack started it, and its role."""
    if settings.clickhouse_cluster == cluster.NAME:
        return _cluster_status(settings)
    ch = clickhouse_server.service(settings)
    worker_pid = worker_service(settings).pid()
    rows: list[dict[str, object]] = [
        _broker_row(settings),
        {
            "component": "clickhouse",
            "name": "clickhouse",
            "role": {"cluster": None, "shard": None, "replica": None},  # one server, no cluster
            "address": f"{settings.clickhouse_host}:{settings.clickhouse_port} "
                       f"(http {settings.clickhouse_http_port})",
            "pid": ch.pid(),
            "answers": port_open(settings.clickhouse_port),
            "detail": f"database {settings.clickhouse_database}, state {settings.state_dir / 'clickhouse'}",
        },
    ]
    if worker_pid is not None:
        rows.append(_worker_row(settings, worker_pid))
    if settings.broker == "tansu" and settings.broker_storage == "s3":
        rows.append({
            "component": "s3",
            "name": "s3",
            "role": {"storage": "Tansu"},
            "address": f"127.0.0.1:{settings.s3_port}",
            "pid": broker.s3_service(settings).pid(),
            "answers": port_open(settings.s3_port),
            "detail": f"SeaweedFS, state {settings.state_dir / 's3'}",
        })
    return rows


def _broker_row(settings: Settings) -> dict[str, object]:
    port = int(settings.bootstrap_servers[0].rsplit(":", 1)[1])
    if settings.broker == "kafka":
        pid = kafka.service(settings).pid()
        detail = (f"Apache Kafka {kafka.version()} (KRaft, one node, controller on 127.0.0.1:"
                  f"{kafka.controller_port(settings)}, heap {settings.kafka_heap_mb} MB): durable, "
                  f"messages and committed offsets survive a restart ({kafka.home(settings) / 'data'})")
    else:
        pid = broker.broker_service(settings).pid()
        detail = f"Tansu, storage {settings.broker_storage}: {LOSS_ON_RESTART[settings.broker_storage]}"
    return {"component": "broker", "name": settings.broker, "address": settings.kafka_bootstrap, "pid": pid,
            "role": {"broker": 1}, "answers": port_open(port), "broker": settings.broker, "detail": detail}


def _worker_row(settings: Settings, pid: int) -> dict[str, object]:
    return {"component": "worker", "name": "worker", "address": f"group {settings.consumer_group}", "pid": pid,
            "role": {"group": settings.consumer_group}, "answers": True,
            "detail": f"log {worker_service(settings).log_file}"}


def _cluster_status(settings: Settings) -> list[dict[str, object]]:
    """The cluster stack: each Kafka node, ZooKeeper, each ClickHouse server (its shard and replica)."""
    rows: list[dict[str, object]] = [{
        "component": "broker", "name": node.service.name, "address": node.address, "pid": node.service.pid(),
        "role": {"broker": node.node_id, "controller": node.node_id}, "answers": port_open(node.client_port),
        "broker": "kafka",
        "detail": f"Apache Kafka {kafka.version()} (KRaft quorum of {kafka.CLUSTER_NODES}, controller on "
                  f"127.0.0.1:{node.controller_port}), state {node.home}",
    } for node in kafka.cluster_nodes(settings)]
    rows += cluster.status(settings)
    worker_pid = worker_service(settings).pid()
    if worker_pid is not None:
        rows.append(_worker_row(settings, worker_pid))
    return rows
