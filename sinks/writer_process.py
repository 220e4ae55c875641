"""The events writer in a process of its own, so that its Python never waits for the worker's GIL.

The writer's own Python -- the driver encoding ``_batch``, reading the answers of its ~18
statements, the per-day bookkeeping -- ran much slower while the worker's event loop validated the
next batch in the same interpreter: every step waited for the GIL (docs/benchmarks.md, session 4).
Here it has an interpreter of its own. A batch crosses as its columns (``BatchColumns``, pickled
lists, cheap to send), the answer as a ``WriteResult``.

The child owns one ClickHouse connection (the writer's session tables need one: docs/production.md)
and runs one call at a time, in the order they come. It must never outlive the worker, or a
restarted worker could write a batch while the orphan still writes the same one: on Linux the kernel
kills it with its parent (even one killed by SIGKILL), elsewhere it sees the parent gone within
``PARENT_CHECK_S``. It ignores SIGINT and SIGTERM, so a Ctrl-C or a stop signal sent to the whole
process group can't cut a write in half: the worker's shutdown decides when it ends.

A write runs under the poison-record policy (sinks/poison.py) in the child itself, over its own
connection: ``write_isolated`` sets aside the rows a column can't hold, bisects the rest on any
failure that is not the infrastructure's, and answers with what was written and the rows that
could not be (the worker dead-letters them). The child decides nothing about a failure: whatever
escapes is raised again in the parent as itself (the child's traceback added as a note), and the
worker's one retry loop asks the one rule, ``sinks.poison.retryable``, as for any ClickHouse call.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, TypeVar

from highland.sinks.client import connect
from highland.sinks.poison import Failure, PoisonPolicy, out_of_bounds
from highland.sinks.writer import BATCH_STRUCTURE, BatchColumns

from highland.settings import Settings

log = logging.getLogger("highland.worker")
T = TypeVar("T")
PARENT_CHECK_S = 0.05
_PR_SET_PDEATHSIG = 1  # prctl(2)


class WriteFailed(OSError):
    """The writer process itself failed (it died, or its pipe broke): an ``OSError``, so the one
    rule retries it, and the next call starts another process."""


class WriterCrashed(RuntimeError):
    """The call raised an exception that can't cross a pipe as itself (it doesn't survive pickling):
    it crosses as this, named in its text, the child's traceback in its note."""


class PoisonRow(NamedTuple):
    """A row of a batch part that could not be written because of its content."""

    partition: int
    offset: int
    agency: str
    failure: str  # sinks.poison.Failure
    error: str


class IsolatedPart(NamedTuple):
    results: list[Any]  # what each successful write returned
    poisoned: list[PoisonRow]


_COLUMN = {name: i for i, (name, _) in enumerate(BATCH_STRUCTURE)}
POLICY = PoisonPolicy()


def _cut(batch: BatchColumns, start: int, stop: int) -> BatchColumns:
    return BatchColumns([column[start:stop] for column in batch.columns])


def _without(batch: BatchColumns, rows: set[int]) -> BatchColumns:
    return BatchColumns([[v for i, v in enumerate(column) if i not in rows] for column in batch.columns])


def _poison_row(batch: BatchColumns, row: int, failure: Failure, error: str) -> PoisonRow:
    columns = batch.columns
    return PoisonRow(columns[_COLUMN["kafka_partition"]][row], columns[_COLUMN["kafka_offset"]][row],
                     columns[_COLUMN["agency"]][row], failure.value, error)


def write_isolated(write: Callable[..., T], client: Any, db: str, part: BatchColumns, *args: Any) -> IsolatedPart:
    """``write(client, db, part, *args)`` under the poison-record policy: rows holding a number
    their column can't hold are set aside unwritten, the rest is bisected on a content failure."""
    bounds = out_of_bounds(BATCH_STRUCTURE, part.columns)
    poisoned = [_poison_row(part, row, Failure.CONTENT, why) for row, why in sorted(bounds.items())]
    rest = _without(part, set(bounds)) if bounds else part
    if not len(rest):
        return IsolatedPart([], poisoned)
    outcome = POLICY.write(lambda batch: write(client, db, batch, *args), rest, len(rest), _cut)
    poisoned += [_poison_row(p.record, 0, p.failure, p.error) for p in outcome.poisoned]
    return IsolatedPart(outcome.results, poisoned)


