"""Writing accepted events to ClickHouse: columnar batches, each (agency, event_id, revision) once.

Before inserting, the writer asks which keys of the batch are already stored (a re-delivery after
a crash, a replay, a duplicate pushed twice) and which are superseded by a higher stored revision,
and inserts only the rest. Queries deduplicate on their own, so this is not what makes totals
exact; it is what keeps the live windows (fed from the same INSERT) from counting a re-delivered
event twice, and it keeps the table small.

The check-then-insert is safe because one (agency, event_id) always arrives on one partition
(key ``indicator|region``), and one partition is read by one worker at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.events import Accepted

EVENT_COLUMNS = ("agency", "event_id", "revision", "indicator", "region", "value", "unit", "raw_value",
                 "observed_at", "received_at", "kafka_partition", "kafka_offset")


@dataclass(frozen=True, slots=True)
class Positioned:
    """An accepted event and where it was read from."""

    event: Accepted
    partition: int
    offset: int


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    skipped: int  # already stored, or superseded by a higher revision
    indicators: frozenset[str]  # indicators whose numbers may have changed


def newest_per_key(batch: Iterable[Positioned]) -> dict[tuple[str, str], Positioned]:
    """Within a batch: the highest revision per (agency, event_id); equal revisions keep the first."""
    best: dict[tuple[str, str], Positioned] = {}
    for item in batch:
        key = (item.event.agency, item.event.event_id)
        current = best.get(key)
        if current is None or item.event.revision > current.event.revision:
            best[key] = item
    return best


def stored_revisions(client: Any, db: str,
                     keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
    """Highest stored revision (and its indicator) per key. The keys travel as an external
    table, not as query text, so a batch of any size stays under max_query_size."""
    if not keys:
        return {}
    rows = client.execute(
        f"SELECT agency, event_id, max(revision), argMax(indicator, revision) FROM {db}.events "
        "WHERE (agency, event_id) IN _batch_keys GROUP BY agency, event_id",
        external_tables=[{"name": "_batch_keys", "structure": [("agency", "String"), ("event_id", "String")],
                          "data": [{"agency": a, "event_id": e} for a, e in keys]}],
    )
    return {(a, e): (r, ind) for a, e, r, ind in rows}


def write_events(client: Any, db: str, batch: Sequence[Positioned], received_at: datetime) -> WriteResult:
    """Insert what is new in ``batch``; idempotent, so a failed call can simply be repeated."""
    candidates = newest_per_key(batch)
    stored = stored_revisions(client, db, list(candidates))
    fresh = [p for key, p in candidates.items() if key not in stored or p.event.revision > stored[key][0]]
    if fresh:
        columns = [
            [p.event.agency for p in fresh], [p.event.event_id for p in fresh],
            [p.event.revision for p in fresh], [p.event.indicator for p in fresh],
            [p.event.region for p in fresh], [p.event.value for p in fresh],
            [p.event.unit for p in fresh], [p.event.raw_value for p in fresh],
            [p.event.observed_at for p in fresh], [received_at] * len(fresh),
            [p.partition for p in fresh], [p.offset for p in fresh],
        ]
        client.execute(f"INSERT INTO {db}.events ({', '.join(EVENT_COLUMNS)}) VALUES", columns,
                       columnar=True)
    # A revision may move an event to another indicator: then both indicators' numbers change.
    touched = frozenset(p.event.indicator for p in fresh) | frozenset(
        stored[(p.event.agency, p.event.event_id)][1] for p in fresh
        if (p.event.agency, p.event.event_id) in stored)
    return WriteResult(inserted=len(fresh), skipped=len(batch) - len(fresh), indicators=touched)
