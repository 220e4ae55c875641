"""Three Apache Kafka brokers (a KRaft quorum, as the cluster stack runs): one killed with SIGKILL in the
middle of a push, producers and a worker carry on through the other two and the stored numbers are
exact -- nothing lost, nothing doubled.

The quorum runs on ports of its own (the session's broker port + 300 and the five after it) and a state
folder of its own; ClickHouse is the session's. Its topics have three replicas and need two in sync
(``kafka.start_cluster``), so a producer with acks=all loses nothing when a leader dies. Times to
resume are printed (``-s``) for docs/benchmarks.md, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from highland.sinks.migrate import migrate
from kafka.admin import KafkaAdminClient

from highland.settings import Settings
from highland.stack import kafka
from highland.topics import ensure_topics
from tests.integration.support import WorkerProcess
from tests.integration.test_worker import assert_exact, known_feed, push
from tests.support.partition import stored_values

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(Settings().broker != "kafka", reason="a quorum of Apache Kafka brokers (HIGHLAND_BROKER=kafka)"),
]
# The quorum's first client port: the session broker's + OFFSET (tests: 31392-31397; tests/cluster's
# cluster stack has 31500-31697, the fault suite 314xx). Kept below 32768: a port in Linux's ephemeral
# range can be taken by a client's own connection to it before the node listens (TCP self-connect).
OFFSET = 300


@pytest.fixture(scope="module")
def quorum(stack: Settings, tmp_path_factory) -> Iterator[Settings]:
    base = stack.model_copy(update={
        "state_dir": tmp_path_factory.mktemp("quorum"), "kafka_controller_port": None,
        "kafka_bootstrap": f"127.0.0.1:{kafka.client_port(stack) + OFFSET}",
    })
    try:
        kafka.start_cluster(base)
        yield base.model_copy(update={"kafka_bootstrap": kafka.cluster_bootstrap(base), "topic_replication": 3})
    finally:
        kafka.stop_cluster(base)


@pytest.fixture
def on_quorum(quorum: Settings, unique: str) -> Settings:
    settings = quorum.model_copy(update={
        "clickhouse_database": f"t_{unique}", "topic_events": f"q.{unique}.events", "topic_dlq": f"q.{unique}.dlq",
        "topic_alerts": f"q.{unique}.alerts", "consumer_group": f"q-{unique}", "worker_batch_size": 500,
        "alert_check_seconds": 1.0,
    })
    ensure_topics(settings)
    migrate(settings)
    return settings


def _leaders(settings: Settings) -> dict[int, int]:
    """Partition -> the node id leading it, and checks every partition has three replicas."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        (topic,) = admin.describe_topics([settings.topic_events])
    finally:
        admin.close()
    assert all(len(p["replica_nodes"]) == 3 for p in topic["partitions"]), topic
    return {p["partition_index"]: p["leader_id"] for p in topic["partitions"]}


def test_a_broker_killed_mid_push_loses_and_doubles_nothing(on_quorum: Settings, tmp_path):
    settings = on_quorum
    feed = known_feed(seed=77, flows=3000)
    chunks = [feed[i::8] for i in range(8)]
    victim = next(n for n in kafka.cluster_nodes(settings) if n.node_id == _leaders(settings)[0])
    worker = WorkerProcess(settings, "a", tmp_path)
    pushed_after_kill: list[float] = []
    failed: list[BaseException] = []
    try:
        for chunk in chunks[:3]:
            push(settings, chunk)
        killed = threading.Event()

        def push_the_rest() -> None:  # a producer that is mid-push when the broker dies
            try:
                for i, chunk in enumerate(chunks[3:]):
                    if i == 1:
                        killed.wait(30)
                    push(settings, chunk)  # fails if any event is not acknowledged
                    if killed.is_set():
                        pushed_after_kill.append(time.monotonic())
            except BaseException as exc:
                failed.append(exc)

        producer = threading.Thread(target=push_the_rest)
        producer.start()
        time.sleep(0.3)
        pid = victim.service.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        killed.set()
        producer.join(180)
        assert not producer.is_alive() and not failed, f"the producers did not carry on: {failed}"
        assert_exact(settings, feed, timeout_s=180, workers=[worker])
        t_exact = time.monotonic()
        assert worker.proc.poll() is None, "the worker stopped instead of carrying on:\n" + worker.log()
        print(f"\nquorum, node {victim.node_id} killed: first chunk pushed after the kill "
              f"{pushed_after_kill[0] - t_kill:.1f} s later, all exact {t_exact - t_kill:.1f} s after the kill")
    finally:
        worker.kill(signal.SIGTERM)
        kafka.start_cluster(settings)  # the killed node again (its ports derive from node 1's, listed first)


async def _send_through_kills(settings: Settings, topic: str, count: int, kill: Callable[[], None],
                              idempotent: bool = True) -> None:
    """Send ``count`` numbered records with acks=all, SIGKILL-ing the partition's leader a third of
    the way in and restarting it at two thirds: the sends in flight then are retried on the new leader."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=idempotent, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for i in range(count):
            sent.append(await producer.send(topic, str(i).encode()))
            if i in (count // 3, 2 * count // 3):
                await asyncio.to_thread(kill)
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_an_idempotent_producer_stores_each_record_once_across_a_leader_killed_and_restarted(
        quorum: Settings, unique: str):
    topic = f"q.{unique}.idempotent"
    ensure_topics(quorum.model_copy(update={"topic_partitions": 1}), [topic])
    leader = _leaders(quorum.model_copy(update={"topic_events": topic}))[0]
    node = next(n for n in kafka.cluster_nodes(quorum) if n.node_id == leader)
    state = {"killed": False}

    def kill_then_restart() -> None:
        if not state["killed"]:
            pid = node.service.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            state["killed"] = True
        else:
            kafka.start_cluster(quorum)

    count = 30_000
    asyncio.run(_send_through_kills(quorum, topic, count, kill_then_restart))
    # Every record acknowledged is there once, in the order sent.
    assert [int(v) for v in asyncio.run(stored_values(quorum, topic, 60))] == list(range(count))
