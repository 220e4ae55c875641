"""The cluster stack (`highland stack up --cluster`): ZooKeeper and four ClickHouse 18.16 servers as
2 shards x 2 replicas (cluster ``highland``), besides the broker, each a process of its own on 127.0.0.1.

Ports come from the settings, so every stack (dev, tests, a helper's own block) keeps its own:
server ``i`` (0..3, shard-major) listens on ``clickhouse_port + 10*i`` (native),
``clickhouse_http_port + 10*i`` (HTTP) and the HTTP port + 1 (interserver, for replicas' fetches);
ZooKeeper on ``clickhouse_port + 181``. Server 0 takes the single server's ports, so clients, which
only know ``clickhouse_port``, reach the cluster through it (the initiator of their distributed
queries) and nothing else changes for them but ``HIGHLAND_CLICKHOUSE_CLUSTER``.

State: ``<state_dir>/cluster/zookeeper`` and ``<state_dir>/cluster/<server>/clickhouse``; pids and logs
as every service's (``zookeeper``, ``clickhouse-<shard>-<replica>``). ZooKeeper is Debian's package,
apt-installed when missing as clickhouse-server is. What works and how it fails on one machine:
../shared/ENVIRONMENT.md, "A replicated ClickHouse cluster on one machine"; docs/local-stack.md.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from highland.settings import Settings
from highland.stack import clickhouse_server
from highland.stack.private import private_folder, write_private
from highland.stack.processes import Service, port_open, wait_until

NAME = "highland"
SHARDS = 2
REPLICAS = 2
PORT_STEP = 10  # between two servers' ports
ZOOKEEPER_OFFSET = 181  # ZooKeeper's port: the native port + this
# The servers' ZooKeeper session (ClickHouse's default). A server killed with SIGKILL holds its
# replicas "active" until it expires, and a restarted one waits that long before replicating
# (ENVIRONMENT.md); shorter ones expired on a starved machine, and 18.16 can crash when its session is
# lost (docs/local-stack.md, "The cluster stack").
SESSION_TIMEOUT_MS = 30_000
ZOOKEEPER_CLASSPATH = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar")
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
TEMPLATE = Path(__file__).parent / "templates" / "clickhouse-cluster.xml"


@dataclass(frozen=True)
class Server:
    """One ClickHouse server of the cluster stack."""

    shard: int  # 1-based
    replica: int  # 1-based, within its shard
    tcp_port: int
    http_port: int
    interserver_port: int
    state_dir: Path  # its own: <state_dir>/cluster/<name>
    service: Service

    @property
    def name(self) -> str:
        return f"clickhouse-{self.shard}-{self.replica}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"


def servers(settings: Settings) -> list[Server]:
    found = []
    for i in range(SHARDS * REPLICAS):
        shard, replica = i // REPLICAS + 1, i % REPLICAS + 1
        name = f"clickhouse-{shard}-{replica}"
        http = settings.clickhouse_http_port + PORT_STEP * i
        found.append(Server(shard, replica, settings.clickhouse_port + PORT_STEP * i, http, http + 1,
                            settings.state_dir / "cluster" / name, Service(name, settings.state_dir)))
    return found


def server(settings: Settings, shard: int, replica: int) -> Server:
    return next(s for s in servers(settings) if (s.shard, s.replica) == (shard, replica))


def zookeeper_port(settings: Settings) -> int:
    return settings.clickhouse_port + ZOOKEEPER_OFFSET


def zookeeper_service(settings: Settings) -> Service:
    return Service("zookeeper", settings.state_dir)


def server_settings(settings: Settings, srv: Server) -> Settings:
    """``settings`` pointing at ``srv`` only (its ports, its state folder for its config)."""
    return settings.model_copy(update={"clickhouse_port": srv.tcp_port, "clickhouse_http_port": srv.http_port,
                                       "state_dir": srv.state_dir})


# --- ZooKeeper ------------------------------------------------------------------------------------

def install_zookeeper(install: bool) -> None:
    if Path(ZOOKEEPER_CLASSPATH[0]).exists():
        return
    if install and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "zookeeper"]
        if subprocess.run(cmd, env=env).returncode != 0:  # a fresh machine may have stale package lists
            subprocess.run(["apt-get", "update"], env=env)
            subprocess.run(cmd, env=env)
    if not Path(ZOOKEEPER_CLASSPATH[0]).exists():
        raise RuntimeError("the cluster stack needs ZooKeeper (Debian: apt-get install -y zookeeper)")


def zookeeper_answers(port: int) -> bool:
    """ZooKeeper serves sessions: its ``srvr`` four-letter word names a mode. (``ruok`` answers
    ``imok`` earlier, while the server still closes every session handshake; an 18.16 server whose
    first handshake is closed can crash: docs/clickhouse-dialect.md, "zookeeper-loss".)"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"srvr")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            return b"Mode:" in answer
    except OSError:
        return False


