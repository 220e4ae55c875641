"""The per-day series behind every plan number: ``observations`` and ``daily_series`` (migration 0006).

Plan numbers used to deduplicate every event at query time (argMax per agency and event_id), which
stops scaling at a few million events (docs/capacity.md). Instead the writer keeps, per
(indicator, region, plan-local day), the live observations' count and sum and the day's closing
value, so a flow's year-to-date is a sum over days and a level's value is the latest day's close.

Exactness, whatever is re-delivered, replayed or raced:
- ``observations`` gets a +1 row per stored revision and a -1 row for a revision once a newer one
  supersedes it. A revision is live while none of its rows is -1, and rows of one revision are
  grouped before counting, so copies are harmless.
- The writer writes observations BEFORE the events row that marks the revision stored, and after
  the events INSERT recomputes every (indicator, region, day) that any stored revision of the
  batch's keys lives in. A worker that dies anywhere in between finds on re-delivery either no
  events row (and writes everything again) or the events rows (and recomputes the same days again).
- A recomputation is versioned by the number of observation rows it read; rows are never removed,
  so a later read never has a smaller version, and equal versions read the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from functools import cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

log = logging.getLogger("highland.daily_series")

OBSERVATION_COLUMNS = ("indicator", "region", "day", "observed_at", "agency", "event_id", "revision", "value",
                       "sign")
DAILY_COLUMNS = ("indicator", "region", "day", "events", "value_sum", "close_value", "close_observed_at",
                 "version")
EPOCH = datetime(1970, 1, 1)


class SeriesDay(NamedTuple):
    indicator: str
    region: str
    day: date


class Observation(NamedTuple):
    """One row of ``observations``: a revision of an event, in its series-day, with its sign."""

    indicator: str
    region: str
    day: date
    observed_at: datetime
    agency: str
    event_id: str
    revision: int
    value: float
    sign: int

    @property
    def series_day(self) -> SeriesDay:
        return SeriesDay(self.indicator, self.region, self.day)


@cache
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def plan_day(observed_at: datetime, tz: str) -> date:
    """The plan-local date of an instant (aware: validated events and stored revisions both are)."""
    return observed_at.astimezone(_zone(tz)).date()


def insert_observations(client: Any, db: str, rows: Sequence[Observation]) -> None:
    if rows:
        client.execute(f"INSERT INTO {db}.observations ({', '.join(OBSERVATION_COLUMNS)}) VALUES",
                       [list(c) for c in zip(*rows, strict=True)], columnar=True)


# The (agency, event_id, revision) groups of the touched days, then one row per day. Aliases never
# repeat a column name: 18.16 substitutes aliases inside aggregates.
RECOMPUTE = """
    SELECT indicator, region, day,
           sum(n_rows) AS row_count,
           countIf(is_live) AS live_events,
           sumIf(v, is_live) AS live_sum,
           argMaxIf(v, (observed_at, revision, event_id), is_live) AS close_v,
           maxIf(observed_at, is_live) AS close_obs
    FROM (
        SELECT indicator, region, day, observed_at, agency, event_id, revision,
               any(value) AS v, count() AS n_rows, min(sign) > 0 AS is_live
        FROM {db}.observations
        WHERE {where}
        GROUP BY indicator, region, day, observed_at, agency, event_id, revision
    )
    GROUP BY indicator, region, day
"""
_TOUCHED = "_touched"
_TOUCHED_STRUCTURE = [("indicator", "String"), ("region", "String"), ("day", "Date")]


def recompute(client: Any, db: str, days: Iterable[SeriesDay]) -> int:
    """Rewrite the ``daily_series`` rows of ``days`` from their observations; returns rows written."""
    wanted = sorted(set(days))
    if not wanted:
        return 0
    rows = client.execute(
        RECOMPUTE.format(db=db, where=f"(indicator, region, day) IN {_TOUCHED}"),
        external_tables=[{"name": _TOUCHED, "structure": _TOUCHED_STRUCTURE,
                          "data": [d._asdict() for d in wanted]}],
    )
    return _write_daily(client, db, rows)


def _write_daily(client: Any, db: str, rows: list[tuple[Any, ...]]) -> int:
    if not rows:
        return 0
    out = [(ind, reg, day, live, total if live else 0.0, close if live else 0.0,
            _naive(close_obs) if live else EPOCH, version)
           for ind, reg, day, version, live, total, close, close_obs in rows]
    client.execute(f"INSERT INTO {db}.daily_series ({', '.join(DAILY_COLUMNS)}) VALUES",
                   [list(c) for c in zip(*out, strict=True)], columnar=True)
    return len(out)


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None) if moment.tzinfo else moment


def rebuild(client: Any, db: str, tz: str, *, chunks: int = 16) -> None:
    """Fill ``observations`` and ``daily_series`` from ``events`` (events stored before migration
    0006, or written straight into ``events`` by the query benchmark). In ``chunks`` slices of the
    (agency, event_id) hash, so no GROUP BY holds the whole table. Idempotent: copies of
    observation rows change nothing. Run it with no worker writing (as migrations are)."""
    for i in range(chunks):
        part = f"cityHash64(agency, event_id) % {chunks} = {i}"
        client.execute(f"""
            INSERT INTO {db}.observations ({', '.join(OBSERVATION_COLUMNS)})
            SELECT indicator, region, toDate(observed_at, '{tz}'), observed_at, agency, event_id, revision, value,
                   toInt8(1)
            FROM {db}.events WHERE {part}""")
        # A -1 row for every revision below its key's highest.
        client.execute(f"""
            INSERT INTO {db}.observations ({', '.join(OBSERVATION_COLUMNS)})
            SELECT indicator, region, toDate(observed_at, '{tz}'), observed_at, agency, event_id, revision, value,
                   toInt8(-1)
            FROM {db}.events
            ALL INNER JOIN (SELECT agency, event_id, max(revision) AS top_revision FROM {db}.events
                            WHERE {part} GROUP BY agency, event_id HAVING count() > 1) AS tops
            USING (agency, event_id)
            WHERE {part} AND revision < top_revision""")
    # Then every series-day, one indicator at a time (the columns in RECOMPUTE's order).
    for (indicator,) in client.execute(f"SELECT DISTINCT indicator FROM {db}.observations"):
        client.execute(
            f"INSERT INTO {db}.daily_series (indicator, region, day, version, events, value_sum, close_value, "
            f"close_observed_at) {RECOMPUTE.format(db=db, where='indicator = %(indicator)s')}",
            {"indicator": indicator})
    log.info("rebuilt the per-day series of %s from its events", db)
