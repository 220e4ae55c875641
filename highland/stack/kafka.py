"""Apache Kafka for the local stack: one KRaft node (broker and controller in one JVM) from Maven Central.

The project's own pom (``templates/kafka-pom.xml``) names the release; ``mvn dependency:copy-dependencies``
copies the broker's jars into ``<state_dir>/kafka/lib`` the first time (and again when the pom changes),
so nothing is downloaded by hand and no jar is committed. Maven's own cache (``~/.m2``) makes a later
resolution of the same pom cheap. The node keeps its log under ``<state_dir>/kafka/data``: messages and
committed offsets survive a restart, as on a production cluster.

Nothing outside ``highland.stack`` knows which broker runs: clients only see ``kafka_bootstrap``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from highland.settings import Settings
from highland.stack.processes import Service, port_open, process_exists

POM = Path(__file__).parent / "templates" / "kafka-pom.xml"
# The storage tool's main class in Kafka 4.x (kafka_2.13's jar); `format` writes meta.properties.
STORAGE_TOOL = "kafka.tools.StorageTool"
RESOLVED_MARK = ".resolved-from"  # in the lib folder: the hash of the pom it was resolved from


def service(settings: Settings) -> Service:
    return Service("kafka", settings.state_dir)


def home(settings: Settings) -> Path:
    return settings.state_dir / "kafka"


def version() -> str:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not found:
        raise RuntimeError(f"{POM} names no kafka.version")
    return found.group(1)


def client_port(settings: Settings) -> int:
    return int(settings.bootstrap_servers[0].rsplit(":", 1)[1])


def controller_port(settings: Settings) -> int:
    return settings.kafka_controller_port or client_port(settings) + 1


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def resolve(settings: Settings, timeout_s: float = 900.0) -> Path:
    """The lib folder with the pom's Kafka release in it, resolved by Maven unless already there."""
    lib = home(settings) / "lib"
    mark = lib / RESOLVED_MARK
    if mark.exists() and mark.read_text().strip() == _pom_hash():
        return lib
    mvn = _tool("mvn", "maven", settings.install_missing)
    # Maven runs on a copy in the state folder: it may write next to the pom, and the package is read-only.
    pom = home(settings) / "pom.xml"
    pom.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(POM, pom)
    shutil.rmtree(lib, ignore_errors=True)  # jars of another release must not share the class path
    try:
        done = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
            capture_output=True, text=True, timeout=timeout_s, cwd=pom.parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"Maven did not resolve Apache Kafka {version()} within {timeout_s:.0f} s") from exc
    if done.returncode != 0 or not any(lib.glob("kafka_2.13-*.jar")):
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"Maven could not resolve Apache Kafka {version()} (exit {done.returncode}):\n{tail}")
    mark.write_text(_pom_hash() + "\n")
    return lib


def _tool(name: str, package: str, install: bool) -> str:
    """``name`` on PATH, apt-get installing Debian's ``package`` first when missing (as ClickHouse is)."""
    found = shutil.which(name)
    if found is None and install and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
        if subprocess.run(cmd, env=env).returncode != 0:  # a fresh machine may have stale package lists
            subprocess.run(["apt-get", "update"], env=env)
            subprocess.run(cmd, env=env)
        found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"Apache Kafka needs `{name}` on PATH (Debian: apt-get install -y {package}); "
                           "it is resolved with Maven and runs on Java 17 or later")
    return found


