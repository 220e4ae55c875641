"""The Faust worker against the real broker and ClickHouse: exact numbers whatever happens.

Every test pushes a feed whose answer is computed independently (tests/integration/support.py),
runs real `highland worker` processes, and compares `progress` with that answer. Storage is also
checked for double writes: every (agency, event_id, revision) is stored once and the live windows
count each stored event once.
"""

from __future__ import annotations

import random
import re
import signal
import time
from datetime import date

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.events import SCHEMA_HEADER, Accepted, validate
from highland.ingest.producer import EventProducer
from highland.sinks.client import connect
from highland.sinks.progress import progress, query_actuals
from highland.sinks.progress import reference_actuals as reference_actuals_sql
from kafka import KafkaProducer

from highland.settings import Settings
from tests.integration.support import WorkerProcess, dumps, event, reference_actuals, wait_for

pytestmark = pytest.mark.integration
CATALOG = default_catalog()
AS_OF_DATES = [date(2016, 12, 31), date(2019, 6, 30), date(2019, 12, 31)]


def known_feed(seed: int = 7, flows: int = 400) -> list[dict]:
    """Flows, regional levels and an index, with duplicates (3x), revisions up and down, events
    out of order and years late, in several units. Deterministic."""
    rng = random.Random(seed)
    feed: list[dict] = []
    for i in range(flows):
        year = rng.choice([2016, 2019])
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        unit, scale = rng.choice([("亿元", 1.0), ("万元", 10_000.0)])
        e = event(f"turnover-{i}", "cq_commerce", "ecommerce_turnover", round(rng.uniform(1, 50), 3) * scale, unit,
                  f"{year}-{month:02d}-{day:02d}T{rng.randint(0, 23):02d}:00:00+08:00")
        feed.append(e)
        if i % 5 == 0:
            feed += [e, e]  # the same event sent three times
        if i % 7 == 0:  # a correction, then a stale lower revision arriving late
            feed.append({**e, "revision": 2, "value": e["value"] * 2})
            feed.append({**e, "revision": 1, "value": e["value"] * 100})
    # The year boundary in Chongqing time: 2019-12-31T20:00Z is 2020-01-01 local -> not in 2019.
    feed.append(event("turnover-boundary", "cq_commerce", "ecommerce_turnover", 999, "亿元",
                      "2019-12-31T20:00:00+00:00"))
    for district in ["yuzhong", "jiangbei", "wanzhou"]:
        for k, (when, ports) in enumerate([("2019-03-01", 1000), ("2019-09-01", 3000), ("2018-05-01", 500),
                                           ("2019-06-15", 2000)]):
            feed.append(event(f"ports-{district}-{k}", "cq_comms_admin", "fiber_broadband_ports", ports / 10_000,
                              "万个", f"{when}T00:00:00+08:00", region=district))
    # The latest index reading arrives first; an older one arrives after it.
    feed.append(event("ipi-2019", "cq_economy_it", "internet_plus_index", 4.6, "index", "2019-12-01T00:00:00+08:00"))
    feed.append(event("ipi-2018", "cq_economy_it", "internet_plus_index", 4.1, "index", "2018-12-01T00:00:00+08:00"))
    feed.append({**feed[-2], "revision": 1, "value": 4.4})
    return feed


def push(settings: Settings, feed: list[dict]) -> None:
    with EventProducer(settings, client_id="test") as producer:
        for e in feed:
            payload = dumps(e)
            verdict = validate(payload, CATALOG)
            assert isinstance(verdict, Accepted), verdict
            producer.send_event(verdict, payload)
        producer.flush()
        assert producer.events.failed == 0


def actuals_now(settings: Settings, as_of: date) -> dict[str, float]:
    rows = progress(connect(settings), settings.clickhouse_database, CATALOG, as_of)
    return {r.indicator: r.actual for r in rows if r.actual is not None}


