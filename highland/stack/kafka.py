"""Apache Kafka for the local stack from Maven Central: one KRaft node (broker and controller in one
JVM) for the ordinary stack and the tests, or a quorum of N such nodes for the cluster stack
(``start_cluster``).

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from highland.settings import Settings
from highland.stack.processes import Service, port_open, process_exists

POM = Path(__file__).parent / "templates" / "kafka-pom.xml"
# The storage tool's main class in Kafka 4.x (kafka_2.13's jar); `format` writes meta.properties.
STORAGE_TOOL = "kafka.tools.StorageTool"
RESOLVED_MARK = ".resolved-from"  # in the lib folder: the hash of the pom it was resolved from
CLUSTER_NODES = 3


@dataclass(frozen=True)
class Sasl:
    """A node that authenticates every client and authorizes it with ACLs (docs/security.md,
    "Direct Kafka"): SCRAM on the client listener, Kafka's StandardAuthorizer, no ACL meaning no
    access, and ``admin`` -- the broker itself, the worker and whoever grants ACLs -- a super user.
    The controller listener takes SASL/PLAIN with a password of its own (KRaft controllers can't
    read SCRAM credentials: those live in the metadata they serve)."""

    admin: str
    admin_password: str
    controller_password: str
    mechanism: str = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Node:
    """One KRaft node of the local stack: broker and controller in one JVM."""

    node_id: int
    client_port: int
    controller_port: int
    home: Path  # its server.properties and data/ (the log)
    service: Service

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"


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


def single_node(settings: Settings) -> Node:
    """The ordinary stack's node: the configured client port, its data under ``<state_dir>/kafka``."""
    return Node(1, client_port(settings), controller_port(settings), home(settings), service(settings))


def cluster_nodes(settings: Settings, count: int = CLUSTER_NODES) -> list[Node]:
    """The cluster stack's nodes: node i (1..count) listens on the configured client port + 2(i-1) and
    its controller on the port after it, so node 1 takes the ordinary node's ports and one port block
    serves either stack. State under ``<state_dir>/kafka-cluster/node-<i>``; pids and logs as
    ``kafka-<i>``."""
    base = client_port(settings)
    return [Node(i, base + 2 * (i - 1), base + 2 * (i - 1) + 1,
                 settings.state_dir / "kafka-cluster" / f"node-{i}", Service(f"kafka-{i}", settings.state_dir))
            for i in range(1, count + 1)]


def cluster_bootstrap(settings: Settings, count: int = CLUSTER_NODES) -> str:
    """``HIGHLAND_KAFKA_BOOTSTRAP`` for clients of the cluster: every node, so a client started while
    one is down still finds the others."""
    return ",".join(node.address for node in cluster_nodes(settings, count))


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


def _sasl_config(node: Node, sasl: Sasl) -> dict[str, str]:
    """The listeners and authorizer of a node with ``sasl``: nothing on it answers without a password."""
    scram = sasl.mechanism.lower()
    plain = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" '
             f'password="{sasl.controller_password}" user_controller="{sasl.controller_password}";')
    return {
        "listeners": f"CLIENT://127.0.0.1:{node.client_port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"CLIENT://127.0.0.1:{node.client_port}",
        "inter.broker.listener.name": "CLIENT",
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": sasl.mechanism,
        "sasl.mechanism.inter.broker.protocol": sasl.mechanism,
        f"listener.name.client.{scram}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{sasl.admin}" password="{sasl.admin_password}";',
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{sasl.admin};User:controller",
    }


