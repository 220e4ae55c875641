"""Liveness (CONTRACT §1.1) through real `highland worker` processes, the real broker and ClickHouse:
no record, however malformed, out of range or hostile, stops the records behind it -- on the events
topic or on the dead-letter topic; what can't be stored for its content is dead-lettered with a
reason; the worker's /health shows what happened; a crashed worker exits non-zero."""

from __future__ import annotations

import json
import os
import random
import signal
import string
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.dead_letters import DLQ_SCHEMA_HEADER, DeadLetter
from highland.ingest.events import SCHEMA_HEADER, Accepted, Reason, validate
from highland.sinks.client import connect
from highland.sinks.topology import SINGLE_NODE
from highland.sinks.writer import BatchColumns, write_events
from highland.sinks.writer_process import WriterPool, write_isolated
from kafka import KafkaProducer

from highland.settings import Settings
from highland.stack import clickhouse_server
from tests.integration.support import WorkerProcess, dumps, event, wait_for
from tests.integration.test_ingest import read_topic
from tests.integration.test_worker import _assigned

pytestmark = pytest.mark.integration
CATALOG = default_catalog()
LANDS_WITHIN_S = 20  # "within seconds": a batch closes 0.5 s after its first record; plus the write


@pytest.fixture
def live(isolated: Settings) -> Settings:
    return isolated.model_copy(update={"worker_batch_size": 500, "worker_stuck_after_s": 3.0})


def good_events(tag: str, n: int, rng: random.Random) -> list[dict]:
    """Flows on one key (``ecommerce_turnover|chongqing``, so one partition): each is behind
    whatever was sent before it on that partition."""
    return [event(f"{tag}-{i}", "cq_commerce", "ecommerce_turnover", round(rng.uniform(1, 1000), 3), "亿元",
                  f"2019-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T08:00:00+08:00") for i in range(n)]


