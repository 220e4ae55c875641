"""The direct-Kafka door (CONTRACT §1.1 "Identity", issue 15 item 2): on an Apache Kafka broker that
requires SASL/SCRAM and authorizes with ACLs (highland/stack/kafka.py's ``Sasl``), an agency's own
Kafka client may write its own topic and nothing else, and the worker takes the agency of a record
from the topic it was written to: a record on agency A's topic in agency B's name is dead-lettered
as forbidden_agency and never stored, a correct one is stored once.

Its own broker on the session's Kafka client port + 100 (and the port after it), its own state
folder; ClickHouse is the session stack's."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from highland.ingest.events import SCHEMA_HEADER
from highland.ingest.wire import agency_topic
from highland.sinks.client import connect
from highland.sinks.migrate import migrate
from kafka import KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from highland.settings import Settings
from highland.stack import kafka
from highland.topics import agency_principal, ensure_topics, set_credential
from tests.conftest import ROOT
from tests.integration.support import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration

ADMIN = "highland-admin"
GATEWAY = "highland-gateway"
WORKER = "highland-worker"
OWN = "cq_comms_admin"  # the agency whose client the tests run
OTHER = "cq_commerce"
PORTS = {"event_id": "p-1", "agency": OWN, "indicator": "fiber_broadband_ports", "value": 1200.0, "unit": "ports",
         "region": "yuzhong", "observed_at": "2019-05-01T00:00:00+08:00"}
TURNOVER = {"event_id": "t-1", "agency": OTHER, "indicator": "ecommerce_turnover", "value": 12.5, "unit": "亿元",
            "observed_at": "2019-05-01T00:00:00+08:00"}


@pytest.fixture(scope="module")
def secure_broker(stack: Settings) -> Iterator[Settings]:
    """A fresh single-node Apache Kafka with SASL/SCRAM and ACLs; settings of its admin (a super user)."""
    port = kafka.client_port(stack) + 100
    admin = stack.model_copy(update={
        "state_dir": stack.state_dir / "kafka-sasl", "kafka_bootstrap": f"127.0.0.1:{port}",
        "kafka_controller_port": None, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_username": ADMIN,
        "kafka_password": SecretStr(secrets.token_urlsafe(18)), "agency_topics": True,
    })
    if kafka.service(admin).pid() is None:
        shutil.rmtree(kafka.home(admin) / "data", ignore_errors=True)
    kafka.start(admin, sasl=kafka.Sasl(ADMIN, admin.kafka_password.get_secret_value(), secrets.token_urlsafe(18)))
    yield admin
    kafka.stop(admin)


@pytest.fixture
def secure(secure_broker: Settings, unique: str) -> Iterator[Settings]:
    """The admin's settings on this test's own topics and database; the ACLs of OWN and OTHER granted."""
    settings = secure_broker.model_copy(update={
        "clickhouse_database": f"t_{unique}", "topic_events": f"t.{unique}.events", "topic_dlq": f"t.{unique}.dlq",
        "topic_alerts": f"t.{unique}.alerts", "consumer_group": f"t-{unique}",
        "worker_batch_size": 500, "alert_check_seconds": 1.0,
    })
    ensure_topics(settings)
    granted = highland(settings, "kafka", "grant", "--producer", GATEWAY)  # what deploy/'s job runs
    assert granted.returncode == 0, granted.stdout + granted.stderr
    migrate(settings)
    yield settings
    connect(settings, database="default").execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")


def as_agency(settings: Settings, agency: str) -> KafkaProducer:
    """The Kafka client an agency runs itself: its own SCRAM principal, nothing else."""
    password = secrets.token_urlsafe(18)
    made = highland(settings, "kafka", "credential", "--agency", agency, stdin=password + "\n")
    assert made.returncode == 0, made.stdout + made.stderr
    return client_of(settings, agency_principal(agency), password)


def highland(settings: Settings, *args: str, stdin: str = "", env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "highland", *args], input=stdin, capture_output=True, text=True,
                          env={**worker_env(settings, "cli", Path("/tmp")), **(env or {})}, cwd=ROOT, timeout=120)


def client_of(settings: Settings, user: str, password: str) -> KafkaProducer:
    principal = settings.model_copy(update={"kafka_username": user, "kafka_password": SecretStr(password)})
    # Idempotent, as Java clients are by default: an agency's topic ACL must be enough for that too.
    return KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", max_block_ms=20_000,
                         enable_idempotence=True, **principal.kafka_security())


def send(producer: KafkaProducer, topic: str, event: dict) -> None:
    producer.send(topic, key=f"{event['indicator']}|{event.get('region', 'chongqing')}".encode(),
                  value=json.dumps(event, ensure_ascii=False).encode(), headers=[SCHEMA_HEADER]).get(timeout=20)


def test_an_agencys_principal_writes_its_own_topic_and_no_other(secure: Settings):
    producer = as_agency(secure, OWN)
    try:
        send(producer, agency_topic(secure, OWN), PORTS)
        with pytest.raises(TopicAuthorizationFailedError):
            send(producer, agency_topic(secure, OTHER), {**TURNOVER, "agency": OTHER})
        with pytest.raises(TopicAuthorizationFailedError):
            send(producer, secure.topic_events, PORTS)  # the shared topic: trusted producers only
    finally:
        producer.close(timeout=5)


def test_a_client_without_the_password_is_not_let_in(secure: Settings):
    set_credential(secure, agency_principal(OWN), secrets.token_urlsafe(18))
    with pytest.raises(KafkaError):
        send(client_of(secure, agency_principal(OWN), "a guess"), agency_topic(secure, OWN), PORTS)
    with pytest.raises(KafkaError):  # no plaintext door
        send(KafkaProducer(bootstrap_servers=secure.bootstrap_servers, acks="all", max_block_ms=10_000),
             agency_topic(secure, OWN), PORTS)


def stored(settings: Settings) -> list[tuple[str, str]]:
    return connect(settings).execute("SELECT agency, event_id FROM events ORDER BY event_id")  # type: ignore[no-any-return]


def letters(settings: Settings) -> list[tuple[str, str, str]]:
    return connect(settings).execute("SELECT reason, agency, detail FROM dead_letters")  # type: ignore[no-any-return]


def test_a_record_on_an_agencys_topic_in_another_agencys_name_is_dead_lettered(secure: Settings, tmp_path):
    producer = as_agency(secure, OWN)
    try:
        # OWN writes, to its own topic, an event in OTHER's name that OTHER could send (its indicator and
        # unit): only the topic tells who wrote it. Then a correct one of its own, twice.
        send(producer, agency_topic(secure, OWN), TURNOVER)
        send(producer, agency_topic(secure, OWN), PORTS)
        send(producer, agency_topic(secure, OWN), PORTS)
    finally:
        producer.close(timeout=5)
    worker = WorkerProcess(secure, "a", tmp_path)
    try:
        wait_for(lambda: len(letters(secure)) == 1 and len(stored(secure)) == 1, 90,
                 "the dead letter and the correct event stored", worker.log)
        ((reason, agency, detail),) = letters(secure)
        assert (reason, agency) == ("forbidden_agency", OWN)
        assert OTHER in detail and agency_topic(secure, OWN) in detail
        assert stored(secure) == [(OWN, "p-1")]
        count = connect(secure).execute("SELECT count() FROM events WHERE event_id = 'p-1'")[0][0]
        assert count == 1, "the correct event is stored once"
        assert worker.proc.poll() is None
    finally:
        worker.kill(signal.SIGTERM)


# --- the worker's own principal (issue 15: it was a super user) -----------------------------------------

def principal(settings: Settings, user: str) -> Settings:
    """``settings`` as ``user``, a SCRAM credential made for it the way deploy/'s job makes one."""
    password = secrets.token_urlsafe(18)
    made = highland(settings, "kafka", "credential", user, stdin=password + "\n")
    assert made.returncode == 0, made.stdout + made.stderr
    return settings.model_copy(update={"kafka_username": user, "kafka_password": SecretStr(password)})


