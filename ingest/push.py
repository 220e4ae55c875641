"""`highland push`: stream files through the validator into Kafka, good rows never held up by bad.

Each row is validated once and its JSON serialized once. Accepted rows go to the events topic;
rejected rows go to the dead-letter topic and to ``<file>.rejected.jsonl`` beside the input, with
their reasons. A row counts as accepted only once the broker acknowledged it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from highland.catalog.models import Catalog
from highland.ingest.dead_letters import dead_letter
from highland.ingest.events import Accepted, Rejected, validate
from highland.ingest.files import read_rows
from highland.ingest.producer import EventProducer

from highland.settings import Settings


@dataclass
class PushSummary:
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_files: list[Path] = field(default_factory=list)
    delivered: int = 0
    undelivered: int = 0
    delivery_error: str | None = None

    @property
    def accepted(self) -> int:
        return self.delivered

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.undelivered and self.delivered == self.sent


def rejected_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejected.jsonl")


class _RejectLog:
    """``<file>.rejected.jsonl``, created only when the first row of that file is rejected."""

    def __init__(self, source: Path) -> None:
        self.path = rejected_path(source)
        self._file: IO[str] | None = None
        self.path.unlink(missing_ok=True)  # a rerun must not show the previous run's rejections

    def write(self, origin: str, verdict: Rejected, payload: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
        self._file.write(json.dumps({"origin": origin, "reason": verdict.reason.value,
                                     "detail": verdict.detail,
                                     "payload": payload.decode("utf-8", "replace")},
                                    ensure_ascii=False, allow_nan=False) + "\n")

    def close(self) -> bool:
        if self._file is None:
            return False
        self._file.close()
        return True


def push_files(paths: list[Path], agency: str, settings: Settings, catalog: Catalog,
               on_progress: Callable[[int], None] | None = None) -> PushSummary:
    """Push every row of every file in the name of ``agency``; ``on_progress(rows)`` as it goes."""
    summary = PushSummary()
    with EventProducer(settings) as producer:
        for path in paths:
            log = _RejectLog(path)
            now = datetime.now(UTC)
            n = 0
            for n, row in enumerate(read_rows(path), 1):
                if n % 1000 == 0:
                    now = datetime.now(UTC)
                    if on_progress:
                        on_progress(1000)
                verdict = validate(row.payload, catalog, now=now, pushed_by=agency)
                if isinstance(verdict, Accepted):
                    producer.send_event(verdict, row.payload)
                    summary.sent += 1
                else:
                    summary.rejected[verdict.reason.value] += 1
                    log.write(row.origin, verdict, row.payload)
                    producer.send_dead_letter(dead_letter(verdict, row.payload, "push", row.origin, now))
            if on_progress:
                on_progress(n % 1000)
            if log.close():
                summary.rejected_files.append(log.path)
        producer.flush()
        summary.delivered = producer.events.delivered
        summary.undelivered = producer.events.failed
        summary.delivery_error = producer.events.last_error or producer.dead_letters.last_error
    return summary
