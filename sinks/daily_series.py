"""The per-day series behind every plan number: the observations and ``daily_series`` (migrations
0006-0007; the observations live in ``observations_by_series``, OBSERVATIONS).

Plan numbers used to deduplicate every event at query time (argMax per agency and event_id), which
stops scaling at a few million events (docs/capacity.md). Instead the writer keeps, per
(indicator, region, plan-local day) -- a *series-day* -- the live observations' count and sum and
the day's closing value, so a flow's year-to-date is a sum over days and a level's value is the
latest day's close.

The observations get a +1 row per stored revision and a -1 row for a revision once a newer one
supersedes it, in that revision's own day. A revision is live while it has no -1 row. Rows are
never removed, so the row count of a series-day only grows, and a ``daily_series`` row carries as
``version`` the row count it reflects: the highest version is the newest state.

Per batch (``begin`` and ``settle``, after the events INSERT; sinks/writer.py), on the observation
rows that the stored revisions of the batch's keys imply, in ``_obs``, a temporary table of the
writer's session, all in ClickHouse (a backfill batch touches thousands of days; only two numbers
come back to Python):
1. count each touched day's rows (``_before``), then look up which of the batch's rows exist already
   (a previous attempt of the same batch, another writer's) and insert only the others (``_new``);
2. count again (``after``), read each day's state and sum up its new rows. They are applied to the
   state (+1: count, sum, close; -1: the revision is removed) only when the state reflects exactly
   the rows counted before (``version == before``) and nothing but our rows was added since
   (``after == before + len(new)``) -- the common case, costing O(batch), not O(day);
3. otherwise (another writer touched the day, a worker died between steps, a correction removed the
   day's closing observation) the day is recomputed from all its rows, grouping the rows of each
   revision first, so copies change nothing.
A worker that dies anywhere re-reads the batch: rows found are not written twice, and a day whose
state lags its rows is recomputed.

The counts of steps 1-2 are taken per (``series``, day), ``series`` being the hash of (indicator,
region) that orders the table: numbers are what 18.16 filters and groups fast (docs/clickhouse-dialect.md,
"string-keys"). Two series sharing a
hash would share one count. That is safe: rows are never removed, so a count can only be too high,
by rows of another series; a state's version is then below the count, the version check fails, and
the day is recomputed from its own rows (step 3, exact by strings). A collision costs time, never a
wrong number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, NamedTuple

from highland.sinks.tables import DAILY_SERIES, OBSERVATIONS_BY_SERIES
from highland.sinks.topology import SINGLE_NODE, Topology

log = logging.getLogger("highland.daily_series")

OBSERVATIONS = OBSERVATIONS_BY_SERIES.name  # migration 0007; 0006's ``observations`` is copied into it

OBSERVATION_COLUMNS = OBSERVATIONS_BY_SERIES.names
# A state row as the SQL below computes it: its day (the order key), its version, then its numbers.
_DAY_KEY, _VERSION = DAILY_SERIES.order_by, DAILY_SERIES.version_column
STATE_COLUMNS = (*_DAY_KEY, _VERSION, *DAILY_SERIES.without(*_DAY_KEY, _VERSION))
_DAY_STRUCTURE = list(DAILY_SERIES.structure(_DAY_KEY))


class SeriesDay(NamedTuple):
    indicator: str
    region: str
    day: date


class Observation(NamedTuple):
    """One row of ``observations``: a revision of an event, in its series-day, with its sign."""

    indicator: str
    region: str
    day: date
    observed_at: int  # epoch seconds (the column is a DateTime): cheap to compare and to send
    agency: str
    event_id: str
    revision: int
    value: float
    sign: int


class DayState(NamedTuple):
    """A ``daily_series`` row. A row's rank decides which observation closes its day: latest
    observed_at (epoch seconds), then revision, then event_id; close_rank is () for a day without
    live observations."""

    version: int
    events: int
    value_sum: float
    close_value: float
    close_rank: tuple[int, int, str] | tuple[()]


def _days_table(days: Iterable[SeriesDay]) -> dict[str, Any]:
    # Rows as tuples, not dicts: the driver would otherwise convert every row first.
    return {"name": "_days", "structure": _DAY_STRUCTURE, "data": sorted(set(days))}


def replace_session_table(client: Any, name: str, select: str) -> None:
    """(Re)create ``name``, a temporary table of this connection's session, from ``select``."""
    client.execute(f"DROP TEMPORARY TABLE IF EXISTS {name}")
    client.execute(f"CREATE TEMPORARY TABLE {name} ENGINE = Memory AS {select}")


