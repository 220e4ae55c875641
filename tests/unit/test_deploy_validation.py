"""deploy/ against kept validators and the rules a first start depends on (no Docker engine or
Kubernetes runs here: docs/production.md, "What is checked here"):

- the compose file against the Compose Specification's JSON Schema (check-jsonschema's vendored copy);
- every Kubernetes manifest against the API's OpenAPI schemas (kubernetes-validate, strict);
- every pod spec against the "restricted" Pod Security Standard, field by field;
- start order, health checks and probes, and the Prometheus scrape jobs against what the code serves.
Each validator is shown to refuse a broken file, so a pass means something.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from highland.dashboards.pipeline import GATEWAY_JOB, WORKER_JOB

from highland.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33.0"  # the oldest Kubernetes release deploy/k8s is checked against
# The one installed beside this Python (the dev extras), else whichever is on PATH.
CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or \
    shutil.which("check-jsonschema")
POD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
# The "restricted" level (kubernetes.io/docs/concepts/security/pod-security-standards/).
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in POD_KINDS:
            spec = o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]
            yield f"{o['kind']}/{o['metadata']['name']}", spec


# --- the validators ------------------------------------------------------------------------------------

def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    assert CHECK_JSONSCHEMA, "check-jsonschema is in the dev extras"
    return subprocess.run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_compose(tmp_path: Path):
    done = check_compose(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = compose()
    broken["services"]["schema"]["depends_on"]["kafka-topics"]["condition"] = "service_finished"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert check_compose(tmp_path / "compose.yaml").returncode != 0  # the validator can fail


@pytest.mark.parametrize("obj", manifests(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_every_manifest_is_valid_kubernetes(obj: dict[str, Any]):
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_kubernetes_validator_refuses_a_misspelt_field():
    worker = next(o for o in manifests() if o["metadata"]["name"] == "highland-worker")
    broken = copy.deepcopy(worker)
    broken["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# --- the "restricted" Pod Security Standard ----------------------------------------------------------------

def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the "restricted" level (its checks that a spec can show)."""
    out = []
    pod = spec.get("securityContext") or {}
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(flag)
    out += [f"volume {v['name']}" for v in spec.get("volumes", []) if not set(v) - {"name"} <= ALLOWED_VOLUMES]
    if pod.get("runAsUser") == 0:
        out.append("pod runs as root")
    for c in containers:
        sc, name = c.get("securityContext") or {}, c["name"]
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            out.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runs as root")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation")
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities added")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: hostPort")
    return out


def test_every_pod_spec_passes_the_restricted_pod_security_standard():
    specs = list(pod_specs(manifests()))
    assert {"Deployment/highland-worker", "Deployment/highland-gateway", "Job/highland-schema",
            "Deployment/prometheus"} <= {name for name, _ in specs}
    for name, spec in specs:
        assert restricted_violations(spec) == [], name


def test_the_restricted_check_refuses_what_the_manifests_had_before():
    _, worker = next(s for s in pod_specs(manifests()) if s[0] == "Deployment/highland-worker")
    before = copy.deepcopy(worker)
    before["securityContext"] = {"runAsNonRoot": True, "runAsUser": 10001}
    for c in before["containers"]:
        c.pop("securityContext")
    assert set(restricted_violations(before)) == {
        "worker: allowPrivilegeEscalation", "worker: capabilities not dropped", "worker: seccompProfile"}


