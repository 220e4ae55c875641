"""The poison-record policy (sinks/poison.py) with fake writes: infrastructure failures are the
caller's to retry, content failures are pinned on the records that cause them and never retried,
and a failure no record can be blamed for is not blamed on any."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from clickhouse_driver.errors import NetworkError, ServerException, SocketTimeoutError, TypeMismatchError
from highland.sinks.poison import Failure, PoisonPolicy, Unisolated, classify, out_of_bounds
from highland.sinks.writer import BATCH_STRUCTURE, BatchColumns
from highland.sinks.writer_process import WriteFailed, write_isolated
from highland.streams.app import ClickHouseSink
from highland.streams.health import Health
from hypothesis import given, settings
from hypothesis import strategies as st

from highland.settings import Settings


def server_error(code: int, text: str = "refused") -> ServerException:
    return ServerException(f"DB::Exception: {text}.", code=code)


@pytest.mark.parametrize("exc", [
    server_error(242, "Table is in readonly mode"), server_error(999, "Session expired (ZooKeeper)"),
    server_error(225, "Cannot use ZooKeeper"), server_error(252, "Too many parts"),
    server_error(241, "Memory limit exceeded"), server_error(202, "Too many simultaneous queries"),
    server_error(159, "Timeout exceeded"), server_error(60, "Table doesn't exist"),
    NetworkError("Connection refused"), SocketTimeoutError("timed out"), ConnectionRefusedError(),
    ConnectionResetError(), BrokenPipeError(), TimeoutError(), EOFError(), WriteFailed("the writer process is gone"),
])
def test_the_infrastructure_failing_is_retried_never_blamed_on_a_record(exc: BaseException):
    assert classify(exc) is Failure.INFRASTRUCTURE


@pytest.mark.parametrize("exc", [
    TypeMismatchError("Type mismatch in VALUES section. Column observed_at: argument out of range"),
    server_error(321, "Value is out of range of data type"), server_error(6, "Cannot parse text"),
    server_error(41, "Cannot parse datetime"), server_error(70, "Cannot convert type"),
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
])
def test_what_a_record_holds_is_content(exc: BaseException):
    assert classify(exc) is Failure.CONTENT


@pytest.mark.parametrize("exc", [server_error(47, "Unknown identifier"), server_error(16, "No such column"),
                                 KeyError("no such day"), struct.error("bad"), AttributeError("x")])
def test_anything_else_is_unknown(exc: BaseException):
    assert classify(exc) is Failure.UNKNOWN


class FakeStore:
    """A write of a list of records: refuses a batch holding a record in ``refuse`` (with that
    record's error), keeps the records of every batch it accepts."""

    def __init__(self, refuse: dict[int, BaseException]) -> None:
        self.refuse = refuse
        self.stored: list[int] = []
        self.writes = 0

    def write(self, batch: list[int]) -> int:
        self.writes += 1
        for record in batch:
            if record in self.refuse:
                raise self.refuse[record]
        self.stored += batch
        return len(batch)


def cut(batch: list[int], start: int, stop: int) -> list[int]:
    return batch[start:stop]


def content() -> BaseException:
    return TypeMismatchError("Column observed_at: argument out of range")


def test_poison_records_are_found_and_handed_back_and_every_other_record_is_written_once():
    batch = list(range(100))
    store = FakeStore({3: content(), 57: content(), 58: content(), 99: content()})
    outcome = PoisonPolicy().write(store.write, batch, len(batch), cut)
    assert [p.record for p in outcome.poisoned] == [[3], [57], [58], [99]]  # in the batch's order
    assert all(p.failure is Failure.CONTENT and "TYPE_MISMATCH" in p.error for p in outcome.poisoned)
    assert sorted(store.stored) == [r for r in batch if r not in store.refuse]
    assert len(store.stored) == len(set(store.stored))


def test_one_poison_record_in_a_big_batch_costs_a_few_writes_not_one_per_record():
    batch = list(range(50_000))
    store = FakeStore({31_337: content()})
    PoisonPolicy().write(store.write, batch, len(batch), cut)
    assert store.writes <= 2 * 16 + 1  # two per halving, log2(50,000) < 16


def test_a_batch_without_poison_is_written_in_one_write():
    store = FakeStore({})
    outcome = PoisonPolicy().write(store.write, [1, 2, 3], 3, cut)
    assert outcome.results == [3] and outcome.poisoned == [] and store.writes == 1


def test_an_infrastructure_failure_is_not_bisected_but_raised_to_the_caller_to_retry():
    store = FakeStore({2: server_error(242, "Table is in readonly mode")})
    with pytest.raises(ServerException):
        PoisonPolicy().write(store.write, [1, 2, 3, 4], 4, cut)
    assert store.writes == 1


def test_an_unknown_failure_that_follows_a_record_is_blamed_on_it():
    store = FakeStore({5: KeyError("a record our code can't handle")})
    outcome = PoisonPolicy().write(store.write, list(range(8)), 8, cut)
    assert [p.record for p in outcome.poisoned] == [[5]] and outcome.poisoned[0].failure is Failure.UNKNOWN
    assert sorted(store.stored) == [0, 1, 2, 3, 4, 6, 7]


def test_an_unknown_failure_of_every_write_is_blamed_on_no_record():
    """A bug (or an outage we don't recognise) fails every record: dead-lettering them all would
    empty the feed into the dead-letter topic. Nothing is blamed; the caller crashes the worker."""
    batch = list(range(8))
    store = FakeStore(dict.fromkeys(batch, server_error(16, "No such column unit in table")))
    with pytest.raises(Unisolated, match="No such column"):
        PoisonPolicy().write(store.write, batch, len(batch), cut)
    assert store.stored == []


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_any_mix_of_poison_is_isolated_exactly(size: int, data: Any):
    poison = data.draw(st.sets(st.integers(0, size - 1), max_size=size))
    store = FakeStore({r: content() for r in poison})
    outcome = PoisonPolicy().write(store.write, list(range(size)), size, cut)
    assert [p.record[0] for p in outcome.poisoned] == sorted(poison)
    assert sorted(store.stored) == sorted(set(range(size)) - poison)


def test_numbers_a_column_type_cannot_hold_are_found_before_any_write():
    structure = [("observed_at", "DateTime"), ("kafka_partition", "UInt16"), ("value", "Float64")]
    columns = [[0, -1, 2**32 - 1, 2**32, 5], [1, 1, 1, 1, 2**16], [1e308, -1.0, 0.0, 1.0, 2.0]]
    bad = out_of_bounds(structure, columns)
    assert sorted(bad) == [1, 3, 4]
    assert "observed_at = -1" in bad[1] and "DateTime" in bad[1] and "kafka_partition" in bad[4]
    assert out_of_bounds(structure, [[1, "x"], [1, 1], [1.0, 1.0]]) == {}  # not ints: the write finds out


def columns(rows: list[tuple[str, int, int]]) -> BatchColumns:
    """A writer batch part of (event_id, observed_at epoch, offset) rows, in partition 0."""
    values = {"agency": "cq_commerce", "revision": 0, "indicator": "ecommerce_turnover", "region": "chongqing",
              "value": 1.0, "unit": "亿元", "raw_value": 1.0, "kafka_partition": 0}
    picked = {"event_id": 0, "observed_at": 1, "kafka_offset": 2}
    return BatchColumns([[row[picked[name]] if name in picked else values[name] for row in rows]
                         for name, _ in BATCH_STRUCTURE])


def test_the_events_write_sets_aside_rows_out_of_bounds_and_isolates_the_rest_by_content():
    written: list[str] = []

    def write(client: Any, db: str, part: BatchColumns, tag: str) -> int:
        ids = part.columns[1]
        if "\ud800" in "".join(ids):
            "".join(ids).encode()  # the driver's own encoding step: UnicodeEncodeError
        written.extend(ids)
        return len(ids)

    part = columns([("ok-1", 100, 10), ("before-1970", -86_400, 11), ("ok-2", 200, 12), ("lone-\ud800", 300, 13),
                    ("after-2106", 2**32 + 7, 14), ("ok-3", 400, 15)])
    result = write_isolated(write, None, "db", part, "tag")
    assert sorted(written) == ["ok-1", "ok-2", "ok-3"]
    assert [(p.offset, p.failure) for p in result.poisoned] == [(11, "content"), (14, "content"), (13, "content")]
    assert "observed_at = -86400" in result.poisoned[0].error and "UnicodeEncodeError" in result.poisoned[2].error
    assert all(p.agency == "cq_commerce" and p.partition == 0 for p in result.poisoned)
    assert sum(result.results) == 3


def test_the_sink_retries_the_infrastructure_and_counts_it_but_never_retries_content():
    health = Health(stuck_after_s=30)
    sink = ClickHouseSink(Settings(), health)
    calls: list[int] = []

    def flaky(client: Any, db: str) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise server_error(242, "Table is in readonly mode")
        return "written"

    def poisonous(client: Any, db: str) -> str:
        calls.append(1)
        raise content()

    assert asyncio.run(sink.call("insert", flaky)) == "written"
    assert health.counters.infrastructure_retries == 2
    calls.clear()
    with pytest.raises(TypeMismatchError):
        asyncio.run(sink.call("insert", poisonous))
    assert len(calls) == 1


def test_a_batch_in_progress_too_long_is_reported_stuck_once_and_shown(caplog: Any):
    health = Health(stuck_after_s=10)
    watch = health.watch("events")
    with watch.running():
        start = watch.started
        assert start is not None
        assert health.check_stuck(now=start + 5) == []
        assert health.check_stuck(now=start + 11) == [watch]
        assert health.check_stuck(now=start + 12) == [watch]  # still stuck: counted once
        assert health.counters.stuck_batches == 1
        assert "events batch stuck for 11 s" in caplog.text
    assert health.check_stuck() == [] and health.report()["status"] == "ok"
    report = health.report()
    assert set(report["counters"]) >= {"batches_written", "poison_dead_lettered", "infrastructure_retries",
                                       "stuck_batches", "dead_letters_sanitized", "dead_letters_skipped"}
    assert report["stuck_batch_age_s"] == 0.0 and report["batch_age_s"] == {"events": 0.0}
