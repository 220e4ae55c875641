"""deploy/compose's Kafka settings, run (issue 15: they had only been read as a file). kafka-1's
environment, anchors merged and ``${...}`` filled as docker compose fills them from .env, is turned
into server.properties the way the apache/kafka image turns its environment into one (its
``utility render-properties`` with kafka-propertiesSpec.json: ``KAFKA_`` dropped, ``_`` -> ``.``,
``___`` -> ``-``, ``__`` -> ``_``, lower case; the JVM variables excluded), and the local stack's
Apache Kafka runs it. Only what one machine needs is changed, each named in ``ON_ONE_MACHINE``: the
addresses, the log folder, the replication factors of one node and the broker's TLS key. The SASL
listeners, the JAAS users, the mechanisms, the authorizer and the super users are compose's own.

Then what deploy/'s kafka-access job runs works against it (as the PLAIN admin: `highland kafka
grant`, `highland kafka credential`), the worker's SCRAM principal is let in on the internal
listener, an agency's over TLS on the external one, and a client without a password is not.

The image is apache/kafka:3.9.1; the broker here is the local stack's release (templates/kafka-pom.xml)."""

from __future__ import annotations

import re
import secrets
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from highland.settings import Settings
from highland.stack import kafka
from highland.stack.processes import Service, wait_until
from tests.conftest import ROOT
from tests.integration.test_kafka_identity import PORTS, highland, send

pytestmark = pytest.mark.integration

COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
# kafka-propertiesSpec.json's excludes: variables of the start script, not server properties.
NOT_PROPERTIES = {"KAFKA_VERSION", "KAFKA_HEAP_OPT", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
                  "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL",
                  "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL"}
AGENCY = "cq_commerce"


def image_properties(environment: dict[str, str]) -> dict[str, str]:
    """The apache/kafka image's rendering of its environment into server.properties."""
    def key(name: str) -> str:
        dotted = re.sub(r"[^_]_[^_]", lambda m: m.group(0).replace("_", "."), name)
        return dotted.replace("___", "-").replace("__", "_").lower()

    return {key(name.removeprefix("KAFKA_")): value for name, value in environment.items()
            if name.startswith("KAFKA_") and name not in NOT_PROPERTIES}


