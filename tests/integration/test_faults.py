"""Fault injection: workers killed at random, ClickHouse frozen and restarted, the broker restarted
(durable mode), duplicate storms. After each run the exact-totals check of test_worker passes and
the dead-letter topic holds nothing it should not. Short by default (CI); `pytest --long` runs
1,000,000 events with more faults. Each test prints a report line: faults, sent, lost, doubled."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from highland.sinks.client import connect
from highland.sinks.migrate import migrate

from highland.settings import Settings
from highland.stack import broker, clickhouse_server, kafka
from highland.topics import ensure_topics
from tests.integration.support import WorkerProcess, wait_for
from tests.integration.test_ingest import read_topic
from tests.integration.test_worker import assert_exact, known_feed, push

pytestmark = pytest.mark.integration
REPORT = Path(__file__).resolve().parents[2] / ".highland" / "fault-report.jsonl"


def report(name: str, faults: list[str], feed: list[dict], settings: Settings) -> dict:
    """Lost = observations pushed but not stored; doubled = revisions stored twice or counted twice
    by the live windows. Both must be 0 (asserted by assert_exact before this is called)."""
    client = connect(settings)
    keys = {(e["agency"], e["event_id"]) for e in feed}
    stored = client.execute("SELECT uniqExact(agency, event_id) FROM events")[0][0]
    rows, unique = client.execute("SELECT count(), uniqExact(agency, event_id, revision) FROM events")[0]
    windowed = client.execute("SELECT sum(events) FROM event_windows_1m")[0][0]
    line = {"test": name, "faults": faults, "events_sent": len(feed), "observations": len(keys),
            "lost": len(keys) - stored, "double_counted": (rows - unique) + (windowed - rows)}
    REPORT.parent.mkdir(exist_ok=True)
    with REPORT.open("a") as f:
        f.write(json.dumps(line) + "\n")
    print("\nFAULT REPORT", json.dumps(line))
    return line


def no_dead_letters(settings: Settings) -> None:
    assert read_topic(settings, settings.topic_dlq) == [], "valid events were dead-lettered"


@pytest.fixture
def fault_settings(isolated: Settings) -> Settings:
    return isolated.model_copy(update={"worker_batch_size": 1000})


def test_random_worker_kills_during_a_run(fault_settings: Settings, tmp_path, long_run: bool):
    """The feed arrives in chunks; while each chunk is being stored, at a random point of it, the
    worker is killed with SIGKILL: mid-batch, with some writes done and offsets not yet committed."""
    flows, kills = (600_000, 10) if long_run else (8000, 3)  # 600k flows: ~1.0 M events
    feed = known_feed(seed=101, flows=flows)
    rng = random.Random(101)
    client = connect(fault_settings)
    chunks = [feed[i::kills + 1] for i in range(kills + 1)]
    faults = []
    seen: set[tuple[str, str, int]] = set()
    worker = WorkerProcess(fault_settings, "w0", tmp_path)
    try:
        for k, chunk in enumerate(chunks[:-1]):
            before = client.execute("SELECT count() FROM events")[0][0]
            fresh = {(e["agency"], e["event_id"], e.get("revision", 0)) for e in chunk} - seen
            seen |= fresh
            # A point inside the chunk's storing (stale lower revisions are not stored: stay well below).
            target = before + max(1, int(len(fresh) * rng.uniform(0.05, 0.6)))
            pushing = threading.Thread(target=push, args=(fault_settings, chunk))  # the kill lands while it runs
            pushing.start()
            wait_for(lambda t=target: client.execute("SELECT count() FROM events")[0][0] >= t, 180,
                     "the chunk to be partly stored", worker.log)
            worker.kill(signal.SIGKILL)
            pushing.join()
            faults.append(f"SIGKILL worker at {client.execute('SELECT count() FROM events')[0][0]} rows")
            worker = WorkerProcess(fault_settings, f"w{k + 1}", tmp_path)
        push(fault_settings, chunks[-1])
        assert_exact(fault_settings, feed, timeout_s=900 if long_run else 240, workers=[worker])
    finally:
        worker.kill(signal.SIGTERM)
    no_dead_letters(fault_settings)
    line = report("random_worker_kills", faults, feed, fault_settings)
    assert line["lost"] == 0 and line["double_counted"] == 0


def test_clickhouse_frozen_then_thawed(fault_settings: Settings, tmp_path):
    """A network stall of ClickHouse, simulated by SIGSTOP/SIGCONT of the server."""
    feed = known_feed(seed=202, flows=6000)
    worker = WorkerProcess(fault_settings, "a", tmp_path)
    client = connect(fault_settings)
    pid = clickhouse_server.service(fault_settings).pid()
    try:
        push(fault_settings, feed)
        wait_for(lambda: client.execute("SELECT count() FROM events")[0][0] > 0, 90, "rows", worker.log)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(5)
        os.kill(pid, signal.SIGCONT)
        assert_exact(fault_settings, feed, timeout_s=180, workers=[worker])
        assert worker.proc.poll() is None
    finally:
        os.kill(pid, signal.SIGCONT)
        worker.kill(signal.SIGTERM)
    no_dead_letters(fault_settings)
    report("clickhouse_sigstop_5s", ["SIGSTOP ClickHouse 5 s"], feed, fault_settings)


def test_duplicate_storm(fault_settings: Settings, tmp_path):
    feed = known_feed(seed=303, flows=2000)
    worker = WorkerProcess(fault_settings, "a", tmp_path)
    try:
        for _ in range(5):  # the whole feed five times over, while the worker runs
            push(fault_settings, feed)
        assert_exact(fault_settings, feed * 5, timeout_s=180, workers=[worker])
    finally:
        worker.kill(signal.SIGTERM)
    no_dead_letters(fault_settings)
    report("duplicate_storm_x5", ["feed pushed 5 times"], feed * 5, fault_settings)


# --- the durable broker mode: a broker restart loses nothing ----------------------------------------

@pytest.fixture(scope="module")
def durable_stack(tmp_path_factory) -> Settings:
    """A second broker that keeps messages and committed offsets across a restart: Apache Kafka (its
    log on disk), or on Tansu its S3 mode (SeaweedFS), Tansu's only durable one. Own ports and state
    folder; ClickHouse is not needed twice, so this stack's ClickHouse settings point at the session
    stack's server."""
    base = Settings()
    state = tmp_path_factory.mktemp("durable")
    settings = base.model_copy(update={
        "state_dir": state, "broker_storage": "s3", "kafka_bootstrap": "127.0.0.1:31492",
        "kafka_controller_port": 31493,
        "s3_port": 31433, "s3_master_port": 31434, "s3_volume_port": 31480, "s3_filer_port": 31488,
    })
    if settings.broker == "kafka":
        kafka.start(settings)
        yield settings
        kafka.stop(settings)
        return
    broker.start_s3(settings)
    broker.start_broker(settings)
    yield settings
    broker.stop(settings)