def stage_columns(client: Any, name: str, structure: Sequence[tuple[str, str]], columns: list[list[Any]]) -> None:
    """(Re)create ``name``, a temporary table of this session with ``structure``, holding ``columns``
    (one list per column, in ``structure`` order): what Python sends ClickHouse, sent once."""
    client.execute(f"DROP TEMPORARY TABLE IF EXISTS {name}")
    client.execute(f"CREATE TEMPORARY TABLE {name} ({', '.join(f'{c} {t}' for c, t in structure)}) ENGINE = Memory")
    if columns and columns[0]:
        client.execute(f"INSERT INTO {name} ({', '.join(c for c, _ in structure)}) VALUES", columns, columnar=True)


def zone_literal(tz: str) -> str:
    """The plan's timezone as an SQL string literal (it comes from the catalog; escaped anyway)."""
    return "'" + tz.replace("\\", "\\\\").replace("'", "\\'") + "'"


def observation_rows_sql(tz: str, sign: int, source: str) -> str:
    """SELECT, in OBSERVATION_COLUMNS order, an observation row with ``sign`` for each events-shaped
    row (agency, event_id, revision, indicator, region, observed_at, value) that ``source`` (a FROM
    ... clause) yields, in its plan-local day."""
    return f"""
        SELECT indicator, region, toDate(observed_at, {zone_literal(tz)}) AS day, observed_at, agency, event_id,
               revision, value, toInt8({sign}) AS sign
        {source}"""


_COLUMNS = ", ".join(OBSERVATION_COLUMNS)


def implied_rows_sql(tz: str, stored: str) -> str:
    """The observation rows that the stored revisions in the session table ``stored`` (events-shaped
    rows, every stored revision of some keys) imply: +1 for each revision, -1 for each one below its
    key's newest, each in that revision's own day. (ALL, not ANY: current ClickHouse's ANY INNER JOIN
    keeps one left row per key, and a key has a row per revision: docs/clickhouse-dialect.md,
    "any-inner-join".)"""
    superseded = f"""
        FROM {stored}
        ALL INNER JOIN (SELECT agency, event_id, max(revision) AS newest FROM {stored} GROUP BY agency, event_id)
        AS newest USING (agency, event_id)
        WHERE revision < newest"""
    return (observation_rows_sql(tz, 1, f"FROM {stored}") + "\n        UNION ALL"
            + observation_rows_sql(tz, -1, superseded))


# The rows of ``_obs`` not stored yet (a previous attempt of the same batch may have stored some).
# 18.16 builds and tests sets of tuples far slower than sets of one column, and of numbers faster
# than of strings (docs/clickhouse-dialect.md, "tuple-sets", "string-keys"). So the stored rows are found by single
# numeric columns -- the touched series-days' primary-key range, and inside it only rows whose
# ``key`` (hash of agency, event_id) is one of the batch's (PREWHERE: the other columns are read
# only there, in the common case nowhere) -- a superset that the exact NOT IN then narrows.
# ``_obs`` holds distinct rows: the writer's derivation makes them so (and the tests' staging).
def new_rows_sql(db: str, topology: Topology, rows: str = "_obs", days: str = "_obs_days") -> str:
    """The rows of the session table ``rows`` not stored yet; ``days``: its distinct series-days."""
    return f"""
        SELECT {_COLUMNS} FROM {rows}
        WHERE (agency, event_id, revision, sign) NOT IN (
            SELECT agency, event_id, revision, sign FROM {db}.{OBSERVATIONS}
            PREWHERE key {topology.membership} (SELECT cityHash64(agency, event_id) FROM {rows})
            WHERE {series_days_range(days, topology)})"""