def assert_exact(settings: Settings, feed: list[dict], timeout_s: float = 90, workers=()) -> None:
    """Wait until every as-of date matches the reference, then check storage for double writes."""
    expected = {d: reference_actuals(feed, CATALOG, d) for d in AS_OF_DATES}

    def matches() -> bool:
        return all(_close(actuals_now(settings, d), expected[d]) for d in AS_OF_DATES)

    wait_for(matches, timeout_s, "exact totals",
             lambda: f"got {actuals_now(settings, AS_OF_DATES[-1])}\nwant {expected[AS_OF_DATES[-1]]}\n"
                     + "\n".join(w.log() for w in workers))
    client = connect(settings)
    for day in AS_OF_DATES:  # the per-day series agree with every event deduplicated at query time
        series = query_actuals(client, settings.clickhouse_database, CATALOG, day)
        events = reference_actuals_sql(client, settings.clickhouse_database, CATALOG, day)
        assert _close({k: a.value for k, a in series.items()}, {k: a.value for k, a in events.items()}), day
    (dupes,) = client.execute("SELECT count() - uniqExact(agency, event_id, revision) FROM events")[0]
    assert dupes == 0, "an event revision was stored twice"
    (stored,) = client.execute("SELECT count() FROM events")[0]
    (windowed,) = client.execute("SELECT sum(events) FROM event_windows_1m")[0]
    assert windowed == stored, "the live windows counted an event twice (or missed one)"


def _close(got: dict[str, float], want: dict[str, float]) -> bool:
    return got.keys() == want.keys() and all(abs(got[k] - want[k]) <= 1e-9 * max(1.0, abs(want[k])) for k in want)


@pytest.fixture
def fast(isolated: Settings) -> Settings:
    return isolated.model_copy(update={"worker_batch_size": 500, "alert_check_seconds": 1.0})


def test_duplicates_revisions_and_late_events_give_the_exact_totals(fast: Settings, tmp_path):
    feed = known_feed()
    push(fast, feed)
    worker = WorkerProcess(fast, "a", tmp_path)
    try:
        assert_exact(fast, feed, workers=[worker])
        expected_2019 = reference_actuals(feed, CATALOG, date(2019, 12, 31))
        assert expected_2019["fiber_broadband_ports"] == pytest.approx(3 * 3000)  # latest per district, summed
        assert expected_2019["internet_plus_index"] == pytest.approx(4.4)  # the revised latest reading
    finally:
        worker.kill(signal.SIGTERM)


def test_a_worker_killed_mid_run_and_restarted_loses_and_doubles_nothing(fast: Settings, tmp_path):
    """With two writer processes, so a batch's parts are in flight at once when the worker dies."""
    fast = fast.model_copy(update={"worker_writers": 2})
    feed = known_feed(seed=11, flows=6000)
    push(fast, feed)
    first = WorkerProcess(fast, "first", tmp_path)
    client = connect(fast)
    wait_for(lambda: client.execute("SELECT count() FROM events")[0][0] > 0, 60, "the first rows", first.log)
    first.kill(signal.SIGKILL)  # mid-run: some batches written, some not, commits behind
    (partial,) = client.execute("SELECT count() FROM events")[0]
    second = WorkerProcess(fast, "second", tmp_path)
    try:
        assert_exact(fast, feed, timeout_s=150, workers=[second])
    finally:
        second.kill(signal.SIGTERM)
    assert partial < client.execute("SELECT count() FROM events")[0][0], "the kill did not interrupt the run"


def test_replaying_the_topic_from_offset_zero_changes_nothing(fast: Settings, tmp_path):
    feed = known_feed(seed=3)
    push(fast, feed)
    worker = WorkerProcess(fast, "a", tmp_path)
    try:
        assert_exact(fast, feed, workers=[worker])
    finally:
        worker.kill(signal.SIGTERM)
    client = connect(fast)
    before = client.execute("SELECT count(), round(sum(value), 6) FROM events")
    # A new consumer group starts at offset 0 and re-reads everything into the same database.
    replay = fast.model_copy(update={"consumer_group": fast.consumer_group + "-replay"})
    again = WorkerProcess(replay, "replay", tmp_path)
    try:
        wait_for(lambda: _group_done(replay), 90, "the replay to catch up", again.log)
        assert_exact(fast, feed, workers=[again])
    finally:
        again.kill(signal.SIGTERM)
    # Same rows (a float sum may differ in its last bit with the order of parts, hence the rounding).
    assert client.execute("SELECT count(), round(sum(value), 6) FROM events") == before


