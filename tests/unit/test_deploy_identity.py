"""deploy/ enforces the doors of docs/security.md (issue 15 item 2): Kafka listens with no plaintext
listener, authorizes with ACLs that a job creates from the catalog, the worker and the gateway take
their Kafka identities from secrets, and the gateway and Grafana are reached only through TLS.
(The same broker settings are exercised on a real Apache Kafka by tests/integration/test_kafka_identity.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]  # type: ignore[no-any-return]


def brokers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {n: s["environment"] for n, s in services.items() if "KAFKA_NODE_ID" in s.get("environment", {})}


def test_no_kafka_listener_takes_a_client_without_a_password(services):
    for name, env in brokers(services).items():
        protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        listeners = [entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")]
        assert all(protocols[listener].startswith("SASL_") for listener in listeners), name
        assert protocols["EXTERNAL"] == "SASL_SSL", f"{name}: agencies' clients cross the network in TLS"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        supers = {u.removeprefix("User:") for u in env["KAFKA_SUPER_USERS"].split(";")}
        assert not {"highland-gateway", "highland-worker"} & supers and not any(u.startswith("agency-") for u in supers)


def test_the_acls_are_granted_by_a_job_before_anything_writes(services):
    job = services["kafka-access"]
    script = job["command"][0]
    assert "highland kafka grant --producer highland-gateway --worker highland-worker" in script
    assert "highland kafka credential highland-gateway" in script
    for name in ("worker", "gateway", "schema"):
        assert services[name]["depends_on"]["kafka-access"]["condition"] == "service_completed_successfully"


def test_highland_services_authenticate_with_secrets_from_the_environment(services):
    for name in ("worker", "gateway", "schema", "dashboards"):
        env = services[name]["environment"]
        assert env["HIGHLAND_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["HIGHLAND_KAFKA_PASSWORD"].startswith("${KAFKA_"), name
    assert services["worker"]["environment"]["HIGHLAND_AGENCY_TOPICS"] == "true"
    assert services["gateway"]["environment"]["HIGHLAND_KAFKA_USERNAME"] == "highland-gateway"


def test_the_gateway_and_grafana_are_reached_only_through_tls(services):
    assert not services["gateway"].get("ports") and not services["grafana"].get("ports")
    proxy = services["tls-proxy"]
    assert proxy["ports"] == ["443:443"]
    caddyfile = (COMPOSE / "tls-proxy" / "Caddyfile").read_text()
    assert "reverse_proxy gateway:8000" in caddyfile and "reverse_proxy grafana:3000" in caddyfile
    assert caddyfile.count("tls /etc/caddy/tls/") == 2


def k8s(kind: str, name: str) -> dict[str, Any]:
    docs = [d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    return next(d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name)


def test_kubernetes_clients_authenticate_and_the_acls_job_runs_grant():
    config = k8s("ConfigMap", "highland-config")["data"]
    assert config["HIGHLAND_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT" and config["HIGHLAND_AGENCY_TOPICS"] == "true"
    [gateway] = k8s("Deployment", "highland-gateway")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in gateway["env"]}
    assert env["HIGHLAND_KAFKA_USERNAME"]["value"] == "highland-gateway"
    assert "secretKeyRef" in env["HIGHLAND_KAFKA_PASSWORD"]["valueFrom"]
    [grant] = k8s("Job", "highland-kafka-access")["spec"]["template"]["spec"]["containers"]
    assert grant["args"] == ["kafka", "grant", "--producer", "highland-gateway", "--worker", "highland-worker"]


def test_kubernetes_reaches_the_gateway_and_grafana_through_tls_only():
    ingress = k8s("Ingress", "highland")["spec"]
    hosts = {h for entry in ingress["tls"] for h in entry["hosts"]}
    backends = {r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ingress["rules"]}
    assert set(backends) <= hosts and set(backends.values()) == {"highland-gateway", "grafana"}
    service = k8s("Service", "highland-gateway")["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"  # no door around the ingress
