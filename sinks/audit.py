"""The self-check: the per-day series compared with what ``events`` holds, and repaired where they differ.

``highland verify`` compares plan numbers with every event deduplicated at query time, by hand and
over the whole table. This is the same comparison, made continuously by the worker group
(streams/audit.py) over small sets of keys (agency, event_id) -- those written recently, and a slow
sweep over all of them -- with the repair built in. For a set of keys:
1. the observation rows their stored revisions imply (+1 for every revision, -1 for every one below
   its key's newest; ``daily_series.implied_rows_sql``): the rows missing are counted, and stored;
2. the series-days of those revisions: each day's state in ``daily_series`` is compared with a
   recomputation from all its rows (the state of the definition); the days that differ are
   recomputed, and where a stored state claims more rows than the day has (rows were lost, or the
   state was not written by a writer), that state is deleted so the recomputed one wins.
Both repairs are what the writer itself does to a day it cannot update in place, so a repair running
beside the writers is as safe as a third writer.

A check first runs without repairing; only what is still wrong after a pause (a writer in the middle
of a batch has stored its events but not yet their rows) is repaired and reported, so the report
names drift, not work in progress.

Not covered: an observation row that no stored revision implies (rows are never removed by the
writer, which writes rows only for revisions ``events`` holds) -- ``highland verify --repair``
rebuilds everything from ``events``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from highland.sinks.daily_series import (
    RECOMPUTE,
    STATE_COLUMNS,
    SeriesDay,
    days_where,
    implied_rows_sql,
    replace_session_table,
    stage_missing,
    states_sql,
    store_missing,
)
from highland.sinks.tables import DAILY_SERIES, EVENTS, OBSERVATIONS_BY_SERIES
from highland.sinks.topology import SINGLE_NODE, Topology
from highland.sinks.writer import stored_revisions_sql

_TRUTH_STRUCTURE = ", ".join(f"{name} {kind}" for name, kind in DAILY_SERIES.structure(STATE_COLUMNS))
# A day's stored state against its recomputation: counts and the close exactly, sums to 1e-9 (float
# additions in another order).
_WRONG = """
    SELECT indicator, region, day, version AS rows, stored_version FROM _audit_truth
    ANY LEFT JOIN (
        SELECT indicator, region, day, 1 AS has_state, version AS stored_version, events AS s_events,
               value_sum AS s_sum, close_value AS s_close, close_obs AS s_obs, close_revision AS s_rev,
               close_event_id AS s_eid
        FROM ({states})) AS stored USING (indicator, region, day)
    WHERE has_state = 0 OR events != s_events OR abs(value_sum - s_sum) > 1e-9 * greatest(1, abs(value_sum))
       OR (events > 0 AND (close_value != s_close OR toUInt32(close_observed_at) != s_obs
                           OR close_revision != s_rev OR close_event_id != s_eid))
       OR stored_version > version"""


@dataclass(frozen=True)
class Finding:
    """What a check of some keys found (and, if it repaired, mended)."""

    keys: int
    missing_rows: int
    wrong_days: tuple[SeriesDay, ...]
    missing_by_indicator: tuple[tuple[str, int], ...] = ()

    @property
    def clean(self) -> bool:
        return not self.missing_rows and not self.wrong_days


def recent_keys_sql(db: str) -> str:
    """Up to %(limit)s keys stored in [%(since)s, %(until)s) (epoch seconds, the worker's receive
    time): a round's cost stays bounded whatever the rate; keys beyond the limit wait for the sweep."""
    return (f"SELECT DISTINCT agency, event_id FROM {db}.events "
            "WHERE received_at >= toDateTime(%(since)s) AND received_at < toDateTime(%(until)s) LIMIT %(limit)s")


def sweep_keys_sql(db: str, *, bounded: bool) -> str:
    """The keys after (%(agency)s, %(event_id)s) in the events table's own order (a range of its
    primary key): up to (%(last_agency)s, %(last_event_id)s) included if ``bounded``, else up to
    %(limit)s of them."""
    after = "(agency > %(agency)s OR (agency = %(agency)s AND event_id > %(event_id)s))"
    if bounded:
        return (f"SELECT DISTINCT agency, event_id FROM {db}.events WHERE {after} AND (agency < %(last_agency)s "
                "OR (agency = %(last_agency)s AND event_id <= %(last_event_id)s))")
    return f"SELECT DISTINCT agency, event_id FROM {db}.events WHERE {after} ORDER BY agency, event_id LIMIT %(limit)s"


