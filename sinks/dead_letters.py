"""Dead letters in ClickHouse: written by the worker from the dead-letter topic, listed by `highland dlq`.

The dead-letter topic is as open as the events topic, so storing it follows the same poison-record
policy (sinks/poison.py): a dead letter that can't be stored as sent (a ``received_at`` no
DateTime can hold, text that is not valid Unicode) is stored sanitized; one that can't be stored
even then is skipped with a log line. Neither ever holds up the dead letters behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from highland.ingest.dead_letters import DeadLetter, sanitized
from highland.sinks.poison import Failure, PoisonPolicy, classify, describe
from highland.sinks.tables import DEAD_LETTERS

log = logging.getLogger("highland.worker")
Positioned = tuple[int, int, DeadLetter]  # (partition, offset, record) on the dead-letter topic
# What a ClickHouse DateTime can hold, a day in from each end: a naive time is read in the
# server's zone.
STORABLE_FROM = datetime(1970, 1, 2, tzinfo=UTC)
STORABLE_UNTIL = datetime(2106, 2, 6, tzinfo=UTC)
POLICY = PoisonPolicy()


class StoreReport(NamedTuple):
    stored: int  # as sent
    sanitized: int
    skipped: int

COLUMNS = DEAD_LETTERS.names


def store(client: Any, db: str, records: Sequence[Positioned]) -> None:
    """Insert (partition, offset, record) rows; re-inserting the same position is harmless."""
    if not records:
        return
    client.execute(
        DEAD_LETTERS.insert(db),
        [(p, o, r.reason.value, r.detail, r.agency or "", r.source, r.origin or "", r.received_at,
          r.payload, r.payload_encoding) for p, o, r in records],
    )


def _storable_time(letter: DeadLetter) -> bool:
    at = letter.received_at if letter.received_at.tzinfo else letter.received_at.replace(tzinfo=UTC)
    return STORABLE_FROM <= at <= STORABLE_UNTIL


def store_isolated(client: Any, db: str, records: Sequence[Positioned], now: datetime) -> StoreReport:
    """``store`` under the poison-record policy; infrastructure failures propagate (retried by the
    caller: storing is idempotent by position)."""
    fits = [r for r in records if _storable_time(r[2])]
    fixed = [(p, o, sanitized(r, "received_at outside what a DateTime can hold", now))
             for p, o, r in records if not _storable_time(r)]
    outcome = POLICY.write(lambda part: store(client, db, part), fits, len(fits), lambda b, lo, hi: b[lo:hi])
    for poisoned in outcome.poisoned:
        ((p, o, letter),) = poisoned.record
        fixed.append((p, o, sanitized(letter, f"not storable as sent: {poisoned.error}", now)))
    skipped = sum(not _store_one(client, db, record) for record in fixed)
    return StoreReport(len(fits) - len(outcome.poisoned), len(fixed) - skipped, skipped)


def _store_one(client: Any, db: str, record: Positioned) -> bool:
    """A sanitized dead letter, on its own; False (logged) if even that can't be stored."""
    try:
        store(client, db, [record])
        return True
    except Exception as exc:
        if classify(exc) is Failure.INFRASTRUCTURE:
            raise
        log.error("dead letter at partition %d offset %d skipped: not storable even sanitized (%s)",
                  record[0], record[1], describe(exc))
        return False


# received_at read as DateTime('UTC'): an aware datetime whatever the server's zone
# (docs/clickhouse-dialect.md, "server-time-zone").
SELECTED = ", ".join("toTimeZone(received_at, 'UTC') AS received_utc" if c == "received_at" else c
                     for c in COLUMNS)


def list_dead_letters(client: Any, db: str, limit: int = 200) -> list[dict[str, Any]]:
    rows = client.execute(
        f"SELECT {SELECTED} FROM {db}.dead_letters "
        "ORDER BY received_at DESC, dlq_partition, dlq_offset DESC LIMIT 1 BY dlq_partition, dlq_offset "
        "LIMIT %(limit)s", {"limit": limit})
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def counts_by_reason(client: Any, db: str) -> dict[str, int]:
    rows = client.execute(
        f"SELECT reason, count() FROM (SELECT reason FROM {db}.dead_letters "
        "LIMIT 1 BY dlq_partition, dlq_offset) GROUP BY reason ORDER BY reason")
    return dict(rows)