def _restart_broker(settings: Settings) -> None:
    if settings.broker == "kafka":
        kafka.stop(settings)
        kafka.start(settings)
    else:
        broker.broker_service(settings).stop()
        broker.start_broker(settings)


def test_broker_restart_in_durable_mode_loses_nothing(stack: Settings, durable_stack: Settings, unique, tmp_path):
    settings = durable_stack.model_copy(update={
        "clickhouse_password": stack.clickhouse_password, "clickhouse_port": stack.clickhouse_port,
        "clickhouse_database": f"t_{unique}", "topic_events": f"d.{unique}.events",
        "topic_dlq": f"d.{unique}.dlq", "topic_alerts": f"d.{unique}.alerts", "consumer_group": f"d-{unique}",
        "worker_batch_size": 1000,
    })
    ensure_topics(settings)
    migrate(settings)
    feed = known_feed(seed=404, flows=4000)
    half = len(feed) // 2
    push(settings, feed[:half])
    worker = WorkerProcess(settings, "a", tmp_path)
    client = connect(settings)
    try:
        wait_for(lambda: client.execute("SELECT count() FROM events")[0][0] > 0, 120, "rows", worker.log)
        _restart_broker(settings)
        push(settings, feed[half:])
        assert_exact(settings, feed, timeout_s=240, workers=[worker])
        storage = "Apache Kafka" if settings.broker == "kafka" else "Tansu, s3 storage"
        report("broker_restart_durable", [f"broker stopped and restarted mid-run ({storage})"], feed, settings)
    finally:
        worker.kill(signal.SIGTERM)
        connect(settings, database="default").execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")