# Per series-day, what ``_new`` adds (+1 rows) and removes (-1 rows); ranks as in DayState: the
# closing candidate's (observed_at, revision, event_id), and the ranks the -1 rows withdraw. One
# argMax for the whole candidate (docs/clickhouse-dialect.md, "argmax-tuple").
DELTAS = """
    SELECT indicator, region, day, delta_rows, added, added_sum, top.1 AS top_value, top.2 AS top_obs,
           top.3 AS top_revision, top.4 AS top_event_id, removed, removed_sum, removed_ranks, has_delta
    FROM (
        SELECT indicator, region, day, count() AS delta_rows,
               countIf(sign > 0) AS added, sumIf(value, sign > 0) AS added_sum,
               argMaxIf((value, toUInt32(observed_at), revision, event_id), (observed_at, revision, event_id),
                        sign > 0) AS top,
               countIf(sign < 0) AS removed, sumIf(value, sign < 0) AS removed_sum,
               groupArrayIf((toUInt32(observed_at), revision, event_id), sign < 0) AS removed_ranks,
               toUInt8(1) AS has_delta
        FROM _new GROUP BY indicator, region, day)"""


def counts_sql(db: str, days: str, topology: Topology = SINGLE_NODE) -> str:
    """Observation rows per series-day of ``days`` (a session table of distinct (indicator, region,
    day)), as ``rows``: counted per (series, day) (module docstring: a hash collision can only make
    a count too high), by single numeric columns (docs/clickhouse-dialect.md, "string-keys")."""
    return f"""
        SELECT indicator, region, day, rows
        FROM (SELECT indicator, region, day, cityHash64(indicator, region) AS series FROM {days}) AS touched
        ALL INNER JOIN (
            SELECT series, day, count() AS rows FROM {db}.{OBSERVATIONS}
            WHERE {series_days_range(days, topology)}
            GROUP BY series, day) AS counted USING (series, day)"""


def series_days_range(days: str, topology: Topology = SINGLE_NODE) -> str:
    """A WHERE for the observation rows of the (series, day) of ``days`` (a table or subquery of
    (indicator, region, day)), by the primary key's numbers only: a superset when series share a
    hash, and across series-days (every touched series times every touched day)."""
    in_ = topology.membership
    return f"series {in_} (SELECT cityHash64(indicator, region) FROM {days}) AND day {in_} (SELECT day FROM {days})"


def days_where(days: str, topology: Topology = SINGLE_NODE) -> str:
    """A WHERE for the observation rows of the series-days ``days`` (a table or subquery of
    (indicator, region, day)): the primary key's numbers bound the range, the strings decide."""
    return f"{series_days_range(days, topology)} AND (indicator, region, day) {topology.membership} {days}"


def states_sql(db: str, days: str, topology: Topology = SINGLE_NODE) -> str:
    """The ``daily_series`` state of each series-day of ``days`` (its newest version)."""
    return (f"SELECT indicator, region, day, version, events, value_sum, close_value, "
            f"toUInt32(close_observed_at) AS close_obs, close_revision, close_event_id "
            f"FROM {db}.daily_series FINAL WHERE (indicator, region, day) {topology.membership} {days}")


def read_states(client: Any, db: str, days: Iterable[SeriesDay]) -> dict[SeriesDay, DayState]:
    table = _days_table(days)
    if not table["data"]:
        return {}
    rows = client.execute(states_sql(db, "_days"), external_tables=[table])
    return {SeriesDay(i, r, d): DayState(v, n, total, close, (obs, rev, eid) if n else ())
            for i, r, d, v, n, total, close, obs, rev, eid in rows}


# The parts, each a small session table (one row per series-day) before they are joined: 18.16 joins
# subqueries and groups a UNION ALL slower (docs/clickhouse-dialect.md, "nested-joins").
_STATE = "version, events, value_sum, close_value, close_obs, close_revision, close_event_id"
_DELTA = ("delta_rows, added, added_sum, top_value, top_obs, top_revision, top_event_id, removed, removed_sum, "
          "removed_ranks, has_delta")
JOINED = f"""
    SELECT indicator, region, day, rows, {_STATE}, {_DELTA}, before_rows FROM (
        SELECT indicator, region, day, rows, {_STATE}, {_DELTA} FROM (
            SELECT indicator, region, day, rows, {_STATE} FROM _after
            ANY LEFT JOIN _states USING (indicator, region, day)
        ) AS with_states
        ANY LEFT JOIN _deltas USING (indicator, region, day)
    ) AS with_deltas
    ANY LEFT JOIN (SELECT indicator, region, day, rows AS before_rows FROM _before) AS before
    USING (indicator, region, day)"""
