"""The events writer in a process of its own, so that its Python never waits for the worker's GIL.

The writer's own Python -- the driver encoding ``_batch``, reading the answers of its ~18
statements, the per-day bookkeeping -- ran 40 % slower while the worker's event loop validated the
next batch in the same interpreter: every step waited for the GIL (docs/streams.md, Throughput).
Here it has an interpreter of its own. A batch crosses as its columns (``BatchColumns``, pickled
lists: ~0.3 us an event in all), the answer as a ``WriteResult``.

The child owns one ClickHouse connection (the writer's session tables need one: docs/production.md)
and runs one call at a time, in the order they come. It must never outlive the worker, or a
restarted worker could write a batch while the orphan still writes the same one: on Linux the kernel
kills it with its parent (even one killed by SIGKILL), elsewhere it sees the parent gone within
``PARENT_CHECK_S``. It ignores SIGINT and SIGTERM, so a Ctrl-C or a stop signal sent to the whole
process group can't cut a write in half: the worker's shutdown decides when it ends.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from clickhouse_driver.errors import Error as ClickHouseError

from highland.settings import Settings
from sinks.client import connect

log = logging.getLogger("highland.worker")
T = TypeVar("T")
PARENT_CHECK_S = 0.05
_PR_SET_PDEATHSIG = 1  # prctl(2)


class WriteFailed(OSError):
    """ClickHouse (or the connection to it) failed in the writer process: worth a retry."""


class WriterCrashed(RuntimeError):
    """The call raised something else in the writer process (a bug): not worth a retry."""


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
        """``fn(client, db, *args)`` in the child; ``fn`` is a module-level function."""
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
        kind, text = value
        raise (WriteFailed if kind == "retry" else WriterCrashed)(text)

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
        except (ClickHouseError, OSError, EOFError) as exc:
            if client is not None:
                client.disconnect()
            client = None  # reconnect next time: the server may have restarted
            reply = (False, ("retry", f"{type(exc).__name__}: {exc}"))
        except Exception:  # a bug: the parent crashes the worker with its text
            reply = (False, ("crash", traceback.format_exc()))
        conn.send(reply)
