"""What the worker reports about its liveness: counters, batches in progress, stuck ones.

Each consumer (the events batch consumer, the dead-letter agent) times the batch it is working on
with a ``Watch``; a batch in progress longer than ``HIGHLAND_WORKER_STUCK_AFTER_S`` is stuck: logged
(again every such interval while it lasts), counted once, and shown by the worker's ``/health``
route (JSON, on the Faust web server, ``HIGHLAND_WORKER_WEB_PORT``). A stuck batch is what an
infrastructure outage looks like (content can't cause one: sinks/poison.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("highland.worker")


@dataclass
class Counters:
    """Since the worker started."""

    batches_written: int = 0  # events batches written and committed
    # Per batch written: every record read, what the validator accepted and rejected (rejected =
    # read - accepted, each dead-lettered with its reason), and every dead letter the worker sent
    # (the rejected, and the poison records below). A batch read again after a rebalance counts again.
    records_consumed: int = 0
    events_accepted: int = 0
    events_stored: int = 0
    events_rejected: int = 0  # by the validator, dead-lettered with its reason
    poison_dead_lettered: int = 0  # accepted events the store refused for their content
    dead_letters_sent: int = 0
    dead_letters_stored: int = 0
    dead_letters_sanitized: int = 0  # stored in a sanitized form (unreadable, or unstorable as sent)
    dead_letters_skipped: int = 0  # not storable even sanitized: logged and left
    infrastructure_retries: int = 0
    stuck_batches: int = 0
    # Alert notifications (streams/notify.py): per alert and target, delivered or given up; and
    # every failed attempt, retried or not.
    notifications_sent: int = 0
    notifications_failed: int = 0
    notification_attempts_failed: int = 0


@dataclass
class Watch:
    """Times the batch one consumer is working on (one at a time)."""

    name: str
    started: float | None = None
    reported_at: float | None = None  # when it was last reported stuck

    @contextmanager
    def running(self) -> Iterator[None]:
        self.started, self.reported_at = time.monotonic(), None
        try:
            yield
        finally:
            self.started = self.reported_at = None

    def age(self, now: float | None = None) -> float:
        return 0.0 if self.started is None else (now or time.monotonic()) - self.started


@dataclass
class Health:
    stuck_after_s: float
    counters: Counters = field(default_factory=Counters)
    watches: dict[str, Watch] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # sums to counters.events_rejected

    def watch(self, name: str) -> Watch:
        return self.watches.setdefault(name, Watch(name))

    def check_stuck(self, now: float | None = None) -> list[Watch]:
        """Report every batch in progress longer than ``stuck_after_s``: counted once each, logged
        once per ``stuck_after_s`` while it lasts. Returns the stuck ones."""
        now = now or time.monotonic()
        stuck = [w for w in self.watches.values() if w.age(now) > self.stuck_after_s]
        for w in stuck:
            if w.reported_at is None:
                self.counters.stuck_batches += 1
            if w.reported_at is None or now - w.reported_at >= self.stuck_after_s:
                w.reported_at = now
                log.warning("%s batch stuck for %.0f s (infrastructure retries so far: %d)", w.name, w.age(now),
                            self.counters.infrastructure_retries)
        return stuck

    def report(self) -> dict[str, Any]:
        now = time.monotonic()
        ages = {name: round(w.age(now), 3) for name, w in self.watches.items()}
        stuck = [name for name, age in ages.items() if age > self.stuck_after_s]
        return {
            "status": "stuck" if stuck else "ok",
            "stuck": stuck,
            "stuck_after_s": self.stuck_after_s,
            "batch_age_s": ages,
            "stuck_batch_age_s": max((ages[name] for name in stuck), default=0.0),
            "counters": asdict(self.counters),
            "rejected_by_reason": dict(self.rejected_by_reason),
        }
