"""deploy/: the production layouts, checked by parsing (no Docker engine or Kubernetes here).

Every expectation is derived from the project itself where it can be (Settings fields, the catalog's
agencies, the Grafana provisioning `highland dashboards build` writes, pyproject's version), so a
change on either side that breaks the other fails here.
"""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from highland.catalog.loader import default_catalog
from highland.dashboards import alerting
from highland.dashboards.build import READER_PASSWORD_ENV
from highland.sinks.tables import auth_database

from highland.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
CLICKHOUSE_DIR = COMPOSE_DIR / "clickhouse"
K8S = DEPLOY / "k8s"

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
XML_FILES = sorted(DEPLOY.rglob("*.xml"))
SETTINGS_ENV = {f"HIGHLAND_{name.upper()}" for name in Settings.model_fields}
HIGHLAND_VAR = re.compile(r"\bHIGHLAND_[A-Z0-9_]+\b")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?[^}]*\}")


def grafana_env_refs() -> set[str]:
    """Environment variables Grafana expands in the provisioning files `dashboards build` writes."""
    text = json.dumps(alerting.contact_points(default_catalog()))
    return set(re.findall(r"\$\{?(HIGHLAND_[A-Z0-9_]+)", text)) | {READER_PASSWORD_ENV}


def load_yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def image_tag(image: str) -> str:
    name = image.split("@", 1)[0]
    return name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""


def host_ports(service: dict[str, Any]) -> list[str]:
    """Host side of each published port, with its bind address (``127.0.0.1:8123`` or ``3000``)."""
    out = []
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        if len(parts) < 2:
            raise AssertionError(f"port {spec} is published on a random host port")
        out.append(":".join(parts[:-1]))
    return out