class WriterProcess:
    """The parent's handle: ``call(fn, *args)`` runs ``fn(client, db, *args)`` in the child and
    returns its result. Thread-safe (one call at a time); a child that died is replaced by the next
    call, and its connection's session tables with it (each write starts from ``_batch``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        # Before multiprocessing's own exit handler, which would wait for a child that ignores
        # SIGTERM and only leaves when its pipe closes.
        atexit.register(self.close)

    def start(self) -> None:
        """Start the child now (from the main thread: Linux ties the kill-with-parent signal to
        the thread that started the child). ``call`` starts one itself if needed."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            self._discard()
            ours, theirs = multiprocessing.Pipe()
            # spawn: a fresh interpreter, nothing inherited from the event loop or Faust's threads.
            process = multiprocessing.get_context("spawn").Process(
                target=serve, args=(theirs, self._settings, os.getpid()), name="highland-writer")
            process.start()
            theirs.close()
            self._process, self._conn = process, ours
        return self._conn

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._process = self._conn = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(client, db, *args)`` in the child; ``fn`` is a module-level function. What it raises
        is raised here (``WriteFailed`` if the child itself is gone)."""
        with self._lock:
            conn = self._ensure()
            try:
                conn.send((fn, args))
                ok, value = conn.recv()
            except (EOFError, OSError) as exc:
                self._discard()
                raise WriteFailed(f"the writer process is gone ({type(exc).__name__}); starting another") from exc
        if ok:
            return value  # type: ignore[no-any-return]
        error, where = value
        error.add_note(where)
        raise error

    def close(self) -> None:
        """Let the child finish its call and leave (killed after 5 s)."""
        acquired = self._lock.acquire(timeout=5)
        if not acquired:
            log.warning("the writer process is still busy; stopping it")
        try:
            if self._conn is not None:
                self._conn.close()  # the child sees EOF and exits
                self._conn = None
            if self._process is not None:
                self._process.join(5)
            self._discard()
        finally:
            if acquired:
                self._lock.release()


class WriterPool:
    """``writers`` writer processes that write the parts of one batch at the same time.

    ``write`` is one call for the lease that guards the batch (streams/batches.py): it returns once
    every part is written, or raises -- after every part has answered, so no process is left
    mid-call -- and the whole batch is tried again (the write is idempotent: parts already written
    are found stored). Parts must not share a key: the worker splits by partition."""

    def __init__(self, settings: Settings, writers: int) -> None:
        self.processes = [WriterProcess(settings) for _ in range(writers)]
        self._threads = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="writer-call")

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def write(self, fn: Callable[..., T], parts: Sequence[Any], *args: Any) -> list[T]:
        """``fn(client, db, part, *args)`` for each non-empty part, each in its own process."""
        calls = [self._threads.submit(process.call, fn, part, *args)
                 for process, part in zip(self.processes, parts, strict=True) if len(part)]
        wait(calls)
        for call in calls:
            if call.exception() is not None:
                raise call.exception()  # type: ignore[misc]
        return [call.result() for call in calls]


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(conn: Connection, settings: Settings, parent: int) -> None:
    """The child's loop: one call at a time until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(parent)
    client: Any = None
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if client is None:
                client = connect(settings)
            reply: tuple[bool, Any] = (True, fn(client, settings.clickhouse_database, *args))
        except Exception as exc:
            if client is not None:
                client.disconnect()
            client = None  # reconnect next time: the server may have restarted
            reply = (False, _crossing(exc))
        conn.send(reply)


def _crossing(exc: Exception) -> tuple[Exception, str]:
    """What the child raised, as the parent will raise it, and where it was raised. An exception
    that doesn't come back from pickling as itself (one whose constructor wants other arguments
    than it keeps) would break the pipe, so it crosses as a ``WriterCrashed`` carrying its
    traceback."""
    where = f"raised in the writer process:\n{traceback.format_exc()}"
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WriterCrashed(f"{type(exc).__name__}: {exc}"), where
    return exc, where