def send(settings: Settings, topic: str, values: list[bytes], key: bytes = b"ecommerce_turnover|chongqing",
         headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    for value in values:
        producer.send(topic, key=key, value=value, headers=headers if headers is not None else [SCHEMA_HEADER])
    producer.flush()
    producer.close()


def stored_values(settings: Settings, prefix: str) -> dict[str, float]:
    rows = connect(settings).execute("SELECT event_id, value FROM events WHERE startsWith(event_id, %(p)s)",
                                     {"p": prefix})
    return dict(rows)


def sent_values(feed: list[dict]) -> dict[str, float]:
    return {e["event_id"]: e["value"] for e in feed}


def ready_worker(settings: Settings, tmp_path: Any, name: str = "a") -> WorkerProcess:
    """A worker that owns the events and dead-letter partitions: what is sent from now on is timed
    from its sending, not from a group join."""
    worker = WorkerProcess(settings, name, tmp_path)
    wait_for(lambda: bool(_assigned(worker, settings.topic_events)) and bool(_assigned(worker, settings.topic_dlq)),
             90, "the worker to own its partitions", worker.log)
    return worker


def dead_letter_rows(settings: Settings) -> list[dict[str, Any]]:
    client = connect(settings)
    columns = ("reason", "detail", "origin", "received_at", "payload", "payload_encoding", "source")
    rows = client.execute(f"SELECT {', '.join(columns)} FROM dead_letters FINAL")
    return [dict(zip(columns, row, strict=True)) for row in rows]


# --- the events topic -----------------------------------------------------------------------------

POISON_DATES = {
    "before-1970": "1969-12-31T23:59:59Z",
    "local-midnight-1970": "1970-01-01T00:00:00+08:00",  # 1969-12-31T16:00Z
    "long-ago": "1900-06-01T00:00:00+08:00",
    "calendar-start": "0001-01-01T00:00:00+14:00",
    "calendar-end-west": "9999-12-31T23:59:59-14:00",
}


def test_events_the_store_cannot_hold_are_dead_lettered_and_the_good_ones_behind_them_land_within_seconds(
        live: Settings, tmp_path):
    rng = random.Random(1)
    worker = ready_worker(live, tmp_path)
    try:
        poison = [event(f"poison-{name}", "cq_commerce", "ecommerce_turnover", 5, "亿元", when)
                  for name, when in POISON_DATES.items()]
        good = good_events("behind", 50, rng)
        send(live, live.topic_events, [dumps(e) for e in poison] + [dumps(e) for e in good])
        sent_at = time.monotonic()
        wait_for(lambda: stored_values(live, "behind-") == sent_values(good), LANDS_WITHIN_S,
                 "the good events behind the poison", worker.log)
        took = time.monotonic() - sent_at
        print(f"\ngood events behind {len(poison)} poison records stored {took:.1f} s after sending")
        wait_for(lambda: len(dead_letter_rows(live)) == len(poison), 30, "the poison's dead letters", worker.log)
        letters = {json.loads(r["payload"])["event_id"]: r for r in dead_letter_rows(live)}
        assert set(letters) == {e["event_id"] for e in poison}
        assert {r["reason"] for r in letters.values()} == {Reason.OUT_OF_RANGE.value}
        assert stored_values(live, "poison-") == {}
        assert worker.proc.poll() is None, "the worker must keep running"
    finally:
        worker.kill(signal.SIGTERM)


def accepted(e: dict) -> Accepted:
    verdict = validate(dumps(e), CATALOG)
    assert isinstance(verdict, Accepted), verdict
    return verdict


def test_the_writer_itself_dead_letters_what_clickhouse_refuses_and_writes_the_rest(live: Settings):
    """Defence in depth: the writer does not rely on the validator. Events that passed it but that
    ClickHouse refuses (a date before 1970 its DateTime can't hold, text the driver can't encode)
    come back as poison rows, from a real writer process and a real server; the rest is stored."""
    rng = random.Random(2)
    good = [accepted(e) for e in good_events("w-good", 40, rng)]
    before_1970 = good[0]._replace(event_id="w-bad-date", observed_at=datetime(1969, 7, 20, 20, 17, tzinfo=UTC))
    lone_surrogate = good[0]._replace(event_id="w-bad-\ud800")
    events = [*good[:10], before_1970, *good[10:30], lone_surrogate, *good[30:]]
    part = BatchColumns.of_events(events, [0] * len(events), list(range(1000, 1000 + len(events))))
    pool = WriterPool(live, 1)
    try:
        [outcome] = pool.write(partial(write_isolated, write_events), [part], datetime.now(UTC),
                               CATALOG.plan.timezone, SINGLE_NODE)
    finally:
        for process in pool.processes:
            process.close()
    assert [(p.offset, p.failure) for p in outcome.poisoned] == [(1010, "content"), (1031, "content")]
    assert "observed_at" in outcome.poisoned[0].error and "UnicodeEncodeError" in outcome.poisoned[1].error
    assert stored_values(live, "w-") == {e.event_id: e.value for e in good}
    assert sum(r.inserted for r in outcome.results) == len(good)


# --- the dead-letter topic ------------------------------------------------------------------------

def forged_dead_letter(**fields: Any) -> bytes:
    base = {"reason": "unknown_indicator", "detail": "forged", "agency": "cq_commerce",
            "received_at": "2024-01-01T00:00:00Z", "source": "push", "origin": None, "payload": "{}"}
    return json.dumps({**base, **fields}).encode()


FORGED = [
    b"\x00\xff\xfe random bytes",
    b"",
    b"[1, 2, 3]",
    b'{"reason": 5, "received_at": []}',
    forged_dead_letter(received_at="1900-01-01T00:00:00Z", detail="forged-1900"),
    forged_dead_letter(received_at="2200-01-01T00:00:00Z", detail="forged-2200"),
    forged_dead_letter(received_at="0001-01-01T00:00:00+14:00", detail="forged-year-1"),
    forged_dead_letter(received_at="9999-12-31T23:59:59-14:00", detail="forged-year-9999"),
    forged_dead_letter(reason="not_a_reason"),
    b'{"reason": "unknown_indicator", "detail": "lone \\ud800", "agency": null, "received_at": '
    b'"2024-01-01T00:00:00Z", "source": "push", "payload": "x"}',
]


def good_dead_letter(detail: str) -> bytes:
    return DeadLetter(reason=Reason.UNKNOWN_REGION, detail=detail, agency="cq_commerce",
                      received_at=datetime.now(UTC), source="gateway", origin="127.0.0.1", payload="{}").to_bytes()


def test_forged_dead_letters_never_stop_dead_letter_storage(live: Settings, tmp_path):
    worker = ready_worker(live, tmp_path)
    try:
        send(live, live.topic_dlq, [*FORGED, good_dead_letter("the good one behind them")], key=b"x",
             headers=[DLQ_SCHEMA_HEADER])
        wait_for(lambda: any(r["detail"] == "the good one behind them" for r in dead_letter_rows(live)),
                 LANDS_WITHIN_S, "the good dead letter behind the forged ones", worker.log)
        wait_for(lambda: len(dead_letter_rows(live)) == len(FORGED) + 1, 30, "every record stored", worker.log)
        rows = dead_letter_rows(live)
        by_detail = {r["detail"].split(" [")[0]: r for r in rows}
        for year in ("1900", "2200", "year-1", "year-9999"):
            row = by_detail[f"forged-{year}"]
            assert "stored sanitized" in row["detail"] and row["reason"] == "unknown_indicator"
            assert abs((row["received_at"] - datetime.now()).total_seconds()) < 3600 * 24
        unreadable = [r for r in rows if r["detail"].startswith("unreadable dead letter")]
        assert len(unreadable) == 6  # bytes, empty, an array, wrong types, a bad reason, a lone surrogate
        assert {r["reason"] for r in unreadable} == {"malformed_json", "schema_violation"}
        assert any(r["payload_encoding"] == "base64" for r in unreadable)  # the bytes, kept
        assert worker.proc.poll() is None
    finally:
        worker.kill(signal.SIGTERM)


# --- fuzz: random records around good ones, both topics -------------------------------------------

def random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 2**31, 2**32, 2**63, 2**64 + 1, rng.randint(-10**20, 10**20)])
    if kind == "float":
        return rng.choice([1.7e308, -1.7e308, 5e-324, 0.0, -0.0, rng.uniform(-1e18, 1e18)])
    if kind == "str":
        alphabet = string.printable + "亿元\u0000\u202e\ud800\udfff😀"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_json(rng, 3) if rng.random() < 0.2 else rng.choice(["reason", "value", "observed_at", "x"]):
            random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