def highland_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services running the Highland image (Grafana is built too, from deploy/grafana/)."""
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("highland:")}


def clickhouse_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("clickhouse/clickhouse-server")}


# --- every file parses -------------------------------------------------------------------------------

def test_there_is_a_compose_file_and_kubernetes_manifests():
    assert COMPOSE_DIR / "compose.yaml" in YAML_FILES
    assert any(p.parent == K8S for p in YAML_FILES)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path):
    docs = load_yaml_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_xml_file_parses(path: Path):
    assert ET.parse(path).getroot().tag == "clickhouse"


def test_no_python_logic_in_deploy():
    assert not list(DEPLOY.rglob("*.py"))


# --- compose: images, settings, ports --------------------------------------------------------------

def test_every_image_is_pinned(services: dict[str, dict[str, Any]]):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image name"
        tag = image_tag(image)
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_the_highland_image_carries_the_project_version(services: dict[str, dict[str, Any]]):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    built = highland_services(services)
    assert {"worker", "gateway", "schema", "dashboards"} <= set(built)
    assert {s["image"] for s in built.values()} == {f"highland:{version}"}
    assert {s["build"]["dockerfile"] for s in built.values()} == {"deploy/Dockerfile"}
    assert (COMPOSE_DIR / built["worker"]["build"]["context"] / "deploy" / "Dockerfile").resolve() == \
        DEPLOY / "Dockerfile"


def test_every_highland_variable_in_deploy_files_is_a_setting():
    allowed = SETTINGS_ENV | grafana_env_refs()
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        used = set(HIGHLAND_VAR.findall(path.read_text(encoding="utf-8")))
        assert used <= allowed, f"{path.relative_to(ROOT)}: not settings: {sorted(used - allowed)}"


def test_settings_values_in_compose_are_valid(services: dict[str, dict[str, Any]]):
    for name, service in highland_services(services).items():
        values = {k.removeprefix("HIGHLAND_").lower(): v for k, v in env(service).items()
                  if k.startswith("HIGHLAND_") and "${" not in v}
        Settings(_env_file=None, **values)  # raises if a value does not fit its field
        assert values["clickhouse_cluster"], name


def test_host_ports_do_not_collide(services: dict[str, dict[str, Any]]):
    published = [port for s in services.values() for port in host_ports(s)]
    numbers = Counter(p.rsplit(":", 1)[-1] for p in published)
    assert published and all(n == 1 for n in numbers.values()), numbers


def test_scaled_services_publish_no_host_port(services: dict[str, dict[str, Any]]):
    for name, service in services.items():
        if service.get("deploy", {}).get("replicas", 1) > 1:
            assert not service.get("ports"), f"{name}: replicas would fight over a host port"


def test_workers_run_on_the_cluster_with_replicated_topics(services: dict[str, dict[str, Any]]):
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] >= 2
    worker_env = env(worker)
    assert worker_env["HIGHLAND_TOPIC_REPLICATION"] == "3"
    assert worker_env["HIGHLAND_PRODUCER_IDEMPOTENCE"] == "true"
    assert int(worker_env["HIGHLAND_TOPIC_PARTITIONS"]) >= worker["deploy"]["replicas"]
    brokers = worker_env["HIGHLAND_KAFKA_BOOTSTRAP"].split(",")
    kafka = {n for n, s in services.items() if "KAFKA_NODE_ID" in env(s)}
    assert {b.split(":")[0] for b in brokers} == kafka


def test_topics_job_uses_the_workers_topic_settings(services: dict[str, dict[str, Any]]):
    topics_env, worker_env = env(services["kafka-topics"]), env(services["worker"])
    for key in ("HIGHLAND_TOPIC_EVENTS", "HIGHLAND_TOPIC_DLQ", "HIGHLAND_TOPIC_ALERTS", "HIGHLAND_TOPIC_PARTITIONS",
                "HIGHLAND_TOPIC_REPLICATION"):
        assert topics_env[key] == worker_env[key]
        assert f"$${key}" in " ".join(services["kafka-topics"]["command"])


# --- compose: Kafka in KRaft mode --------------------------------------------------------------------

def test_kafka_is_three_kraft_brokers_with_a_matching_quorum(services: dict[str, dict[str, Any]]):
    brokers = {n: env(s) for n, s in services.items() if "KAFKA_NODE_ID" in env(s)}
    assert len(brokers) == 3
    ids = {e["KAFKA_NODE_ID"] for e in brokers.values()}
    assert len(ids) == 3
    for name, e in brokers.items():
        assert "controller" in e["KAFKA_PROCESS_ROLES"].split(",")
        assert "ZOOKEEPER" not in " ".join(e)
        voters = dict(v.split("@") for v in e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == {e2["KAFKA_NODE_ID"]: f"{n2}:9093" for n2, e2 in brokers.items()}
        assert f"//{name}:" in e["KAFKA_ADVERTISED_LISTENERS"]
        assert int(e["KAFKA_MIN_INSYNC_REPLICAS"]) < int(e["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert services[name]["image"].startswith(("apache/kafka:", "bitnami/kafka:"))


# --- compose: ClickHouse cluster ---------------------------------------------------------------------

def cluster_config() -> ET.Element:
    return ET.parse(CLICKHOUSE_DIR / "config.d" / "cluster.xml").getroot()


def remote_servers() -> ET.Element:
    found = cluster_config().find("remote_servers")
    assert found is not None
    return found


def test_remote_servers_declare_two_shards_of_two_replicas(services: dict[str, dict[str, Any]]):
    clusters = list(remote_servers())
    assert len(clusters) == 1
    cluster = clusters[0]
    assert cluster.tag == env(services["worker"])["HIGHLAND_CLICKHOUSE_CLUSTER"]
    shards = cluster.findall("shard")
    assert len(shards) == 2
    hosts = []
    for shard in shards:
        assert shard.findtext("internal_replication") == "true"
        replicas = shard.findall("replica")
        assert len(replicas) == 2
        hosts += [r.findtext("host") for r in replicas]
    assert len(set(hosts)) == 4
    assert set(hosts) == set(clickhouse_services(services))
    secret = cluster.find("secret")
    assert secret is not None and secret.get("from_env") and not (secret.text or "").strip()


def test_each_server_mounts_its_own_macros_matching_remote_servers(services: dict[str, dict[str, Any]]):
    cluster = next(iter(remote_servers()))
    replicas_seen = set()
    for shard_number, shard in enumerate(cluster.findall("shard"), start=1):
        for replica in shard.findall("replica"):
            host = replica.findtext("host")
            target = ":/etc/clickhouse-server/config.d/macros.xml:ro"
            mounts = [v for v in services[host]["volumes"] if v.endswith(target)]
            assert len(mounts) == 1, host
            macros = ET.parse(COMPOSE_DIR / mounts[0].split(":")[0]).getroot().find("macros")
            assert macros is not None
            assert int(macros.findtext("shard") or 0) == shard_number
            assert macros.findtext("cluster") == cluster.tag
            replicas_seen.add(macros.findtext("replica"))
    assert len(replicas_seen) == 4  # {replica} is unique cluster-wide (plan tables replicate everywhere)


def test_every_server_mounts_the_shared_config_and_gets_its_secrets(services: dict[str, dict[str, Any]]):
    needed = {e.get("from_env") for p in (CLICKHOUSE_DIR / "config.d").glob("*.xml")
              for e in ET.parse(p).getroot().iter() if e.get("from_env")}
    needed |= {e.get("from_env") for p in (CLICKHOUSE_DIR / "users.d").glob("*.xml")
               for e in ET.parse(p).getroot().iter() if e.get("from_env")}
    assert needed
    for name, service in clickhouse_services(services).items():
        targets = {v.split(":")[1] for v in service["volumes"] if v.startswith("./")}
        assert {"/etc/clickhouse-server/config.d/cluster.xml", "/etc/clickhouse-server/users.d/highland.xml"} <= targets
        assert needed <= set(env(service)), name
        assert any(v.endswith(":/var/lib/clickhouse") for v in service["volumes"])


def test_passwords_come_from_the_environment_only():
    for path in CLICKHOUSE_DIR.rglob("*.xml"):
        for element in ET.parse(path).getroot().iter():
            if element.tag.startswith("password") or element.tag == "secret":
                assert element.get("from_env") and not (element.text or "").strip(), path


def test_clickhouse_users_match_the_settings(services: dict[str, dict[str, Any]]):
    worker_env = env(services["worker"])
    users = ET.parse(CLICKHOUSE_DIR / "users.d" / "highland.xml").getroot().find("users")
    assert users is not None
    writer = users.find(worker_env["HIGHLAND_CLICKHOUSE_USER"])
    reader = users.find(worker_env["HIGHLAND_CLICKHOUSE_READER_USER"])
    assert writer is not None and reader is not None
    db = worker_env["HIGHLAND_CLICKHOUSE_DATABASE"]
    for user in (writer, reader):
        grants = [q.text or "" for q in user.iter("query")]
        assert grants and all(q.rsplit(" ON ", 1)[1].startswith((f"{db}.", f"{auth_database(db)}."))
                              or q.endswith(" ON *.*") for q in grants)
    assert not [q for q in reader.iter("query") if f"{auth_database(db)}." in (q.text or "")]  # no token table
    reader_grants = " ".join(q.text or "" for q in reader.iter("query"))
    assert "INSERT" not in reader_grants and "ALTER" not in reader_grants
    assert "CLUSTER" in " ".join(q.text or "" for q in writer.iter("query"))  # ON CLUSTER DDL
    profiles = ET.parse(CLICKHOUSE_DIR / "users.d" / "highland.xml").getroot().find("profiles")
    assert profiles is not None
    writer_profile = profiles.find(writer.findtext("profile") or "")
    assert writer_profile is not None
    assert writer_profile.findtext("distributed_foreground_insert") == "1"  # read-your-writes


def test_keeper_is_a_three_node_ensemble(services: dict[str, dict[str, Any]]):
    keepers = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("clickhouse/clickhouse-keeper")}
    config = ET.parse(CLICKHOUSE_DIR / "keeper" / "keeper.xml").getroot()
    raft = {s.findtext("id"): s.findtext("hostname") for s in config.iter("server")}
    assert len(raft) == 3
    assert {env(s)["KEEPER_SERVER_ID"]: n for n, s in keepers.items()} == raft
    zookeeper = cluster_config().find("zookeeper")
    assert zookeeper is not None
    assert {n.findtext("host") for n in zookeeper.findall("node")} == set(raft.values())


# --- compose: Grafana and secrets ----------------------------------------------------------------------

def test_grafana_gets_the_plugin_the_provisioning_and_every_variable_it_expands(services: dict[str, dict[str, Any]]):
    grafana = services["grafana"]
    # Built from deploy/grafana/ with the plugin inside; nothing installed at start (no internet).
    assert grafana["build"]["context"] == "../grafana" and (COMPOSE_DIR / "../grafana/Dockerfile").is_file()
    grafana_env = env(grafana)
    assert "GF_INSTALL_PLUGINS" not in grafana_env and grafana_env["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"
    missing = grafana_env_refs() - set(grafana_env)
    assert not missing, f"Grafana would expand these to empty strings: {sorted(missing)}"
    out_dir = env(services["dashboards"])["HIGHLAND_DASHBOARDS_OUT"]
    assert grafana_env["GF_PATHS_PROVISIONING"] == f"{out_dir}/provisioning"
    assert f"grafana-provisioning:{out_dir}" in services["dashboards"]["volumes"]
    assert f"grafana-provisioning:{out_dir}:ro" in grafana["volumes"]
    assert services["dashboards"]["command"] == ["dashboards", "build"]


def test_every_interpolated_variable_is_in_env_example_or_defaulted():
    text = (COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8")
    example = dict(line.split("=", 1) for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    for name, operator in INTERPOLATION.findall(text):
        assert name in example or operator == ":-", f"${{{name}}} has no placeholder in .env.example"


def test_env_example_holds_placeholders_only():
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, value = line.split("=", 1)
        if re.search(r"PASSWORD|SECRET|TOKEN|CLUSTER_ID", name):
            assert value == "" or value.startswith("change-me"), name
        else:
            assert value == "" or "example" in value, name
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()


# --- Kubernetes -----------------------------------------------------------------------------------------

def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in load_yaml_docs(path)]


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")
    assert all(img["newTag"] != "latest" for img in kustomization["images"])


def test_k8s_config_is_settings_and_deployments_reference_it_and_the_secret():
    objects = k8s_objects()
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    assert set(config["data"]) <= SETTINGS_ENV
    assert config["data"]["HIGHLAND_TOPIC_REPLICATION"] == "3"
    assert config["data"]["HIGHLAND_CLICKHOUSE_CLUSTER"]
    assert not any(re.search(r"PASSWORD|TOKEN", k) for k in config["data"])  # secrets live in the Secret
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "Job")
                   and o["spec"]["template"]["spec"]["containers"][0]["image"] == "highland"}
    assert {"highland-worker", "highland-gateway", "highland-schema"} <= set(deployments)
    for deployment in deployments.values():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        sources = container["envFrom"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in sources
        assert any("secretRef" in s for s in sources)
    worker = deployments["highland-worker"]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]
    assert 2 <= worker["spec"]["replicas"] <= int(config["data"]["HIGHLAND_TOPIC_PARTITIONS"])


def test_k8s_gateway_service_targets_the_gateway_port():
    objects = k8s_objects()
    service = next(o for o in objects if o["kind"] == "Service")
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "highland-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port[service["spec"]["ports"][0]["targetPort"]] == int(config["data"]["HIGHLAND_GATEWAY_PORT"])
    assert service["spec"]["selector"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()