def compose_environment(service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """``service``'s environment as docker compose passes it: anchors merged, ``${VAR:?..}`` and
    ``${VAR:-default}`` filled from ``dotenv``."""
    raw = yaml.safe_load(COMPOSE.read_text())["services"][service]["environment"]

    def fill(value: object) -> str:
        def one(m: re.Match[str]) -> str:
            name, operator, default = m.group(1), m.group(2), m.group(3)
            if operator == ":-":
                return dotenv.get(name, default)
            return dotenv[name]  # ${VAR:?...}: compose refuses to start without it
        return re.sub(r"\$\{(\w+)(:[?-])?([^}]*)\}", one, str(value))

    return {name: fill(value) for name, value in raw.items()}


def broker_key(folder: Path) -> Path:
    """A self-signed key and certificate for 127.0.0.1, as one PEM file (compose's ./tls/kafka-1)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    (folder / "broker.pem").write_text(key.read_text() + cert.read_text())
    return cert


@pytest.fixture(scope="module")
def compose_broker(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("compose-kafka")
    port = kafka.client_port(stack) + 110  # internal; controller +1, external +2
    dotenv = {name: secrets.token_urlsafe(18) for name in (
        "KAFKA_BROKER_PASSWORD", "KAFKA_ADMIN_PASSWORD", "KAFKA_CONTROLLER_PASSWORD")}
    dotenv.update(KAFKA_CLUSTER_ID=kafka._new_cluster_id(), KAFKA_EXTERNAL_HOST="127.0.0.1")
    environment = compose_environment("kafka-1", dotenv)
    properties = image_properties(environment)
    ca = broker_key(home)
    on_one_machine = {
        "listeners": f"INTERNAL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1},EXTERNAL://127.0.0.1:{port + 2}",
        "advertised.listeners": f"INTERNAL://127.0.0.1:{port},EXTERNAL://127.0.0.1:{port + 2}",
        "controller.quorum.voters": f"1@127.0.0.1:{port + 1}",
        "log.dirs": str(home / "data"),
        "listener.name.external.ssl.keystore.location": str(home / "broker.pem"),
        **{name: "1" for name in ("default.replication.factor", "min.insync.replicas",
                                  "offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                                  "transaction.state.log.min.isr")},
    }
    assert set(on_one_machine) <= set(properties), set(on_one_machine) - set(properties)  # only changed, never added
    config = home / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in {**properties, **on_one_machine}.items()))
    lib, java = kafka.resolve(stack), shutil.which("java")
    assert java
    jvm = [java, "-Xmx512m", "-cp", str(lib / "*")]
    subprocess.run([*jvm, kafka.STORAGE_TOOL, "format", "--config", str(config),
                    f"--cluster-id={environment['CLUSTER_ID']}"], check=True, capture_output=True, timeout=120)
    service = Service("compose-kafka", home)
    service.start([*jvm, "kafka.Kafka", str(config)], cwd=home)
    admin = stack.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{port}", "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN", "kafka_username": "admin",
        "kafka_password": SecretStr(dotenv["KAFKA_ADMIN_PASSWORD"]), "agency_topics": True,
        "topic_partitions": 1, "topic_replication": 1})
    try:
        wait_until(lambda: kafka.answers(admin), 90, "the broker of compose's settings", log=service)
        yield {"admin": admin, "external": f"127.0.0.1:{port + 2}", "ca": ca, "properties": properties}
    finally:
        service.stop(grace_s=10)


def test_the_compose_broker_takes_the_kafka_access_job_and_scram_clients(compose_broker: dict[str, Any]):
    admin: Settings = compose_broker["admin"]
    assert compose_broker["properties"]["listener.security.protocol.map"].count("SASL_") == 3  # as compose wrote it
    # deploy/'s kafka-access job, as the PLAIN admin: topics, ACLs, quotas, the services' credentials.
    granted = highland(admin, "kafka", "grant", "--producer", "highland-gateway", "--worker", "highland-worker")
    assert granted.returncode == 0, granted.stdout + granted.stderr
    passwords = {user: secrets.token_urlsafe(18) for user in ("highland-worker", "agency-" + AGENCY)}
    for user, password in passwords.items():
        made = highland(admin, "kafka", "credential", user, stdin=password + "\n")
        assert made.returncode == 0, made.stdout + made.stderr

    # The worker, SCRAM-SHA-512 on the internal listener, as compose's services connect.
    worker = admin.model_copy(update={"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_username": "highland-worker",
                                      "kafka_password": SecretStr(passwords["highland-worker"])})
    client = KafkaAdminClient(bootstrap_servers=worker.bootstrap_servers, **worker.kafka_security())
    try:
        assert admin.topic_events in client.list_topics()
    finally:
        client.close()

    # An agency's own client from outside: SCRAM over TLS on the external listener; its topic only.
    agency = KafkaProducer(bootstrap_servers=[compose_broker["external"]], acks="all", max_block_ms=20_000,
                           security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                           sasl_plain_username="agency-" + AGENCY, sasl_plain_password=passwords["agency-" + AGENCY],
                           ssl_context=ssl.create_default_context(cafile=str(compose_broker["ca"])))
    try:
        send(agency, f"{admin.topic_events}.in.{AGENCY}", {**PORTS, "agency": AGENCY})
        with pytest.raises(TopicAuthorizationFailedError):
            send(agency, admin.topic_events, PORTS)
    finally:
        agency.close(timeout=5)

    with pytest.raises(KafkaError):  # no door without a password
        send(KafkaProducer(bootstrap_servers=admin.bootstrap_servers, acks="all", max_block_ms=10_000),
             admin.topic_events, PORTS)


def test_the_translation_is_the_images_rule():
    assert image_properties({"KAFKA_LISTENER_NAME_INTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG": "x",
                             "KAFKA_SUPER_USERS": "User:a", "KAFKA_HEAP_OPTS": "-Xmx1g", "CLUSTER_ID": "c",
                             "KAFKA_OPTS": "-Dx", "KAFKA_LOG_RETENTION_HOURS": "1"}) == {
        "listener.name.internal.scram-sha-512.sasl.jaas.config": "x", "super.users": "User:a",
        "heap.opts": "-Xmx1g", "log.retention.hours": "1"}