# Steps 2-3 for each counted day, in ClickHouse: after the events INSERT, the day's rows (``rows``),
# its state, its new rows summed up (DELTAS) and what ``begin`` counted (``_before``), joined; then
#   kind 0: nothing new and the state reflects all rows (up to date);
#   kind 1: the state reflects exactly the rows counted before, and nothing but our rows came since:
#           the new rows are applied (+1: count, sum, closing candidate; -1: withdrawn);
#   kind 2: anything else, or a -1 that withdraws the day's close (the next one is not in the
#           state): recomputed from all its rows.
# A day with a state always has rows (rows are never removed), so the counted days are all of them.
# Sums are taken as (sum + added) - removed.
# Aliases never repeat a column name: 18.16 substitutes aliases throughout their SELECT.
SETTLED = """
    SELECT indicator, region, day, rows AS new_version,
           multiIf(has_delta = 0 AND version = rows, 0,
                   has_delta = 1 AND version = before_rows AND before_rows + delta_rows = rows AND NOT withdrawn, 1,
                   2) AS kind,
           toInt64(events) + toInt64(added) - toInt64(removed) AS live,
           if(live = 0, 0, (value_sum + added_sum) - removed_sum) AS new_sum,
           if(live = 0, 0, if(take_top, top_value, close_value)) AS new_close_value,
           if(live = 0, 0, new_obs) AS new_close_obs, if(live = 0, 0, new_rev) AS new_close_revision,
           if(live = 0, '', new_eid) AS new_close_event_id
    FROM (
        SELECT *,
               added > 0 AND (events = 0 OR (top_obs, top_revision, top_event_id) > (close_obs, close_revision,
                                                                                  close_event_id)) AS take_top,
               if(take_top, top_obs, close_obs) AS new_obs, if(take_top, top_revision, close_revision) AS new_rev,
               if(take_top, top_event_id, close_event_id) AS new_eid,
               (take_top OR events > 0) AND has(removed_ranks, (new_obs, new_rev, new_eid)) AS withdrawn
        FROM ({joined})
    )"""


def begin(client: Any, db: str, *, topology: Topology = SINGLE_NODE) -> None:
    """Step 1 for the session's ``_obs``: count, look up, insert the rows not stored yet (before
    the events INSERT). What it counted waits in the session's ``_before`` for ``settle`` on the
    same connection. """
    # Counted before the lookup: a copy of one of our rows that another writer adds in between is
    # then an extra row at settle time, and the day is recomputed rather than updated.
    replace_session_table(client, "_obs_days", "SELECT DISTINCT indicator, region, day FROM _obs")
    replace_session_table(client, "_before", counts_sql(db, "_obs_days", topology))
    replace_session_table(client, "_new", new_rows_sql(db, topology))
    client.execute(f"INSERT INTO {db}.{OBSERVATIONS} ({_COLUMNS}) SELECT {_COLUMNS} FROM _new")


def stage_missing(client: Any, db: str, rows: str, *, topology: Topology = SINGLE_NODE) -> int:
    """``{rows}_new``: the rows of the session table ``rows`` (distinct, OBSERVATION_COLUMNS) not
    stored yet; returns how many."""
    replace_session_table(client, f"{rows}_days", f"SELECT DISTINCT indicator, region, day FROM {rows}")
    replace_session_table(client, f"{rows}_new", new_rows_sql(db, topology, rows, f"{rows}_days"))
    [(missing,)] = client.execute(f"SELECT count() FROM {rows}_new")
    return int(missing)


def store_missing(client: Any, db: str, rows: str, *, topology: Topology = SINGLE_NODE) -> int:
    """Store the rows of the session table ``rows`` that are not stored yet, outside ``begin``'s
    count: a day they land in is recomputed by the next ``settle``. Returns how many were missing."""
    missing = stage_missing(client, db, rows, topology=topology)
    if missing:
        client.execute(f"INSERT INTO {db}.{OBSERVATIONS} ({_COLUMNS}) SELECT {_COLUMNS} FROM {rows}_new")
    return missing


