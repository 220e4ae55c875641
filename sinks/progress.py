"""``actual(D)`` from ClickHouse and the plan-side numbers from the catalog: CONTRACT.md §2.

``query_actuals`` reads the per-day series the writer keeps (``daily_series``, sinks/daily_series.py):
a flow's year-to-date is a sum of days, a level's value per region the close of its latest day, so
the cost follows the number of series-days, not of events. ``reference_actuals`` computes the same
numbers straight from ``events``, deduplicating by (agency, event_id) at query time (latest revision
wins); it scans every event and is kept as the definition the fast path is tested and verified
against (``highland verify``). Dates are the plan's local dates (its timezone, Asia/Shanghai): an event observed at
2020-12-31T20:00:00+00:00 belongs to 2021 in Chongqing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from highland.catalog.domain import ProgressRow, is_stale
from highland.catalog.models import CITY_WIDE, Catalog, Direction, Indicator, Kind, Shape
from highland.catalog.trajectory import Anchor, BaselineSource, Status, anchor_for, expected, projected, status

# One row per (agency, event_id): the latest revision of every accepted observation. For equal
# revisions (exact re-deliveries) the copies are identical; argMax picks any. Aliases differ from
# column names on purpose: 18.16 substitutes aliases inside other aggregates (docs/clickhouse-dialect.md,
# "alias-substitution"). No filter runs before the deduplication: a revision may move an event to
# another indicator or region.
LATEST_EVENTS = """
    SELECT agency, event_id,
           max(revision) AS last_revision,
           argMax(indicator, revision) AS ind,
           argMax(region, revision) AS reg,
           argMax(value, revision) AS val,
           argMax(observed_at, revision) AS obs
    FROM {db}.events
    GROUP BY agency, event_id
"""


def latest_events_sql(db: str) -> str:
    return LATEST_EVENTS.format(db=db)


def _in_list(codes: list[str]) -> str:
    """A SQL list of catalog codes (safe to inline: codes match ``[a-z][a-z0-9_]*``). An empty list
    is ('') and matches nothing: 18.16 rejects ``IN ()``."""
    return "(" + ", ".join(f"'{c}'" for c in codes or [""]) + ")"


def city_level_sql(value: str, region: str = "reg") -> str:
    """The city's level from its regions' latest ``value`` (an aggregate over one indicator's regions;
    docs/numbers.md, "level"). A city-wide report and district reports are never added together: the
    latest city-wide report, once there is one, is the city's value (the target is city-wide, and so
    is the figure the agency answers for); district reports are its breakdown, summed into the city's
    value only while no city-wide report exists."""
    city = f"{region} = '{CITY_WIDE}'"
    return f"if(countIf({city}) > 0, sumIf({value}, {city}), sumIf({value}, NOT {city}))"


CITY_LEVEL = city_level_sql("latest")


def flow_totals_sql(db: str, tz: str, flows: list[str]) -> str:
    """Year-to-date totals for D's year and the full previous year, per flow indicator."""
    return f"""
        SELECT ind,
               sumIf(val, toYear(obs, '{tz}') = %(year)s AND toDate(obs, '{tz}') <= %(as_of)s) AS ytd,
               sumIf(val, toYear(obs, '{tz}') = %(year)s - 1) AS prior_year,
               countIf(toYear(obs, '{tz}') = %(year)s AND toDate(obs, '{tz}') <= %(as_of)s) AS n,
               countIf(toYear(obs, '{tz}') = %(year)s - 1) AS n_prior,
               toTimeZone(maxIf(obs, toDate(obs, '{tz}') <= %(as_of)s), 'UTC') AS last_observed
        FROM ({latest_events_sql(db)})
        WHERE ind IN {_in_list(flows)}
        GROUP BY ind
    """