def start_zookeeper(settings: Settings, timeout_s: float = 60.0) -> int | None:
    svc, port = zookeeper_service(settings), zookeeper_port(settings)
    if svc.pid() is not None:
        return None
    if port_open(port):
        raise RuntimeError(f"port {port} (ZooKeeper) is taken by a process the stack did not start")
    install_zookeeper(settings.install_missing)
    home = settings.state_dir / "cluster" / "zookeeper"
    private_folder(home / "data")
    config = write_private(home / "zoo.cfg",
        "tickTime=2000\ninitLimit=10\nsyncLimit=5\n"
        f"dataDir={home / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\n4lw.commands.whitelist=ruok,stat,mntr,srvr\n"
        # Old snapshots and logs are purged, so the state folder does not grow without bound.
        "autopurge.snapRetainCount=3\nautopurge.purgeInterval=1\n")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("ZooKeeper needs `java` on PATH (Debian: apt-get install -y openjdk-17-jre-headless)")
    pid = svc.start([java, "-Xms64m", "-Xmx256m", "-cp", ":".join(ZOOKEEPER_CLASSPATH), ZOOKEEPER_MAIN,
                     str(config)], cwd=home)
    wait_until(lambda: zookeeper_answers(port), timeout_s, "ZooKeeper", log=svc)
    return pid


# --- ClickHouse -----------------------------------------------------------------------------------

def _cluster_config(settings: Settings, srv: Server, admin_password: str) -> str:
    def replica_xml(s: Server) -> str:
        return (f"                <replica><host>127.0.0.1</host><port>{s.tcp_port}</port>"
                f"<user>default</user><password>{admin_password}</password></replica>")

    shards = "\n".join(
        "            <shard>\n                <internal_replication>true</internal_replication>\n"
        + "\n".join(replica_xml(s) for s in servers(settings) if s.shard == shard)
        + "\n            </shard>"
        for shard in range(1, SHARDS + 1))
    return TEMPLATE.read_text().format(
        interserver_port=srv.interserver_port, zookeeper_port=zookeeper_port(settings),
        session_timeout_ms=SESSION_TIMEOUT_MS, shard=srv.shard, replica=srv.name, cluster=NAME, shards=shards)


def _write_configs(settings: Settings, srv: Server, admin_password: str) -> Path:
    config = clickhouse_server.render_config(server_settings(settings, srv), admin_password, reader_list=False)
    # 600: it holds the admin password the servers query each other with.
    write_private(config.parent / "config.d" / "cluster.xml", _cluster_config(settings, srv, admin_password))
    return config


