"""Writing accepted events to ClickHouse: columnar batches, each (agency, event_id, revision) once.

Before inserting, the writer asks which keys of the batch are already stored (a re-delivery after
a crash, a replay, a duplicate pushed twice) and which are superseded by a higher stored revision,
and inserts only the rest. That keeps the live windows (fed from the same INSERT) from counting a
re-delivered event twice. Plan numbers come from the per-day series the writer keeps next to the
events (sinks/daily_series.py), which stay exact even when a row is written twice.

The check-then-insert is safe because one (agency, event_id) always arrives on one partition
(key ``indicator|region``), and one partition is read by one worker at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from ingest.events import Accepted
from sinks import daily_series
from sinks.daily_series import Observation, SeriesDay, plan_day

EVENT_COLUMNS = ("agency", "event_id", "revision", "indicator", "region", "value", "unit", "raw_value",
                 "observed_at", "received_at", "kafka_partition", "kafka_offset")
# The first eight columns are copied from the event's own first eight fields, in one transposition.
_COPIED = 8
if Accepted._fields[:_COPIED] != EVENT_COLUMNS[:_COPIED]:
    raise ImportError("sinks.writer: EVENT_COLUMNS no longer start with the fields of ingest.events.Accepted")


class Positioned(NamedTuple):
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


class StoredRevision(NamedTuple):
    """One stored revision of an event, as read back before a batch is written."""

    revision: int
    indicator: str
    region: str
    observed_at: int  # epoch seconds
    value: float


def stored_revisions(client: Any, db: str,
                     keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[StoredRevision]]:
    """Every stored revision per key, highest first. The keys travel as an external table, not as
    query text, so a batch of any size stays under max_query_size."""
    if not keys:
        return {}
    rows = client.execute(
        "SELECT agency, event_id, groupArray((revision, indicator, region, toUnixTimestamp(observed_at), value)) "
        f"FROM {db}.events WHERE (agency, event_id) IN _batch_keys GROUP BY agency, event_id",
        external_tables=[{"name": "_batch_keys", "structure": [("agency", "String"), ("event_id", "String")],
                          "data": keys}],
    )
    return {(a, e): sorted({StoredRevision(*revision) for revision in revisions}, reverse=True)
            for a, e, revisions in rows}


def _observation(e: Accepted, epoch: int, tz: str) -> Observation:
    return Observation(e.indicator, e.region, plan_day(epoch, tz), epoch, e.agency, e.event_id, e.revision,
                       e.value, 1)


def _cancel(agency: str, event_id: str, s: StoredRevision, tz: str) -> Observation:
    return Observation(s.indicator, s.region, plan_day(s.observed_at, tz), s.observed_at, agency, event_id,
                       s.revision, s.value, -1)


def write_events(client: Any, db: str, batch: Sequence[Positioned], received_at: datetime,
                 tz: str) -> WriteResult:
    """Insert what is new in ``batch``; idempotent, so a failed call can simply be repeated.

    Order matters (sinks/daily_series.py): observations first, then the events rows that mark
    revisions as stored, then the per-day states of every series-day the batch's keys live in.
    ``tz`` is the plan's timezone (its days), from the same catalog the events were validated with.
    """
    candidates = newest_per_key(batch)
    stored = stored_revisions(client, db, list(candidates))
    fresh = [p for key, p in candidates.items() if key not in stored or p.event.revision > stored[key][0].revision]
    epochs = [int(p.event.observed_at.timestamp()) for p in fresh]
    observations = [_observation(p.event, epoch, tz) for p, epoch in zip(fresh, epochs, strict=True)]
    for p in fresh:
        agency, event_id = p.event.agency, p.event.event_id
        observations += [_cancel(agency, event_id, s, tz) for s in stored.get((agency, event_id), [])]
    pending = daily_series.begin(client, db, observations)
    if fresh:
        fields = [list(column) for column in zip(*(p.event for p in fresh), strict=True)]
        columns = [*fields[:_COPIED], epochs, [int(received_at.timestamp())] * len(fresh),
                   [p.partition for p in fresh], [p.offset for p in fresh]]
        client.execute(f"INSERT INTO {db}.events ({', '.join(EVENT_COLUMNS)}) VALUES", columns,
                       columnar=True)
    # Also the days of revisions stored earlier: a previous attempt may have died before this step.
    daily_series.settle(client, db, pending, {SeriesDay(s.indicator, s.region, plan_day(s.observed_at, tz))
                                              for revisions in stored.values() for s in revisions})
    # A revision may move an event to another indicator: then both indicators' numbers change.
    indicators = frozenset(p.event.indicator for p in fresh) | frozenset(
        s.indicator for p in fresh for s in stored.get((p.event.agency, p.event.event_id), []))
    return WriteResult(inserted=len(fresh), skipped=len(batch) - len(fresh), indicators=indicators)
