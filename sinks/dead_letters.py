"""Dead letters in ClickHouse: written by the worker from the dead-letter topic, listed by `highland dlq`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingest.dead_letters import DeadLetter

COLUMNS = ("dlq_partition", "dlq_offset", "reason", "detail", "agency", "source", "origin", "received_at",
           "payload", "payload_encoding")


def store(client: Any, db: str, records: Sequence[tuple[int, int, DeadLetter]]) -> None:
    """Insert (partition, offset, record) rows; re-inserting the same position is harmless."""
    if not records:
        return
    client.execute(
        f"INSERT INTO {db}.dead_letters ({', '.join(COLUMNS)}) VALUES",
        [(p, o, r.reason.value, r.detail, r.agency or "", r.source, r.origin or "", r.received_at,
          r.payload, r.payload_encoding) for p, o, r in records],
    )


def list_dead_letters(client: Any, db: str, limit: int = 200) -> list[dict[str, Any]]:
    rows = client.execute(
        f"SELECT {', '.join(COLUMNS)} FROM {db}.dead_letters "
        "ORDER BY received_at DESC, dlq_partition, dlq_offset DESC LIMIT 1 BY dlq_partition, dlq_offset "
        "LIMIT %(limit)s", {"limit": limit})
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def counts_by_reason(client: Any, db: str) -> dict[str, int]:
    rows = client.execute(
        f"SELECT reason, count() FROM (SELECT reason FROM {db}.dead_letters "
        "LIMIT 1 BY dlq_partition, dlq_offset) GROUP BY reason ORDER BY reason")
    return dict(rows)