def refusals(settings: Settings, user: str) -> list[str]:
    """The broker's log lines of requests its authorizer refused to ``user``."""
    log = kafka.service(settings).log_file.read_text(errors="replace")
    return [line for line in log.splitlines() if f"User:{user}" in line and "Denied" in line]


def test_a_worker_with_its_own_acls_runs_end_to_end_and_cannot_write_an_events_topic(secure: Settings, tmp_path):
    earlier = len(refusals(secure, WORKER))  # the broker and its log serve the whole module
    agency, gateway = as_agency(secure, OWN), principal(secure, GATEWAY)
    shared = client_of(gateway, GATEWAY, gateway.kafka_password.get_secret_value())
    try:
        send(agency, agency_topic(secure, OWN), PORTS)  # the agency's own topic
        send(agency, agency_topic(secure, OWN), {**PORTS, "event_id": "p-bad", "unit": "kg"})  # a dead letter
        send(shared, secure.topic_events, TURNOVER)  # the shared topic, through the gateway's door
    finally:
        agency.close(timeout=5)
        shared.close(timeout=5)
    worker_settings = principal(secure, WORKER)
    worker = WorkerProcess(worker_settings, "w", tmp_path)
    try:
        wait_for(lambda: len(stored(secure)) == 2 and len(letters(secure)) == 1
                 and connect(secure).execute("SELECT count() FROM alerts")[0][0] >= 1, 120,
                 "both events, the dead letter (written to and read back from its topic) and an alert stored",
                 worker.log)
        assert worker.proc.poll() is None
    finally:
        worker.kill(signal.SIGTERM)
    assert stored(secure) == [(OWN, "p-1"), (OTHER, "t-1")]
    setup = highland(worker_settings, "setup")  # deploy/'s schema job runs it with the worker's credential
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert refusals(secure, WORKER)[earlier:] == []  # it never asked for more than it was granted
    # Its credential cannot place an event in anyone's name, on an agency's topic or the shared one.
    own = client_of(worker_settings, WORKER, worker_settings.kafka_password.get_secret_value())
    try:
        for topic in (agency_topic(secure, OWN), secure.topic_events):
            with pytest.raises(TopicAuthorizationFailedError):
                send(own, topic, PORTS)
    finally:
        own.close(timeout=5)
    assert refusals(secure, WORKER)[earlier:]  # and the broker says so