def settle(client: Any, db: str, *, topology: Topology = SINGLE_NODE) -> dict[str, int]:
    """Steps 2-3 for the days of ``_obs``, after ``begin`` on the same connection, in ClickHouse:
    only the numbers of days applied and recomputed come back."""
    replace_session_table(client, "_touched", "SELECT DISTINCT indicator, region, day FROM _obs")
    replace_session_table(client, "_after", counts_sql(db, "_touched", topology))
    replace_session_table(client, "_states", states_sql(db, "_touched", topology))
    replace_session_table(client, "_deltas", DELTAS)
    replace_session_table(client, "_settled", SETTLED.format(joined=JOINED))
    client.execute(f"INSERT INTO {db}.daily_series ({', '.join(STATE_COLUMNS)}) "
                   "SELECT indicator, region, day, new_version, live, new_sum, new_close_value, "
                   "toDateTime(new_close_obs), new_close_revision, new_close_event_id FROM _settled WHERE kind = 1")
    [(applied, stale)] = client.execute("SELECT countIf(kind = 1), countIf(kind = 2) FROM _settled")
    if stale:
        client.execute(recompute_sql(db, days_where("(SELECT indicator, region, day FROM _settled WHERE kind = 2)",
                                                    topology)))
    return {"applied": applied, "recomputed": stale}


# One row per day, in STATE_COLUMNS order. All rows of one revision (its +1, its -1, copies) sit in
# that revision's own day, so grouping by revision inside the chosen days sees all of them.
# Aliases never repeat a column name: 18.16 substitutes aliases inside aggregates.
RECOMPUTE = """
    SELECT ind, reg, dd, sum(n_rows), countIf(is_live), sumIf(v, is_live),
           argMaxIf(v, (obs, revision, event_id), is_live), maxIf(obs, is_live),
           argMaxIf(revision, (obs, revision, event_id), is_live),
           argMaxIf(event_id, (obs, revision, event_id), is_live)
    FROM (
        SELECT agency, event_id, revision, any(indicator) AS ind, any(region) AS reg, any(day) AS dd,
               any(observed_at) AS obs, any(value) AS v, count() AS n_rows, min(sign) > 0 AS is_live
        FROM {db}.{observations}
        WHERE {where}
        GROUP BY agency, event_id, revision
    )
    GROUP BY ind, reg, dd
"""


def recompute_sql(db: str, where: str) -> str:
    """INSERT the recomputation of the days matching ``where`` into daily_series, inside ClickHouse."""
    return (f"INSERT INTO {db}.daily_series ({', '.join(STATE_COLUMNS)}) "
            f"{RECOMPUTE.format(db=db, observations=OBSERVATIONS, where=where)}")


def recompute(client: Any, db: str, days: Iterable[SeriesDay]) -> int:
    """Rewrite the ``daily_series`` rows of ``days`` from all their observations; returns how many."""
    table = _days_table(days)
    if table["data"]:
        client.execute(recompute_sql(db, days_where("_days")), external_tables=[table])
    return len(table["data"])


def _observations_from_events(db: str, tz: str, sign: int, source: str) -> str:
    """INSERT observation rows with ``sign`` for the events rows ``source`` (a FROM ... clause) yields."""
    return f"INSERT INTO {db}.{OBSERVATIONS} ({_COLUMNS}) {observation_rows_sql(tz, sign, source)}"


def rebuild(client: Any, db: str, tz: str, *, chunks: int = 16) -> None:
    """Fill the observations and ``daily_series`` from ``events`` (events stored before migration
    0006, or written straight into ``events`` by the query benchmark). In ``chunks`` slices of the
    (agency, event_id) hash, so no GROUP BY holds the whole table. Idempotent: copies of
    observation rows change nothing. Run it with no worker writing (as migrations are)."""
    for i in range(chunks):
        part = f"cityHash64(agency, event_id) % {chunks} = {i}"
        client.execute(_observations_from_events(db, tz, 1, f"FROM {db}.events WHERE {part}"))
        # A -1 row for every revision below its key's highest.
        client.execute(_observations_from_events(db, tz, -1, f"""
            FROM {db}.events
            ALL INNER JOIN (SELECT agency, event_id, max(revision) AS top_revision FROM {db}.events
                            WHERE {part} GROUP BY agency, event_id HAVING count() > 1) AS tops
            USING (agency, event_id)
            WHERE {part} AND revision < top_revision"""))
    # Then every series-day, one series-year at a time: a range of the primary key in one partition,
    # so memory is bounded by a series-year; the fastest slicing measured (docs/benchmarks.md, "Rebuilding
    # the per-day series").
    for series, year in client.execute(
            f"SELECT DISTINCT series, toYear(day) FROM {db}.{OBSERVATIONS} ORDER BY 1, 2"):
        client.execute(recompute_sql(db, "series = %(series)s AND toYear(day) = %(year)s"),
                       {"series": series, "year": year})
    log.info("rebuilt the per-day series of %s from its events", db)