RANDOM_DATES = ["1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-14:00", "2105-12-31T23:59:59Z", "2106-02-07T06:28:16Z", "1e9", "2019-13-01",
                "2019-06-01T00:00:00", "2019-06-01T00:00:00+08:00"]


def random_event(rng: random.Random, i: int) -> dict:
    """An event-shaped record, some fields replaced by random ones (ids of its own: never a good one's)."""
    e: dict[str, Any] = event(f"fuzz-{i}", "cq_commerce", "ecommerce_turnover", 1.0, "亿元", "2019-06-01T00:00:00Z")
    for name in rng.sample(sorted(e), rng.randint(1, 3)):
        e[name] = rng.choice([random_json(rng), rng.choice(RANDOM_DATES), rng.uniform(-1e300, 1e300),
                              2**32 + rng.randint(0, 9)])
    e["event_id"] = f"fuzz-{i}"
    return e


def random_record(rng: random.Random, i: int, dead_letter: bool) -> bytes:
    choice = rng.random()
    if choice < 0.25:
        return rng.randbytes(rng.randint(0, 200))
    if choice < 0.5:
        return json.dumps(random_json(rng)).encode()
    if not dead_letter:
        return json.dumps(random_event(rng, i)).encode()
    fields = json.loads(forged_dead_letter(detail=f"fuzz-{i}"))
    for name in rng.sample(sorted(fields), rng.randint(1, 3)):
        fields[name] = rng.choice([random_json(rng), rng.choice(RANDOM_DATES)])
    return json.dumps(fields).encode()