def _group_done(settings: Settings) -> bool:
    """True when the group has committed offsets covering every partition's messages."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        committed = admin.list_group_offsets(settings.consumer_group).get(settings.consumer_group, {})
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        parts = [TopicPartition(settings.topic_events, p) for p in range(settings.topic_partitions)]
        consumer.assign(parts)
        consumer.seek_to_end()
        # Read the true end by position (end_offsets() is unreliable on some brokers).
        ends = {tp: consumer.position(tp) for tp in parts}
    finally:
        consumer.close()
    return all(tp in committed and committed[tp].offset >= ends[tp] for tp in parts if ends[tp] > 0)


def test_poison_messages_go_to_the_dead_letter_topic_and_good_events_still_land(fast: Settings, tmp_path):
    good = known_feed(seed=5, flows=50)
    raw = KafkaProducer(bootstrap_servers=fast.bootstrap_servers, acks="all")
    poison = [b"not json at all", b'{"event_id": "x"}', b"\xff\xfe\x00", dumps({**good[0], "indicator": "nope"})]
    for p in poison:  # bad messages first: they must not stop what comes behind them
        raw.send(fast.topic_events, key=b"x", value=p, headers=[SCHEMA_HEADER])
    raw.flush()
    raw.close()
    push(fast, good)
    worker = WorkerProcess(fast, "a", tmp_path)
    try:
        assert_exact(fast, good, workers=[worker])
        client = connect(fast)
        wait_for(lambda: client.execute("SELECT count() FROM dead_letters")[0][0] == len(poison), 30,
                 "dead letters stored", worker.log)
        reasons = sorted(r for (r,) in client.execute("SELECT reason FROM dead_letters"))
        assert reasons == ["malformed_json", "malformed_json", "schema_violation", "unknown_indicator"]
        payloads = {p for (p,) in client.execute("SELECT payload FROM dead_letters WHERE source = 'worker'")}
        assert "not json at all" in payloads
        assert worker.proc.poll() is None, "the worker must keep running"
    finally:
        worker.kill(signal.SIGTERM)


def _assigned(worker: WorkerProcess, topic: str) -> set[int]:
    """The partitions of ``topic`` in the worker's latest assignment, as Faust logs it."""
    found = re.findall(rf"\|\s*{re.escape(topic)}\s*\|\s*\{{([^}}]*)\}}", worker.log_path.read_text())
    if not found:
        return set()
    parts: set[int] = set()
    for piece in found[-1].split(","):
        lo, _, hi = piece.strip().partition("-")
        parts.update(range(int(lo), int(hi or lo) + 1))
    return parts


def test_two_workers_share_partitions_and_one_killed_changes_nothing(fast: Settings, tmp_path):
    feed = known_feed(seed=21, flows=3000)
    first = WorkerProcess(fast, "one", tmp_path)
    second = WorkerProcess(fast, "two", tmp_path)
    try:
        def shared() -> bool:
            a, b = (_assigned(w, fast.topic_events) for w in (first, second))
            return bool(a) and bool(b) and a.isdisjoint(b) and a | b == set(range(fast.topic_partitions))

        wait_for(shared, 90, "both workers to own a share of the partitions", lambda: first.log() + second.log())
        push(fast, feed[: len(feed) // 2])
        client = connect(fast)
        wait_for(lambda: client.execute("SELECT count() FROM events")[0][0] > 0, 60, "first rows",
                 lambda: first.log() + second.log())
        first.kill(signal.SIGKILL)
        push(fast, feed[len(feed) // 2:])
        assert_exact(fast, feed, timeout_s=150, workers=[second])
    finally:
        first.kill(signal.SIGTERM)
        second.kill(signal.SIGTERM)


def test_a_clickhouse_restart_during_the_run_loses_and_doubles_nothing(fast: Settings, tmp_path):
    from highland.stack import clickhouse_server, local

    feed = known_feed(seed=13, flows=6000)
    worker = WorkerProcess(fast, "a", tmp_path)
    client = connect(fast)
    try:
        push(fast, feed)
        wait_for(lambda: client.execute("SELECT count() FROM events")[0][0] > 0, 60, "first rows", worker.log)
        clickhouse_server.service(fast).stop()
        time.sleep(2)  # the worker keeps consuming and must hold its batch, retrying
        admin = local.ensure_secrets(fast)["HIGHLAND_CLICKHOUSE_ADMIN_PASSWORD"]
        clickhouse_server.start(fast, admin)
        assert_exact(fast, feed, timeout_s=120, workers=[worker])
        assert "ClickHouse insert failed" in worker.log(tail=10**9), "the worker never saw the outage"
        assert worker.proc.poll() is None
    finally:
        worker.kill(signal.SIGTERM)