# --- agencies' producer quotas ---------------------------------------------------------------------------

def throttled_ms(producer: KafkaProducer) -> float:
    """The longest time the broker asked this producer to wait (its answers' throttle time), in ms:
    the client's own metric, the largest over its connections."""
    return max((value for group in producer.metrics().values() for name, value in group.items()
                if name == "throttle-time-max" and value == value), default=0.0)  # NaN: never measured


def test_an_agency_flooding_its_topic_is_throttled_and_another_agency_is_not(secure: Settings):
    quota = 64 * 1024
    granted = highland(secure, "kafka", "grant", env={"HIGHLAND_KAFKA_AGENCY_PRODUCER_BYTES_PER_S": str(quota)})
    assert granted.returncode == 0 and f"at most {quota} bytes/s" in " ".join(granted.stdout.split()), granted.stderr
    flooder, other = as_agency(secure, OWN), as_agency(secure, OTHER)
    padding = "x" * 8000
    try:
        # 1 MB at once: well over what its quota allows in the broker's 10-second measuring window.
        for i in range(128):
            flooder.send(agency_topic(secure, OWN), value=json.dumps({**PORTS, "event_id": f"f-{i}",
                                                                       "note": padding}).encode())
        flooder.flush(timeout=60)
        send(other, agency_topic(secure, OTHER), TURNOVER)  # a few hundred bytes
        flooded, quiet = throttled_ms(flooder), throttled_ms(other)
    finally:
        flooder.close(timeout=5)
        other.close(timeout=5)
    print(f"throttle-time-max: flooding agency {flooded:.0f} ms, other agency {quiet:.0f} ms")
    assert flooded > 0 and quiet == 0
