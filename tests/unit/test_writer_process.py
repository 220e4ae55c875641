"""The writer process (sinks/writer_process.py): calls run in a child of their own, failures come
back as retryable or not, and the child never outlives the worker -- even one killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from clickhouse_driver.errors import ServerException

from highland.settings import Settings
from sinks.writer_process import WriteFailed, WriterCrashed, WriterProcess
from tests.conftest import ROOT


# Module-level: the child imports them by name, as it does sinks.writer.write_events.
def where_and_what(client: Any, db: str, x: int) -> tuple[int, str, int]:
    return os.getpid(), db, x * 2


def clickhouse_refuses(client: Any, db: str) -> None:
    raise ServerException("Table is read-only", code=242)


def buggy(client: Any, db: str) -> None:
    raise KeyError("no such day")


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


def test_a_clickhouse_failure_is_retryable_and_a_bug_is_not(writer: WriterProcess):
    with pytest.raises(WriteFailed, match="Table is read-only"):
        writer.call(clickhouse_refuses)
    with pytest.raises(WriterCrashed, match="KeyError: 'no such day'"):
        writer.call(buggy)
    assert writer.call(where_and_what, 2)[2] == 4  # and the child still serves


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
from sinks.writer_process import WriterProcess
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