def start_server(settings: Settings, srv: Server, admin_password: str) -> int | None:
    """Start ``srv`` unless it runs (by its pid file); the pid started, or None. Not waited for."""
    if srv.service.pid() is not None:
        return None
    if port_open(srv.tcp_port):
        raise RuntimeError(f"port {srv.tcp_port} ({srv.name}) is taken by a process the stack did not start")
    exe = clickhouse_server.install() if settings.install_missing else clickhouse_server.binary()
    if exe is None:
        raise RuntimeError("clickhouse-server is not installed (HIGHLAND_INSTALL_MISSING=false)")
    _wait_bindable((srv.tcp_port, srv.http_port, srv.interserver_port), srv.name)
    config = _write_configs(settings, srv, admin_password)
    return srv.service.start([exe, f"--config-file={config}"], cwd=config.parent)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _wait_bindable(ports: tuple[int, ...], name: str, timeout_s: float = 90.0) -> None:
    """18.16 binds its interserver port without SO_REUSEADDR: a server restarted within a minute of
    its predecessor's replica fetches finds that port held by their TIME_WAIT and exits. Wait it out."""
    deadline = time.monotonic() + timeout_s
    while not all(_bindable(p) for p in ports):
        if time.monotonic() > deadline:
            taken = [p for p in ports if not _bindable(p)]
            raise RuntimeError(f"ports {taken} of {name} stayed in use for {timeout_s:.0f} s")
        time.sleep(0.5)


def server_answers(settings: Settings, srv: Server) -> bool:
    if not port_open(srv.tcp_port):
        return False
    from highland.sinks.client import connect

    client = connect(server_settings(settings, srv), database="default")
    try:
        client.execute("SELECT 1")
        return True
    except Exception:
        return False
    finally:
        client.disconnect()


def wait_server(settings: Settings, srv: Server, timeout_s: float = 60.0) -> None:
    def ready() -> bool:
        if srv.service.pid() is None:  # exited (a bad config, a taken port): no point waiting
            raise RuntimeError(f"ClickHouse {srv.name} exited while starting; last lines of "
                               f"{srv.service.log_file}:\n{srv.service.tail()}")
        return server_answers(settings, srv)

    wait_until(ready, timeout_s, f"ClickHouse {srv.name}", log=srv.service)


# A server that dies while starting is started again this many times: 18.16 can crash when its first
# ZooKeeper session is lost under load (docs/clickhouse-dialect.md, "zookeeper-loss"); a bad config
# or a taken port fails every attempt and is reported with the last one.
START_ATTEMPTS = 3


def start(settings: Settings, admin_password: str, timeout_s: float = 90.0) -> list[str]:
    """ZooKeeper, then every server not running; waits until each answers. The names started."""
    started = ["zookeeper"] if start_zookeeper(settings) else []
    launched = [srv for srv in servers(settings) if start_server(settings, srv, admin_password)]
    deadline = time.monotonic() + timeout_s
    for srv in launched:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                wait_server(settings, srv, max(1.0, deadline - time.monotonic()))
                break
            except RuntimeError:
                if srv.service.pid() is not None or attempt == START_ATTEMPTS:
                    raise
                start_server(settings, srv, admin_password)
    return started + [srv.name for srv in launched]


def stop(settings: Settings) -> list[str]:
    """Every server, then ZooKeeper, each by the pid `start` recorded. The names stopped."""
    stopped = [srv.name for srv in servers(settings) if srv.service.stop(grace_s=15.0)]
    if zookeeper_service(settings).stop(grace_s=10.0):
        stopped.append("zookeeper")
    return stopped


def status(settings: Settings) -> list[dict[str, object]]:
    zk_port = zookeeper_port(settings)
    rows: list[dict[str, object]] = [{
        "component": "zookeeper", "name": "zookeeper", "address": f"127.0.0.1:{zk_port}",
        "pid": zookeeper_service(settings).pid(), "role": {"coordination": "ClickHouse replication and ON CLUSTER"},
        "answers": zookeeper_answers(zk_port), "detail": f"state {settings.state_dir / 'cluster' / 'zookeeper'}",
    }]
    for srv in servers(settings):
        rows.append({
            "component": "clickhouse", "name": srv.name, "address": f"{srv.address} (http {srv.http_port})",
            "pid": srv.service.pid(), "role": {"cluster": NAME, "shard": srv.shard, "replica": srv.replica},
            "answers": port_open(srv.tcp_port),
            "detail": f"interserver {srv.interserver_port}, state {srv.state_dir}"
                      + (" (clients' entry point)" if srv.tcp_port == settings.clickhouse_port else ""),
        })
    return rows