def level_values_sql(db: str, tz: str, levels: list[str]) -> str:
    """Latest observation per (indicator, region) at or before D, combined over regions (CITY_LEVEL).

    Latest = greatest observed_at; on a tie the greatest revision, then event_id (deterministic).
    """
    return f"""
        SELECT ind, {CITY_LEVEL} AS total, count() AS regions, toTimeZone(max(last_obs), 'UTC') AS last_observed
        FROM (
            SELECT ind, reg,
                   argMax(val, (obs, last_revision, event_id)) AS latest,
                   max(obs) AS last_obs
            FROM ({latest_events_sql(db)})
            WHERE ind IN {_in_list(levels)} AND toDate(obs, '{tz}') <= %(as_of)s
            GROUP BY ind, reg
        )
        GROUP BY ind
    """


# One row per series-day: the latest recomputation (highest version) wins. FINAL merges the rows of
# a key at read time, so this is exact whether or not background merges ran (and on 18.16 faster than
# argMax per key: docs/clickhouse-dialect.md, "final"); on a cluster all rows of a key share a shard
# (sinks/cluster.py). Aliases differ from the column names ("alias-substitution").
DAILY = """
    SELECT indicator AS ind, region AS reg, day AS d, events AS n, value_sum AS total,
           close_value AS close, close_observed_at AS close_obs
    FROM {db}.daily_series FINAL
    WHERE {where}
"""


def daily_sql(db: str, where: str) -> str:
    return DAILY.format(db=db, where=where)


def daily_flow_totals_sql(db: str, flows: list[str]) -> str:
    """Year-to-date totals for D's year and the full previous year, per flow indicator."""
    return f"""
        SELECT ind,
               sumIf(total, toYear(d) = %(year)s) AS ytd,
               sumIf(total, toYear(d) = %(year)s - 1) AS prior_year,
               sumIf(n, toYear(d) = %(year)s) AS n_ytd,
               sumIf(n, toYear(d) = %(year)s - 1) AS n_prior,
               toTimeZone(maxIf(close_obs, n > 0), 'UTC') AS last_observed
        FROM ({daily_sql(db, f"indicator IN {_in_list(flows)} AND day <= %(as_of)s")})
        GROUP BY ind
    """


def daily_level_values_sql(db: str, levels: list[str]) -> str:
    """Per (indicator, region) the close of the latest day at or before D with a live observation,
    combined over regions (CITY_LEVEL)."""
    return f"""
        SELECT ind, {CITY_LEVEL} AS total, count() AS regions, toTimeZone(max(last_obs), 'UTC') AS last_observed
        FROM (
            SELECT ind, reg, argMax(close, d) AS latest, max(close_obs) AS last_obs
            FROM ({daily_sql(db, f"indicator IN {_in_list(levels)} AND day <= %(as_of)s")})
            WHERE n > 0
            GROUP BY ind, reg
        )
        GROUP BY ind
    """


@dataclass(frozen=True)
class Actual:
    value: float
    last_observed: datetime | None
    prior_year: float | None = None  # flows only: the whole previous year's total (None: no report)


def _kinds(catalog: Catalog) -> tuple[list[str], list[str]]:
    flows = [i.code for i in catalog.indicators if i.kind is Kind.FLOW]
    return flows, [i.code for i in catalog.indicators if i.kind is not Kind.FLOW]


def _read(client: Any, flows_sql: str, levels_sql: str, as_of: date) -> tuple[dict[str, Actual], dict[str, datetime]]:
    """actual(D) per indicator with data, and the latest observation at or before D of every
    indicator that ever reported (a flow silent all of D's year has no actual but has a last report)."""
    params = {"year": as_of.year, "as_of": as_of}
    out: dict[str, Actual] = {}
    seen: dict[str, datetime] = {}
    for code, ytd, prior, n, n_prior, last in client.execute(flows_sql, params):
        if last is not None and last.timestamp() > 0:  # maxIf over no row gives the epoch, not NULL
            seen[code] = last
        if n:  # a flow with no observation in D's year yet has no data (not a zero)
            out[code] = Actual(ytd, last, prior if n_prior else None)
    for code, value, _regions, last in client.execute(levels_sql, params):
        out[code] = Actual(value, last)
        seen[code] = last
    return out, seen