def test_the_namespace_enforces_the_restricted_level():
    [namespace] = [o for o in manifests() if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == namespace["metadata"]["name"]


# --- start order, health and probes ----------------------------------------------------------------------

def depends_on(services: dict[str, Any], name: str) -> dict[str, str]:
    """Every service ``name`` waits for, directly or through another, with the condition it waits on."""
    out: dict[str, str] = {}
    todo = [name]
    while todo:
        for dep, how in (services[todo.pop()].get("depends_on") or {}).items():
            if dep not in out:
                out[dep] = how["condition"]
                todo.append(dep)
    return out


def test_the_schema_job_waits_for_every_service_it_uses():
    services = compose()["services"]
    schema = services["schema"]
    env = schema.get("environment") or {}
    env = {**compose()["x-highland-env"], **env}
    brokers = {b.split(":")[0] for b in env["HIGHLAND_KAFKA_BOOTSTRAP"].split(",")}
    clickhouse = {n for n, s in services.items() if str(s.get("image", "")).startswith("clickhouse/clickhouse-server")}
    waits = depends_on(services, "schema")
    assert all(waits.get(b) == "service_healthy" for b in brokers), waits
    assert all(waits.get(c) == "service_healthy" for c in clickhouse), waits
    assert schema["command"][:2] == ["setup", "--wait"] and float(schema["command"][2]) > 0
    job = next(o for o in manifests() if o["kind"] == "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["setup", "--wait"] and float(args[2]) > 0 and job["spec"]["backoffLimit"] >= 1
    for name in ("worker", "gateway"):
        assert depends_on(services, name).get("schema") == "service_completed_successfully"


def healthcheck_url(service: dict[str, Any]) -> str:
    [url] = re.findall(r"http://127\.0\.0\.1:\d+/[\w-]+", " ".join(service["healthcheck"]["test"]))
    return url


def test_compose_health_checks_ask_the_health_endpoints_on_the_configured_ports():
    c = compose()
    env = c["x-highland-env"]
    services = c["services"]
    assert healthcheck_url(services["worker"]) == f"http://127.0.0.1:{env['HIGHLAND_WORKER_WEB_PORT']}/health"
    assert env["HIGHLAND_WORKER_WEB_HOST"] == "0.0.0.0"  # reachable by Prometheus, not only inside
    gateway_port = services["gateway"]["environment"]["HIGHLAND_GATEWAY_PORT"]
    assert healthcheck_url(services["gateway"]) == f"http://127.0.0.1:{gateway_port}/health"
    values = {k.removeprefix("HIGHLAND_").lower(): v for k, v in env.items() if k.startswith("HIGHLAND_WORKER_WEB")}
    assert Settings(_env_file=None, **values).worker_web_enabled  # served by default


def test_kubernetes_probes_ask_the_health_endpoints_on_named_ports():
    objects = manifests()
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "highland-config")
    probes = {}
    for name, spec in pod_specs(objects):
        [container] = spec["containers"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            if kind in container:
                get = container[kind]["httpGet"]
                probes[(name, kind)] = (get["path"], ports[get["port"]])
    worker_port = int(config["data"]["HIGHLAND_WORKER_WEB_PORT"])
    gateway_port = int(config["data"]["HIGHLAND_GATEWAY_PORT"])
    assert config["data"]["HIGHLAND_WORKER_WEB_HOST"] == "0.0.0.0"
    assert probes[("Deployment/highland-worker", "livenessProbe")] == ("/health", worker_port)
    assert probes[("Deployment/highland-worker", "startupProbe")] == ("/health", worker_port)
    # The gateway: ready while the broker answers, alive while it serves HTTP at all.
    assert probes[("Deployment/highland-gateway", "readinessProbe")] == ("/health", gateway_port)
    assert probes[("Deployment/highland-gateway", "livenessProbe")] == ("/live", gateway_port)


# --- Prometheus ------------------------------------------------------------------------------------------

def test_compose_prometheus_scrapes_every_worker_and_gateway_for_the_dashboard():
    c = compose()
    assert "prometheus" in c["services"] and c["services"]["prometheus"]["image"].startswith("prom/prometheus:v")
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    worker = jobs[WORKER_JOB]["dns_sd_configs"][0]
    gateway = jobs[GATEWAY_JOB]["dns_sd_configs"][0]
    assert worker["names"] == ["worker"] and worker["port"] == int(c["x-highland-env"]["HIGHLAND_WORKER_WEB_PORT"])
    assert gateway["names"] == ["gateway"]
    assert gateway["port"] == int(c["services"]["gateway"]["environment"]["HIGHLAND_GATEWAY_PORT"])
    mounts = c["services"]["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert c["x-highland-env"]["HIGHLAND_PROMETHEUS_URL"] == "http://prometheus:9090"  # Grafana's datasource


def test_kubernetes_prometheus_keeps_the_worker_and_gateway_pods_by_label_and_port():
    objects = manifests()
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "prometheus-config")
    jobs = {j["job_name"]: j for j in yaml.safe_load(config["data"]["prometheus.yml"])["scrape_configs"]}
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for job, deployment in ((WORKER_JOB, "highland-worker"), (GATEWAY_JOB, "highland-gateway")):
        keep = {r["source_labels"][0]: r["regex"] for r in jobs[job]["relabel_configs"] if r.get("action") == "keep"}
        template = deployments[deployment]["spec"]["template"]
        assert keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == \
            template["metadata"]["labels"]["app.kubernetes.io/name"]
        assert keep["__meta_kubernetes_pod_container_port_name"] in \
            {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "prometheus")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


# --- Grafana without the internet --------------------------------------------------------------------------

def test_grafana_image_bakes_a_pinned_checksummed_plugin():
    dockerfile = (DEPLOY / "grafana" / "Dockerfile").read_text()
    assert re.search(r"^FROM grafana/grafana:\d+\.\d+\.\d+$", dockerfile, re.M)
    assert re.search(r"^ARG CLICKHOUSE_PLUGIN_VERSION=\d+\.\d+\.\d+$", dockerfile, re.M)
    assert 'sha256sum -c -' in dockerfile and 'test -n "${CLICKHOUSE_PLUGIN_SHA256:-}"' in dockerfile
    assert "GF_INSTALL_PLUGINS" not in (DEPLOY / "compose" / "compose.yaml").read_text().split("# ---")[-1]
    grafana = compose()["services"]["grafana"]
    assert grafana["build"]["args"]["CLICKHOUSE_PLUGIN_SHA256"].startswith("${GRAFANA_CLICKHOUSE_PLUGIN_SHA256:?")
