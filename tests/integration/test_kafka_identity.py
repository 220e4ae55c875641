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


def highland(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "highland", *args], input=stdin, capture_output=True, text=True,
                          env=worker_env(settings, "cli", Path("/tmp")), cwd=ROOT, timeout=120)


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
