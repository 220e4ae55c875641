"""The poison-record policy: what a failed write means, and what is done about it.

A write can fail because the infrastructure is away (the connection, the server, ZooKeeper) or
because of what a record holds (a date or number its column can't hold, a string that can't be
encoded). The first kind is retried with back-off for as long as it lasts, by the caller; the
second must never be: retried, one record would stop every record behind it (CONTRACT §1.1,
Liveness). ``classify`` tells them apart; ``PoisonPolicy.write`` writes a batch and, when it fails
for anything but infrastructure, splits it in halves until the records that fail alone are found.
Those are handed back (the caller dead-letters them) and everything else is written.

The table of error codes, and why each is where it is, is in docs/streams.md ("Poison records and
liveness"). An error that is neither (an unknown code, a Python exception) is bisected as well, but
blamed on a record only on evidence: another write of the same batch succeeded, so the write path
works and the failure follows the record. Without that evidence nothing is blamed and
``Unisolated`` is raised: a bug or an outage we don't recognise crashes the worker (to be restarted
from its last commit) instead of dead-lettering every record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from clickhouse_driver.errors import Error as ClickHouseError

B = TypeVar("B")  # a batch: anything with a length that ``cut`` can slice
R = TypeVar("R")  # what one successful write returns


class Failure(StrEnum):
    INFRASTRUCTURE = "infrastructure"  # retried with back-off, never blamed on a record
    CONTENT = "content"  # a record's data: never retried, the record is dead-lettered
    UNKNOWN = "unknown"  # bisected; blamed on a record only on evidence


# ClickHouse error codes that mean "the server or the way to it is not able to take a write now".
INFRASTRUCTURE_CODES: Mapping[int, str] = {
    3: "UNEXPECTED_END_OF_FILE",
    32: "ATTEMPT_TO_READ_AFTER_EOF",
    33: "CANNOT_READ_ALL_DATA",
    60: "UNKNOWN_TABLE",
    81: "UNKNOWN_DATABASE",
    159: "TIMEOUT_EXCEEDED",
    164: "READONLY",
    173: "CANNOT_ALLOCATE_MEMORY",
    192: "UNKNOWN_USER",
    193: "WRONG_PASSWORD",
    198: "DNS_ERROR",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    218: "TABLE_IS_DROPPED",
    225: "NO_ZOOKEEPER",
    234: "NO_REPLICA_HAS_PART",
    236: "ABORTED",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",
    279: "ALL_CONNECTION_TRIES_FAILED",
    285: "TOO_FEW_LIVE_REPLICAS",
    289: "REPLICA_IS_NOT_IN_QUORUM",
    319: "UNKNOWN_STATUS_OF_INSERT",
    369: "ALL_REPLICAS_ARE_STALE",
    394: "QUERY_WAS_CANCELLED",
    425: "SYSTEM_ERROR",
    516: "AUTHENTICATION_FAILED",
    999: "KEEPER_EXCEPTION",
    1000: "POCO_EXCEPTION",
}

# ClickHouse error codes a record's data can cause (a value its column can't hold, text that
# doesn't parse as the column's type). The driver raises 53 itself for a value it can't pack.
CONTENT_CODES: Mapping[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    25: "CANNOT_PARSE_ESCAPE_SEQUENCE",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    128: "TOO_LARGE_ARRAY_SIZE",
    131: "TOO_LARGE_STRING_SIZE",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    376: "CANNOT_PARSE_UUID",
    407: "DECIMAL_OVERFLOW",
}


def classify(exc: BaseException) -> Failure:
    """Which kind of failure ``exc`` is (see the module's docstring and docs/streams.md)."""
    if isinstance(exc, ClickHouseError):
        code = getattr(exc, "code", None)
        if code in INFRASTRUCTURE_CODES:
            return Failure.INFRASTRUCTURE
        if code in CONTENT_CODES:
            return Failure.CONTENT
        return Failure.UNKNOWN
    # Sockets, timeouts, a pipe to a writer process that died.
    if isinstance(exc, (OSError, EOFError, TimeoutError)):
        return Failure.INFRASTRUCTURE
    # Only data makes these: text that is not valid Unicode (a lone surrogate) can't be encoded.
    if isinstance(exc, UnicodeError):
        return Failure.CONTENT
    return Failure.UNKNOWN


def retryable(exc: BaseException) -> bool:
    """Whether a ClickHouse call that raised ``exc`` is worth making again as it was: the worker's
    one retry loop (``streams.app.retrying``) asks this. Not a failure of the content (it would fail
    for ever), and nothing but ClickHouse's, a socket's or a writer process's failure (``WriteFailed``
    is an ``OSError``). A writer child's failures reach it as raised there (sinks/writer_process.py)."""
    return isinstance(exc, (ClickHouseError, OSError, EOFError)) and classify(exc) is not Failure.CONTENT


_CODE_LINE = re.compile(r"Code: \d+\.")


def describe(exc: BaseException) -> str:
    """One line for a dead letter's detail and the log: the class, the code's name, the message."""
    code = getattr(exc, "code", None)
    name = None
    if isinstance(code, int):
        name = CONTENT_CODES.get(code) or INFRASTRUCTURE_CODES.get(code) or "unclassified code"
    text = str(getattr(exc, "message", "") or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _CODE_LINE.fullmatch(line.strip())]
    first_line = lines[0].split(" Stack trace:")[0].removeprefix("DB::Exception: ") if lines else ""
    return f"{type(exc).__name__}{f' (code {code} {name})' if name else ''}: {first_line}"[:500]


class Unisolated(Exception):
    """Writes failed for a reason that could not be pinned on any record (no write of the batch
    succeeded, and no failure was a content error): not content, so not dead-lettered."""


@dataclass(frozen=True)
class Poisoned(Generic[B]):
    """One record (a batch of one) that could not be written, and why."""

    record: B
    failure: Failure
    error: str


@dataclass
class Outcome(Generic[B, R]):
    results: list[R] = field(default_factory=list)  # one per successful write
    poisoned: list[Poisoned[B]] = field(default_factory=list)  # in the batch's order


Write = Callable[[B], R]
Cut = Callable[[B, int, int], B]


class PoisonPolicy:
    """Write a batch; on a failure that is not infrastructure, bisect it and hand back the
    records that fail alone. Infrastructure failures propagate (the caller retries the batch with
    back-off: the write must be idempotent, as halves already written are written again)."""

    def __init__(self, classifier: Callable[[BaseException], Failure] = classify) -> None:
        self.classify = classifier

    def write(self, write: Write[B, R], batch: B, size: int, cut: Cut[B]) -> Outcome[B, R]:
        """``write(batch)``; ``cut(batch, start, stop)`` is the part from ``start`` to ``stop``."""
        outcome: Outcome[B, R] = Outcome()
        pending = [(0, size)]  # a stack, left half on top: parts are written in the batch's order
        while pending:
            start, stop = pending.pop()
            part = batch if (start, stop) == (0, size) else cut(batch, start, stop)
            try:
                outcome.results.append(write(part))
            except Exception as exc:
                failure = self.classify(exc)
                if failure is Failure.INFRASTRUCTURE:
                    raise
                if stop - start == 1:
                    outcome.poisoned.append(Poisoned(part, failure, describe(exc)))
                else:
                    middle = (start + stop) // 2
                    pending += [(middle, stop), (start, middle)]
        self._check_evidence(outcome)
        return outcome

    @staticmethod
    def _check_evidence(outcome: Outcome[B, R]) -> None:
        """Unknown failures are blamed on records only if some write of the batch succeeded."""
        unknown = [p for p in outcome.poisoned if p.failure is Failure.UNKNOWN]
        if unknown and not outcome.results:
            raise Unisolated(f"{len(unknown)} record(s) failed alone and nothing else was written: "
                             f"{unknown[0].error}")


# --- what a column type can hold, checked before a write ---------------------------------------

# Bounds of the ClickHouse types the writers send as Python ints (a DateTime as epoch seconds).
INT_BOUNDS: Mapping[str, tuple[int, int]] = {
    "UInt8": (0, 2**8 - 1), "UInt16": (0, 2**16 - 1), "UInt32": (0, 2**32 - 1), "UInt64": (0, 2**64 - 1),
    "DateTime": (0, 2**32 - 1),
}


def out_of_bounds(structure: Sequence[tuple[str, str]], columns: Sequence[Sequence[object]]) -> dict[int, str]:
    """Rows (by index) holding an int their column's type can't hold, with why. A min and a max
    per column first (C speed): a batch with nothing out of bounds costs no Python loop."""
    bad: dict[int, str] = {}
    for (name, kind), values in zip(structure, columns, strict=True):
        bounds = INT_BOUNDS.get(kind)
        if bounds is None or not values:
            continue
        low, high = bounds
        try:
            if low <= min(values) and max(values) <= high:  # type: ignore[type-var, operator]
                continue
        except TypeError:
            pass  # not all ints: the write itself finds out (and the bisect isolates it)
        for row, value in enumerate(values):
            if isinstance(value, int) and not low <= value <= high:
                bad.setdefault(row, f"{name} = {value} is outside what a ClickHouse {kind} can hold "
                                    f"[{low}, {high}]")
    return bad