def _write_config(settings: Settings) -> Path:
    """server.properties for one node that is both broker and controller, on 127.0.0.1 only."""
    port, controller = client_port(settings), controller_port(settings)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static one-voter quorum: formatting needs only a cluster id, no voter directory.
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(home(settings) / "data"),
        # Highland creates its topics itself (highland/topics.py, Faust for its changelogs); a typo'd
        # topic name must fail, not appear.
        "auto.create.topics.enable": "false",
        # One node: every internal topic with one replica, or the group and transaction coordinators
        # never become available.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "min.insync.replicas": "1",
        # Few partitions for the internal topics: created on the first group or transactional
        # producer, and each partition is a log to open on every start.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "4",
        # Tests start and stop consumer groups all the time: no waiting for more members to join.
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": str(settings.topic_partitions),
    }
    path = home(settings) / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def _write_logging(settings: Settings) -> Path:
    """log4j2 for the broker: warnings and the start/stop lines, so the log stays readable in CI."""
    path = home(settings) / "log4j2.properties"
    path.write_text(
        "rootLogger.level=WARN\n"
        "rootLogger.appenderRef.stdout.ref=STDOUT\n"
        "appender.stdout.type=Console\n"
        "appender.stdout.name=STDOUT\n"
        "appender.stdout.layout.type=PatternLayout\n"
        "appender.stdout.layout.pattern=[%d] %p %m (%c)%n\n"
        "logger.server.name=kafka.server.KafkaRaftServer\n"
        "logger.server.level=INFO\n"
    )
    return path


def _jvm(settings: Settings, logging: Path) -> list[str]:
    heap = f"{settings.kafka_heap_mb}m"
    java = _tool("java", "openjdk-17-jre-headless", settings.install_missing)
    return [java, f"-Xms{heap}", f"-Xmx{heap}", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={logging}", "-cp", str(home(settings) / "lib" / "*")]


def _format(settings: Settings, config: Path, logging: Path, svc: Service) -> None:
    """Format the log folder once (KRaft refuses to start on an unformatted one)."""
    if (home(settings) / "data" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    done = subprocess.run(
        [*_jvm(settings, logging), STORAGE_TOOL, "format", "--config", str(config), "--cluster-id", cluster_id],
        capture_output=True, text=True, timeout=120, cwd=home(settings),
    )
    svc.log_file.parent.mkdir(parents=True, exist_ok=True)
    with svc.log_file.open("a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"formatting Kafka's log folder failed (exit {done.returncode}); see {svc.log_file}")


def start(settings: Settings, timeout_s: float = 90.0) -> int | None:
    """Resolve, format and start the node; wait until it serves metadata. None if it already runs."""
    svc = service(settings)
    if svc.pid() is not None:
        return None
    port = client_port(settings)
    for taken in (port, controller_port(settings)):
        if port_open(taken):
            raise RuntimeError(f"port {taken} is taken by a process the stack did not start "
                               "(another broker? `highland stack down` stops the one it started)")
    resolve(settings)
    config, logging = _write_config(settings), _write_logging(settings)
    _format(settings, config, logging, svc)
    pid = svc.start([*_jvm(settings, logging), "kafka.Kafka", str(config)], cwd=home(settings))
    wait_ready(settings, pid, timeout_s, svc)
    return pid


def answers(settings: Settings) -> bool:
    """True when the broker answers a metadata request and is registered (not fenced)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    if not port_open(client_port(settings)):
        return False
    try:
        client = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="highland-stack",
                                  request_timeout_ms=3000)
    except KafkaError:
        return False
    try:
        brokers = client.describe_cluster()["brokers"]
        return bool(brokers) and not any(b.get("is_fenced") for b in brokers)
    except KafkaError:
        return False
    finally:
        client.close()


def wait_ready(settings: Settings, pid: int, timeout_s: float, svc: Service) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_exists(pid):
            raise RuntimeError(f"Apache Kafka exited while starting; last lines of {svc.log_file}:\n{svc.tail()}")
        if answers(settings):
            return
        time.sleep(0.2)
    # RuntimeError, not TimeoutError: the CLI reads a TimeoutError as an unreachable ClickHouse.
    raise RuntimeError(f"Apache Kafka did not answer on {settings.kafka_bootstrap} within {timeout_s:.0f} s; "
                       f"last lines of {svc.log_file}:\n{svc.tail()}")


def stop(settings: Settings, grace_s: float = 30.0) -> bool:
    """SIGTERM (a controlled shutdown: the node closes its logs cleanly), then SIGKILL after grace_s."""
    return service(settings).stop(grace_s=grace_s)