def _write_config(settings: Settings, node: Node, quorum: list[Node], sasl: Sasl | None = None) -> Path:
    """server.properties for one node that is both broker and controller, on 127.0.0.1 only."""
    replicas = min(3, len(quorum))  # what a production cluster keeps, as far as the quorum allows
    in_sync = min(2, len(quorum))   # acks=all then survives one node down
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        # A static quorum: formatting needs only a cluster id, no voter directory.
        "controller.quorum.voters": ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in quorum),
        "listeners": f"PLAINTEXT://127.0.0.1:{node.client_port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.client_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.home / "data"),
        # Highland creates its topics itself (highland/topics.py, Faust for its changelogs); a typo'd
        # topic name must fail, not appear.
        "auto.create.topics.enable": "false",
        # Internal topics and topics created without a replication factor: as many replicas as the
        # quorum allows (one node: one, or the group and transaction coordinators never become
        # available); writes with acks=all need two of them in sync once there are two.
        "default.replication.factor": str(replicas),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(in_sync),
        "min.insync.replicas": str(in_sync),
        # Few partitions for the internal topics: created on the first group or transactional
        # producer, and each partition is a log to open on every start.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "4",
        # Retention is checked every second, not every 5 minutes: a topic whose records a broker
        # would delete by their timestamps (docs/local-stack.md, "The replay hang") loses them at
        # once in every test, not in one run out of a few.
        "log.retention.check.interval.ms": "1000",
        "log.initial.task.delay.ms": "1000",  # the first check too (30 s after the start by default)
        # Tests start and stop consumer groups all the time: no waiting for more members to join.
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": str(settings.topic_partitions),
    }
    if sasl is not None:
        props.update(_sasl_config(node, sasl))
    path = node.home / "server.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)  # it may hold passwords (sasl)
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
        # Every request an authorizer refuses, with its principal, operation and resource (at INFO;
        # only a node with SASL has an authorizer): what a principal's ACLs lack shows here.
        "logger.authorizer.name=kafka.authorizer.logger\n"
        "logger.authorizer.level=INFO\n"
    )
    return path


def _jvm(settings: Settings, logging: Path) -> list[str]:
    heap = f"{settings.kafka_heap_mb}m"
    java = _tool("java", "openjdk-17-jre-headless", settings.install_missing)
    return [java, f"-Xms{heap}", f"-Xmx{heap}", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={logging}", "-cp", str(home(settings) / "lib" / "*")]


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _format(settings: Settings, node: Node, config: Path, logging: Path, cluster_id: str,
            sasl: Sasl | None = None) -> None:
    """Format the node's log folder once (KRaft refuses to start on an unformatted one). With ``sasl``,
    the admin's SCRAM credential goes into the first metadata: the broker needs it to start. (It is on
    this one short command line: a local, generated password; deploy/ creates users through the
    admin API instead, docs/security.md.)"""
    if (node.home / "data" / "meta.properties").exists():
        return
    scram = ["--add-scram", f"{sasl.mechanism}=[name={sasl.admin},password={sasl.admin_password}]"] if sasl else []
    done = subprocess.run(
        [*_jvm(settings, logging), STORAGE_TOOL, "format", "--config", str(config), f"--cluster-id={cluster_id}",
         *scram],
        capture_output=True, text=True, timeout=120, cwd=node.home,
    )
    node.service.log_file.parent.mkdir(parents=True, exist_ok=True)
    with node.service.log_file.open("a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"formatting Kafka's log folder failed (exit {done.returncode}); "
                           f"see {node.service.log_file}")


def start(settings: Settings, timeout_s: float = 90.0, sasl: Sasl | None = None) -> int | None:
    """Resolve, format and start the node; wait until it serves metadata. None if it already runs.
    ``sasl``: authenticate and authorize every client (``settings`` then name its admin's credential)."""
    node = single_node(settings)
    if node.service.pid() is not None:
        return None
    _check_ports_free([node])
    resolve(settings)
    logging = _write_logging(settings)
    pid = _launch(settings, node, [node], logging, _new_cluster_id(), sasl)
    wait_ready(settings, pid, timeout_s, node.service)
    return pid


def start_cluster(settings: Settings, count: int = CLUSTER_NODES, timeout_s: float = 120.0) -> dict[str, int]:
    """Start a KRaft quorum of ``count`` nodes, each broker and controller (ports and state: see
    ``cluster_nodes``), and wait until every node is registered and unfenced.

    Topics created without a replication factor get min(3, count) replicas, and ``min.insync.replicas``
    is min(2, count): with 3 nodes, producers with acks=all carry on with one node down. Highland's own
    topics take ``HIGHLAND_TOPIC_REPLICATION`` (set it to 3; ``cluster_bootstrap`` gives the client
    bootstrap list). Nodes already running are left alone. Returns the pid of each node it started, by
    service name (``kafka-1`` ...)."""
    nodes = cluster_nodes(settings, count)
    down = [n for n in nodes if n.service.pid() is None]
    if not down:
        return {}
    _check_ports_free(down)
    resolve(settings)
    logging = _write_logging(settings)
    cluster_id = _cluster_id_of(nodes) or _new_cluster_id()
    started: dict[str, int] = {}
    try:
        for node in down:
            started[node.service.name] = _launch(settings, node, nodes, logging, cluster_id)
        # Any node answers for the cluster; every node must be registered.
        every = settings.model_copy(update={"kafka_bootstrap": cluster_bootstrap(settings, count)})
        deadline = time.monotonic() + timeout_s
        for node in down:
            wait_ready(every, started[node.service.name], max(1.0, deadline - time.monotonic()), node.service,
                       nodes=count)
    except BaseException:
        for node in down:  # what this call started goes again: a half quorum must not linger
            if node.service.name in started:
                node.service.stop(grace_s=5.0)
        raise
    return started


def stop_cluster(settings: Settings, count: int = CLUSTER_NODES, grace_s: float = 30.0) -> list[str]:
    """Stop every node of the quorum (controlled shutdown, SIGKILL after grace_s); the names stopped.

    All at once: stopped one after the other, the last node has lost its quorum and waits out the
    grace period before it gives up."""
    nodes = cluster_nodes(settings, count)
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        stopped = list(pool.map(lambda n: n.service.stop(grace_s=grace_s), nodes))
    return [n.service.name for n, done in zip(nodes, stopped, strict=True) if done]


def _check_ports_free(nodes: list[Node]) -> None:
    for taken in (p for n in nodes for p in (n.client_port, n.controller_port)):
        if port_open(taken):
            raise RuntimeError(f"port {taken} is taken by a process the stack did not start "
                               "(another broker? `highland stack down` stops the one it started)")


def _cluster_id_of(nodes: list[Node]) -> str | None:
    """The id a formatted node already carries: a node formatted again must join the same cluster."""
    for node in nodes:
        meta = node.home / "data" / "meta.properties"
        if meta.exists():
            found = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.M)
            if found:
                return found.group(1)
    return None


