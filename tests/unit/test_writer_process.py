"""The writer processes (sinks/writer_process.py): calls run in a child of their own, failures come
back as raised (the worker's one rule, sinks.poison.retryable, decides what they mean), a child
never outlives the worker -- even one killed by SIGKILL -- and a pool writes the partition-disjoint
parts of one batch at the same time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from clickhouse_driver.errors import ServerException
from highland.catalog.loader import default_catalog
from highland.ingest.events import Accepted
from highland.sinks.poison import Unisolated, retryable
from highland.sinks.writer import BATCH_STRUCTURE, BatchShares
from highland.sinks.writer_process import WriteFailed, WriterCrashed, WriterPool, WriterProcess
from highland.streams.app import ProcessSink
from highland.streams.health import Health

from highland.settings import Settings
from tests.conftest import ROOT


# Module-level: the child imports them by name, as it does sinks.writer.write_events.
def where_and_what(client: Any, db: str, x: int) -> tuple[int, str, int]:
    return os.getpid(), db, x * 2


def clickhouse_refuses(client: Any, db: str) -> None:
    raise ServerException("Table is read-only", code=242)


def buggy(client: Any, db: str) -> None:
    raise KeyError("no such day")


def nothing_to_blame(client: Any, db: str) -> None:
    raise Unisolated("2 record(s) failed alone and nothing else was written")


class Unpicklable(Exception):
    def __init__(self, what: str, why: str) -> None:  # pickle calls cls(*args): args is one text
        super().__init__(f"{what}: {why}")


def raises_unpicklable(client: Any, db: str) -> None:
    raise Unpicklable("a day", "cannot cross")


def exit_abruptly(client: Any, db: str) -> None:
    os._exit(3)


def linger(client: Any, db: str) -> None:
    time.sleep(60)  # a long write


@pytest.fixture
def writer() -> Iterator[WriterProcess]:
    process = WriterProcess(Settings(clickhouse_database="somewhere"))
    yield process
    process.close()


def test_a_call_runs_in_another_process_with_the_settings_database(writer: WriterProcess):
    pid, db, doubled = writer.call(where_and_what, 21)
    assert pid != os.getpid() and db == "somewhere" and doubled == 42
    assert writer.call(where_and_what, 1)[0] == pid  # the same child, call after call


def test_a_failure_comes_back_as_raised_and_the_one_rule_decides_what_it_means(writer: WriterProcess):
    with pytest.raises(ServerException, match="Table is read-only") as refused:
        writer.call(clickhouse_refuses)
    assert refused.value.code == 242 and retryable(refused.value)
    with pytest.raises(KeyError, match="no such day") as bug:
        writer.call(buggy)
    assert not retryable(bug.value)
    assert "in the writer process" in bug.value.__notes__[0] and "in buggy" in bug.value.__notes__[0]
    with pytest.raises(Unisolated):  # the worker crashes on it
        writer.call(nothing_to_blame)
    assert writer.call(where_and_what, 2)[2] == 4  # and the child still serves


def test_a_failure_that_cannot_cross_the_pipe_as_itself_crosses_as_a_crash(writer: WriterProcess):
    with pytest.raises(WriterCrashed, match="Unpicklable: a day: cannot cross") as crash:
        writer.call(raises_unpicklable)
    assert not retryable(crash.value) and "in raises_unpicklable" in crash.value.__notes__[0]
    assert writer.call(where_and_what, 3)[2] == 6


def test_a_child_that_dies_is_replaced_by_the_next_call(writer: WriterProcess):
    first = writer.call(where_and_what, 0)[0]
    with pytest.raises(WriteFailed, match="gone"):  # retryable: the worker's retry loop calls again
        writer.call(exit_abruptly)
    assert writer.call(where_and_what, 0)[0] != first


def test_a_child_ignores_interrupt_and_stop_signals_and_leaves_when_closed(writer: WriterProcess):
    child = psutil.Process(writer.call(where_and_what, 0)[0])
    for sig in (signal.SIGINT, signal.SIGTERM):
        child.send_signal(sig)
    time.sleep(0.3)
    assert child.is_running() and writer.call(where_and_what, 1)[0] == child.pid
    writer.close()
    child.wait(timeout=10)


PARENT = """
from highland.settings import Settings
from highland.sinks.writer_process import WriterProcess
from tests.unit import test_writer_process as calls
writer = WriterProcess(Settings())
print(writer.call(calls.where_and_what, 0)[0], flush=True)
writer.call(calls.linger)
"""


def test_the_child_dies_with_a_worker_killed_by_sigkill_even_in_the_middle_of_a_write():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.ppid() == parent.pid
        time.sleep(0.5)  # the child is in the middle of linger()
        parent.kill()
        parent.wait(timeout=10)
        child.wait(timeout=5)  # psutil.TimeoutExpired if it outlived the worker
    finally:
        parent.kill()


# --- the pool: one batch's parts, written at the same time ------------------------------------------------

def meet(client: Any, db: str, part: list[str], folder: str) -> int:
    """Each part announces itself and waits for the other: only parts written at the same time meet."""
    mine, other = part
    (Path(folder) / mine).touch()
    deadline = time.monotonic() + 20
    while not (Path(folder) / other).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{mine} waited alone: the parts were not written at the same time")
        time.sleep(0.01)
    return os.getpid()


def fail_part(client: Any, db: str, part: list[str]) -> str:
    if part == ["bad"]:
        raise ServerException("Too many parts", code=252)
    return part[0]


@pytest.fixture
def pool() -> Iterator[WriterPool]:
    writers = WriterPool(Settings(), 2)
    yield writers
    for process in writers.processes:
        process.close()


def test_a_pool_writes_the_parts_of_a_batch_at_the_same_time_each_in_its_own_process(pool: WriterPool,
                                                                                         tmp_path: Path):
    pids = pool.write(meet, [["a", "b"], ["b", "a"]], str(tmp_path))
    assert len(set(pids)) == 2 and os.getpid() not in pids


def test_a_failed_part_fails_the_batch_once_every_part_answered_and_the_pool_still_serves(pool: WriterPool):
    with pytest.raises(ServerException, match="Too many parts"):
        pool.write(fail_part, [["bad"], ["good"]])
    assert pool.write(fail_part, [["one"], ["two"]]) == ["one", "two"]
    assert pool.write(fail_part, [[], ["only"]]) == ["only"]  # an empty part is not sent


def test_a_batch_splits_by_partition_so_that_no_two_parts_share_a_key():
    catalog = default_catalog()
    flow = catalog.indicator("ecommerce_turnover")
    event = Accepted(flow.agency, "e", 0, flow.code, "chongqing", 1.0, flow.unit, 1.0, flow.unit,
                     datetime(2020, 1, 1, tzinfo=UTC))
    partitions = [0, 1, 2, 3, 2, 5, 0]
    shares = BatchShares(2)
    for i, partition in enumerate(partitions):
        shares.add(event._replace(event_id=f"e{i}"), partition, i)
    parts = shares.columns()
    partition = [name for name, _ in BATCH_STRUCTURE].index("kafka_partition")
    assert [sorted(set(part.columns[partition])) for part in parts] == [[0, 2], [1, 3, 5]]
    assert sum(len(part) for part in parts) == len(partitions)


# --- the worker's side: its one retry loop decides ------------------------------------------------------

def read_only_twice(client: Any, db: str, part: list[str], folder: str) -> str:
    tries = Path(folder) / "tries"
    tries.write_text(str(int(tries.read_text() if tries.exists() else "0") + 1))
    if int(tries.read_text()) < 3:
        raise ServerException("Table is read-only", code=242)
    return part[0]


def buggy_part(client: Any, db: str, part: list[str], folder: str) -> None:
    with (Path(folder) / "bug").open("a") as tries:
        tries.write("x")
    raise KeyError("no such day")


def test_the_worker_retries_a_childs_failure_the_rule_calls_retryable_and_raises_a_bug_at_once(tmp_path: Path):
    health = Health(stuck_after_s=30)
    sink = ProcessSink(Settings(worker_writers=1), health)
    try:
        assert asyncio.run(sink.call("insert", read_only_twice, [["written"]], str(tmp_path))) == ["written"]
        assert health.counters.infrastructure_retries == 2
        with pytest.raises(KeyError, match="no such day"):
            asyncio.run(sink.call("insert", buggy_part, [["x"]], str(tmp_path)))
        assert (tmp_path / "bug").read_text() == "x"  # tried once
    finally:
        for process in sink.pool.processes:
            process.close()