def sweep_slice_end(client: Any, db: str, params: dict[str, Any]) -> tuple[str, str] | None:
    """The last key of the sweep's next slice (``sweep_keys_sql`` unbounded), or None when the
    slice reaches the end of the table."""
    [(count, last)] = client.execute(
        f"SELECT count(), max((agency, event_id)) FROM ({sweep_keys_sql(db, bounded=False)})", params)
    return None if count < params["limit"] else (last[0], last[1])


def check(client: Any, db: str, tz: str, keys: str, params: dict[str, Any], *, repair: bool,
          topology: Topology = SINGLE_NODE) -> Finding:
    """Check (and with ``repair``, mend) the series of the keys ``keys`` selects (a SELECT of
    agency, event_id with ``params``). On one connection: its session tables are the check's. On a
    cluster it reads once every replica holds what was stored before it began, as the writer does
    (sinks/topology.py): a replica behind would show rows missing that are not, and a repair from
    it would write a day's state from too few rows."""
    topology.open_session(client)
    topology.await_replicas(client, db, (EVENTS, OBSERVATIONS_BY_SERIES, DAILY_SERIES))
    client.execute("DROP TEMPORARY TABLE IF EXISTS _audit_keys")
    client.execute("CREATE TEMPORARY TABLE _audit_keys (agency String, event_id String) ENGINE = Memory")
    client.execute(f"INSERT INTO _audit_keys {keys}", params)
    [(n_keys,)] = client.execute("SELECT count() FROM _audit_keys")
    if not n_keys:
        return Finding(0, 0, ())
    replace_session_table(client, "_audit_stored", stored_revisions_sql(db, topology, "_audit_keys"))
    replace_session_table(client, "_audit_rows", implied_rows_sql(tz, "_audit_stored"))
    missing = store_missing(client, db, "_audit_rows", topology=topology) if repair else stage_missing(
        client, db, "_audit_rows", topology=topology)
    by_indicator = tuple(client.execute("SELECT indicator, count() FROM _audit_rows_new GROUP BY indicator "
                                        "ORDER BY indicator")) if missing else ()
    replace_session_table(client, "_audit_days", "SELECT DISTINCT indicator, region, day FROM _audit_rows")
    client.execute("DROP TEMPORARY TABLE IF EXISTS _audit_truth")
    client.execute(f"CREATE TEMPORARY TABLE _audit_truth ({_TRUTH_STRUCTURE}) ENGINE = Memory")
    client.execute("INSERT INTO _audit_truth " + RECOMPUTE.format(
        db=db, observations=OBSERVATIONS_BY_SERIES.name, where=days_where("_audit_days", topology)))
    replace_session_table(client, "_audit_wrong", _WRONG.format(states=states_sql(db, "_audit_days", topology)))
    wrong = client.execute("SELECT indicator, region, day, rows, stored_version FROM _audit_wrong")
    if repair and wrong:
        _mend(client, db, [(SeriesDay(i, r, d), rows) for i, r, d, rows, stored in wrong if stored > rows], topology)
        client.execute(f"INSERT INTO {db}.daily_series ({', '.join(STATE_COLUMNS)}) "
                       f"SELECT {', '.join(STATE_COLUMNS)} FROM _audit_truth "
                       "WHERE (indicator, region, day) IN (SELECT indicator, region, day FROM _audit_wrong)")
    return Finding(int(n_keys), missing, tuple(SeriesDay(i, r, d) for i, r, d, _, _ in wrong), by_indicator)


def _mend(client: Any, db: str, overclaiming: list[tuple[SeriesDay, int]], topology: Topology) -> None:
    """Delete the states that claim more rows than their day has: the recomputed state (whose
    version is the day's row count) would otherwise never outrank them."""
    for (indicator, region, day), rows in overclaiming:
        client.execute(f"ALTER TABLE {topology.mutable(db, 'daily_series')} DELETE WHERE indicator = %(indicator)s "
                       "AND region = %(region)s AND day = %(day)s AND version > %(rows)s",
                       {"indicator": indicator, "region": region, "day": day, "rows": rows})