def _launch(settings: Settings, node: Node, quorum: list[Node], logging: Path, cluster_id: str,
            sasl: Sasl | None = None) -> int:
    config = _write_config(settings, node, quorum, sasl)
    _format(settings, node, config, logging, cluster_id, sasl)
    return node.service.start([*_jvm(settings, logging), "kafka.Kafka", str(config)], cwd=node.home)


def answers(settings: Settings, nodes: int = 1) -> bool:
    """True when the broker answers a metadata request and ``nodes`` brokers are registered, none fenced."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    if not any(port_open(int(s.rsplit(":", 1)[1])) for s in settings.bootstrap_servers):
        return False
    try:
        client = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="highland-stack",
                                  request_timeout_ms=3000, **settings.kafka_security())
    except KafkaError:
        return False
    try:
        brokers = client.describe_cluster()["brokers"]
        return len(brokers) >= nodes and not any(b.get("is_fenced") for b in brokers)
    except KafkaError:
        return False
    finally:
        client.close()


def wait_ready(settings: Settings, pid: int, timeout_s: float, svc: Service, nodes: int = 1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_exists(pid):
            raise RuntimeError(f"Apache Kafka exited while starting; last lines of {svc.log_file}:\n{svc.tail()}")
        if answers(settings, nodes):
            return
        time.sleep(0.2)
    # RuntimeError, not TimeoutError: the CLI reads a TimeoutError as an unreachable ClickHouse.
    raise RuntimeError(f"Apache Kafka did not answer on {settings.kafka_bootstrap} within {timeout_s:.0f} s; "
                       f"last lines of {svc.log_file}:\n{svc.tail()}")


def stop(settings: Settings, grace_s: float = 30.0) -> bool:
    """SIGTERM (a controlled shutdown: the node closes its logs cleanly), then SIGKILL after grace_s."""
    return service(settings).stop(grace_s=grace_s)
