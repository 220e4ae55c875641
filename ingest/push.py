"""`highland push`: stream files through the validator into Kafka, good rows never held up by bad.

Each row is validated once and its JSON serialized once. Accepted rows go to the events topic;
rejected rows go to the dead-letter topic and to ``<file>.rejected.jsonl`` beside the input, with
their reasons. A row counts as accepted only once the broker acknowledged it.

A dry run (``dry_run=True``) reads and validates the same way and sends nothing: no producer is
made, so it needs no broker and no database, and it writes no file. Both give a ``PushSummary``
whose ``report()`` lists every rejected row with its reason in English and Chinese.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple

from highland.catalog.models import Catalog
from highland.ingest.dead_letters import dead_letter
from highland.ingest.events import Accepted, Reason, Rejected, validate
from highland.ingest.files import csv_encoding, encoding_label, file_format, read_rows
from highland.ingest.names import REASON_EN, REASON_ZH, Names
from highland.ingest.producer import EventProducer

from highland.settings import Settings


class Rejection(NamedTuple):
    """One rejected row, as the report lists it."""

    file: str
    line: int
    reason: Reason
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "reason": self.reason.value,
                "reason_zh": REASON_ZH[self.reason], "reason_en": REASON_EN[self.reason], "detail": self.detail}


@dataclass
class FileReport:
    file: str
    format: str
    encoding: str | None = None  # of a CSV
    encoding_detected: bool = False  # False: given with --encoding
    sheet: str | None = None  # of an .xlsx, as asked (None: the first)
    rows: int = 0

    def as_dict(self) -> dict[str, object]:
        encoding = None if self.encoding is None else encoding_label(self.encoding)
        return {**vars(self), "encoding": encoding}


@dataclass
class PushSummary:
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_files: list[Path] = field(default_factory=list)
    delivered: int = 0
    undelivered: int = 0
    delivery_error: str | None = None
    dry_run: bool = False
    files: list[FileReport] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Rows the broker acknowledged; in a dry run, rows that would be sent."""
        return self.sent if self.dry_run else self.delivered

    @property
    def ok(self) -> bool:
        if self.dry_run:
            return not self.rejected
        return not self.rejected and not self.undelivered and self.delivered == self.sent

    def report(self) -> dict[str, object]:
        """The report of ``push --json`` (strict JSON: no NaN, every key a string)."""
        return {
            "dry_run": self.dry_run, "ok": self.ok, "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "by_reason": [{"reason": r, "reason_zh": REASON_ZH[Reason(r)], "count": n}
                          for r, n in self.rejected.most_common()],
            "files": [f.as_dict() for f in self.files],
            "rejections": [r.as_dict() for r in self.rejections],
            "undelivered": self.undelivered, "delivery_error": self.delivery_error,
            "rejected_files": [str(p) for p in self.rejected_files],
        }


def rejected_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejected.jsonl")


class RejectLog:
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
               on_progress: Callable[[int], None] | None = None, *, dry_run: bool = False,
               encoding: str | None = None, sheet: str | None = None) -> PushSummary:
    """Push every row of every file in the name of ``agency``; ``on_progress(rows)`` as it goes.
    ``encoding`` (CSV; None: detected) and ``sheet`` (.xlsx; None: the first) as ``read_rows``.
    Raises ``files.FileError`` for a file that cannot be read as a whole."""
    summary = PushSummary(dry_run=dry_run)
    names = Names.of(catalog)
    # Every file is opened and its encoding settled before anything is sent: a wrong encoding in
    # the third file must not leave the first two half-pushed.
    plans = [file_report(path, encoding, sheet) for path in paths]
    if dry_run:
        for path, report in zip(paths, plans, strict=True):
            _validate_file(path, report, agency, catalog, names, summary, None, on_progress)
        return summary
    with EventProducer(settings) as producer:
        for path, report in zip(paths, plans, strict=True):
            _validate_file(path, report, agency, catalog, names, summary, producer, on_progress)
        producer.flush()
        summary.delivered = producer.events.delivered
        summary.undelivered = producer.events.failed
        summary.delivery_error = producer.events.last_error or producer.dead_letters.last_error
    return summary


def file_report(path: Path, encoding: str | None, sheet: str | None) -> FileReport:
    kind = file_format(path)
    report = FileReport(file=path.name, format=kind)
    if kind == "csv":
        report.encoding = csv_encoding(path, encoding)
        report.encoding_detected = encoding is None
    elif kind == "xlsx":
        report.sheet = sheet
    return report


def _validate_file(path: Path, report: FileReport, agency: str, catalog: Catalog, names: Names,
                   summary: PushSummary, producer: EventProducer | None,
                   on_progress: Callable[[int], None] | None) -> None:
    summary.files.append(report)
    log = RejectLog(path) if producer is not None else None
    now = datetime.now(UTC)
    n = 0
    for n, row in enumerate(read_rows(path, encoding=report.encoding, sheet=report.sheet, names=names), 1):
        if n % 1000 == 0:
            now = datetime.now(UTC)
            if on_progress:
                on_progress(1000)
        verdict = validate(row.payload, catalog, now=now, pushed_by=agency)
        if isinstance(verdict, Accepted):
            if producer is not None:
                producer.send_event(verdict, row.payload)
            summary.sent += 1
            continue
        summary.rejected[verdict.reason.value] += 1
        summary.rejections.append(Rejection(row.file, row.line, verdict.reason, verdict.detail))
        if producer is not None and log is not None:
            log.write(row.origin, verdict, row.payload)
            producer.send_dead_letter(dead_letter(verdict, row.payload, "push", row.origin, now))
    report.rows = n
    if on_progress:
        on_progress(n % 1000)
    if log is not None and log.close():
        summary.rejected_files.append(log.path)


def describe_encoding(report: FileReport) -> str | None:
    """"gb18030 (detected)" for the human report; None for files without one."""
    if report.encoding is None:
        return None
    return f"{encoding_label(report.encoding)} ({'detected' if report.encoding_detected else 'given'})"