def test_fuzz_random_records_on_both_topics_never_stop_or_change_the_good_ones(live: Settings, tmp_path):
    seed = int(os.environ.get("HIGHLAND_FUZZ_SEED", "20261130"))
    rng = random.Random(seed)
    worker = ready_worker(live, tmp_path)
    try:
        good = good_events("fuzz-good", 300, rng)
        good_letters = [f"fuzz-good-letter-{i}" for i in range(30)]
        events: list[bytes] = []
        letters: list[bytes] = []
        for i in range(600):  # random records with good ones among them
            events.append(random_record(rng, i, dead_letter=False))
            if i % 2 == 0:
                events.append(dumps(good[i // 2]))
            if i % 3 == 0:
                letters.append(random_record(rng, i, dead_letter=True))
            if i % 20 == 0:
                letters.append(good_dead_letter(good_letters[i // 20]))
        send(live, live.topic_events, events)
        send(live, live.topic_dlq, letters, key=b"x", headers=[DLQ_SCHEMA_HEADER])
        sent_at = time.monotonic()
        wait_for(lambda: stored_values(live, "fuzz-good-") == sent_values(good), LANDS_WITHIN_S + 10,
                 f"every good event stored exactly (seed {seed})", worker.log)
        client = connect(live)
        (dupes,) = client.execute("SELECT count() - uniqExact(agency, event_id, revision) FROM events")[0]
        assert dupes == 0
        wait_for(lambda: {r["detail"] for r in dead_letter_rows(live)} >= set(good_letters), LANDS_WITHIN_S,
                 f"every good dead letter stored (seed {seed})", worker.log)
        print(f"\nfuzz seed {seed}: good records stored {time.monotonic() - sent_at:.1f} s after sending")
        # Every record of the dead-letter topic -- the fuzz, and the rejects the worker sent there -- is
        # stored, by its position, as sent or sanitized.
        on_topic = len(read_topic(live, live.topic_dlq))
        wait_for(lambda: len(dead_letter_rows(live)) == on_topic, 30, "every dead letter stored", worker.log)
        assert worker.proc.poll() is None
    finally:
        worker.kill(signal.SIGTERM)


# --- health, stuck batches, crashes ---------------------------------------------------------------

def health(worker: WorkerProcess) -> dict[str, Any]:
    return json.loads(worker.get("/health"))  # type: ignore[no-any-return]


def test_the_workers_health_shows_its_counters_and_a_stuck_batch(live: Settings, tmp_path):
    live = live.model_copy(update={"worker_stuck_after_s": 2.0})
    worker = ready_worker(live, tmp_path)
    pid = clickhouse_server.service(live).pid()
    try:
        rng = random.Random(3)
        first = good_events("h-first", 20, rng)
        send(live, live.topic_events, [b"not json"] + [dumps(e) for e in first])
        send(live, live.topic_dlq, FORGED[:2], key=b"x", headers=[DLQ_SCHEMA_HEADER])
        wait_for(lambda: stored_values(live, "h-first-") == sent_values(first), LANDS_WITHIN_S, "first events",
                 worker.log)
        # The rows show in ClickHouse before the batch's write has returned (its later steps) and been
        # counted; on Apache Kafka the dead letters are stored within that gap: wait for both counts.
        wait_for(lambda: (c := health(worker)["counters"])["dead_letters_stored"] == 3
                 and c["events_stored"] == len(first), 30, "the forged ones, the reject and the batch counted",
                 worker.log)
        report = health(worker)
        assert report["status"] == "ok" and report["stuck_batch_age_s"] == 0.0
        counters = report["counters"]
        assert counters["batches_written"] >= 1 and counters["events_stored"] == len(first)
        assert counters["events_rejected"] == 1 and counters["poison_dead_lettered"] == 0
        assert counters["dead_letters_sanitized"] == 2 and counters["dead_letters_skipped"] == 0
        assert counters["stuck_batches"] == 0 and "infrastructure_retries" in counters

        os.kill(pid, signal.SIGSTOP)  # ClickHouse stalls: the next batch can't be written
        later = good_events("h-later", 5, rng)
        send(live, live.topic_events, [dumps(e) for e in later])
        def events_stuck() -> bool:  # logged and counted by a once-a-second check: up to 1 s after it shows
            report = health(worker)
            return ("events" in report["stuck"] and report["counters"]["stuck_batches"] == 1
                    and "events batch stuck for" in worker.log(tail=10**6))

        wait_for(events_stuck, 30, "the stuck batch in /health", worker.log)
        stuck = health(worker)
        assert stuck["status"] == "stuck" and stuck["stuck"] == ["events"] and stuck["stuck_batch_age_s"] > 2.0
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: stored_values(live, "h-later-") == sent_values(later), 60, "the stuck batch written",
                 worker.log)
        wait_for(lambda: health(worker)["status"] == "ok", 10, "health back to ok", worker.log)
    finally:
        os.kill(pid, signal.SIGCONT)
        worker.kill(signal.SIGTERM)


def test_a_crashed_worker_exits_with_a_non_zero_status(live: Settings, tmp_path):
    """A write that fails for every record for a reason no record explains (here: the schema lost a
    column the code writes) is no poison; the worker crashes -- and leaves, so a supervisor restarts it."""
    worker = ready_worker(live, tmp_path)
    try:
        connect(live).execute("ALTER TABLE events DROP COLUMN unit")
        send(live, live.topic_events, [dumps(e) for e in good_events("crash", 5, random.Random(4))])
        wait_for(lambda: worker.proc.poll() is not None, 60, "the worker to exit", worker.log)
        assert worker.proc.returncode != 0
        assert stored_values(live, "crash-") == {}
        assert len(dead_letter_rows(live)) == 0, "events were dead-lettered for a failure that is not theirs"
    finally:
        worker.kill(signal.SIGTERM)