def query_series(client: Any, db: str, catalog: Catalog, as_of: date) -> tuple[dict[str, Actual], dict[str, datetime]]:
    """``query_actuals`` and the last report of every indicator, in the same two reads."""
    flows, others = _kinds(catalog)
    return _read(client, daily_flow_totals_sql(db, flows), daily_level_values_sql(db, others), as_of)


def query_actuals(client: Any, db: str, catalog: Catalog, as_of: date) -> dict[str, Actual]:
    """actual(D) per indicator with data, from the per-day series."""
    return query_series(client, db, catalog, as_of)[0]


def reference_actuals(client: Any, db: str, catalog: Catalog, as_of: date) -> dict[str, Actual]:
    """The same numbers straight from ``events`` (every event deduplicated at query time)."""
    tz = catalog.plan.timezone
    flows, others = _kinds(catalog)
    return _read(client, flow_totals_sql(db, tz, flows), level_values_sql(db, tz, others), as_of)[0]


def _period(ind: Indicator, as_of: date) -> str:
    if ind.kind is Kind.FLOW:
        return f"{as_of.year}-01-01..{as_of.isoformat()}"
    return f"as of {as_of.isoformat()}"


def _pct_of_target(ind: Indicator, actual: float | None) -> float | None:
    target = ind.target.value
    if actual is None or target is None:
        return None
    if ind.direction is Direction.DOWN:
        return 100.0 * target / actual if actual > 0 else None
    return 100.0 * actual / target if target else None


def progress_row(catalog: Catalog, ind: Indicator, as_of: date, found: Actual | None,
                 last_report: datetime | None = None, resolved: Anchor | None = None) -> ProgressRow:
    """``last_report``: the latest observation at or before D, when there is none in ``found``
    (a flow that has not reported in D's year); ``resolved``: the baseline taken from data, where
    the plan states none (sinks/baselines.py)."""
    actual = found.value if found else None
    prior = found.prior_year if found else None
    exp = expected(ind, as_of, prior, resolved)
    st = status(ind, actual, exp, catalog.thresholds_for(ind))
    anchor = anchor_for(ind, resolved)
    seen = found.last_observed if found and found.last_observed else last_report
    reported = seen.astimezone(ZoneInfo(catalog.plan.timezone)).date() if seen else None
    return ProgressRow(
        indicator=ind.code, name_en=ind.name_en, kind=ind.kind.value, unit=ind.unit, agency=ind.agency,
        period=_period(ind, as_of), actual=actual, expected=exp, target=ind.target.value,
        target_year=ind.target.year, baseline=anchor.value if anchor else None,
        baseline_source=(anchor.source if anchor else _no_anchor(ind)).value,
        baseline_day=anchor.day.isoformat() if anchor and anchor.day else None,
        pct_of_target=_pct_of_target(ind, actual), status=st.value,
        projected=projected(ind, as_of, actual, exp, resolved) if st is not Status.NO_DATA else None,
        last_observed_at=seen.isoformat() if seen else None,
        stale=is_stale(ind.cadence_days, reported, as_of),
    )


def _no_anchor(ind: Indicator) -> BaselineSource:
    """Why an indicator has no anchor: a floor or a growth rate needs none; else it is pending."""
    needed = ind.trajectory not in (Shape.FLAT, Shape.GROWTH)
    return BaselineSource.PENDING if needed else BaselineSource.NONE


def default_as_of(catalog: Catalog, today: date) -> date:
    """Today in the plan's calendar, but never past the plan's last day (it states nothing after)."""
    end = date(catalog.plan.target_year, 12, 31)
    return min(today, end)


def progress(client: Any, db: str, catalog: Catalog, as_of: date,
             anchors: dict[str, Anchor] | None = None) -> list[ProgressRow]:
    """Every indicator as of ``as_of``; ``anchors``: baselines from data, read here when not given."""
    # Imported here: sinks/baselines.py builds on this module's queries.
    from highland.sinks.baselines import query_baselines

    found, seen = query_series(client, db, catalog, as_of)
    anchors = query_baselines(client, db, catalog) if anchors is None else anchors
    return [progress_row(catalog, ind, as_of, found.get(ind.code), seen.get(ind.code), anchors.get(ind.code))
            for ind in catalog.indicators]
