"""Baselines the plan does not state, taken from the data (docs/numbers.md, "Baselines from data").

An indicator whose catalog entry says ``baseline: {year: Y, value: from_data}`` starts its path at:

1. the agency's reported value for the end of year Y: for a level, index or ratio its value as of
   31 December Y (``actual(D)`` at that day, so a regional level is combined as every level is);
   for a flow the total of year Y. Anchored at the end of Y, as a stated baseline is;
2. else its first report after year Y: for a level, index or ratio its value at the end of the
   first day with an observation, anchored at that day; for a flow the total of the first year with
   an observation, anchored at the end of that year (that year itself has no expectation: it is
   the anchor, so its status is ``pending``);
3. else nothing yet: the status is ``no_data`` (no observation at all).

The anchor is computed from all stored data, not only what is known as of a progress date: a value
for the end of Y or a first report is a fact about that day, and every as-of date at which the
indicator has data lies at or after its anchor's day. Both ways of computing ``actual(D)`` give
their own baselines (``query_baselines`` from the per-day series, ``reference_baselines`` from every
event deduplicated at query time); ``highland verify`` compares them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from highland.catalog.models import Catalog, Indicator, Kind, Shape
from highland.catalog.trajectory import Anchor, BaselineSource, position
from highland.sinks.progress import Actual, daily_sql, latest_events_sql, query_actuals, reference_actuals

ActualsAt = Callable[[Any, str, Catalog, date], dict[str, Actual]]
FirstDays = Callable[[Any, str, Catalog, list[str], date], dict[str, date]]


def needs_data_baseline(ind: Indicator) -> bool:
    """Taken from data where the path needs it: a flat bar or a growth rate has no start value."""
    return ind.baseline_from_data and ind.trajectory not in (Shape.FLAT, Shape.GROWTH)


def _codes(codes: Iterable[str]) -> str:
    """A SQL list of catalog codes (safe to inline: codes match ``[a-z][a-z0-9_]*``)."""
    return "(" + ", ".join(f"'{c}'" for c in codes) + ")"


def series_first_days(client: Any, db: str, catalog: Catalog, codes: list[str], after: date) -> dict[str, date]:
    """Per indicator, the first plan day after ``after`` with a live observation (per-day series)."""
    sql = f"""
        SELECT ind, min(d) FROM ({daily_sql(db, f"indicator IN {_codes(codes)} AND day > %(after)s")})
        WHERE n > 0 GROUP BY ind"""
    return {code: day for code, day in client.execute(sql, {"after": after})}


def event_first_days(client: Any, db: str, catalog: Catalog, codes: list[str], after: date) -> dict[str, date]:
    """The same from every event, deduplicated at query time (the latest revision of each counts)."""
    tz = catalog.plan.timezone
    sql = f"""
        SELECT ind, min(toDate(obs, '{tz}')) FROM ({latest_events_sql(db)})
        WHERE ind IN {_codes(codes)} AND toDate(obs, '{tz}') > %(after)s GROUP BY ind"""
    return {code: day for code, day in client.execute(sql, {"after": after})}


def _subset(catalog: Catalog, indicators: list[Indicator]) -> Catalog:
    """The catalog with only ``indicators``: the actuals queries then read only their series."""
    return catalog.model_copy(update={"indicators": tuple(indicators)})


def resolve_baselines(client: Any, db: str, catalog: Catalog, actuals_at: ActualsAt,
                      first_days: FirstDays) -> dict[str, Anchor]:
    """The anchor of every indicator whose baseline is taken from data and can be, by code."""
    anchors: dict[str, Anchor] = {}
    by_year: dict[int, list[Indicator]] = defaultdict(list)
    for ind in catalog.indicators:
        if needs_data_baseline(ind):
            by_year[ind.baseline.year].append(ind)
    for year, inds in sorted(by_year.items()):
        end = date(year, 12, 31)
        found = actuals_at(client, db, _subset(catalog, inds), end)
        rest = []
        for ind in inds:
            if ind.code in found:
                anchors[ind.code] = Anchor(0.0, found[ind.code].value, BaselineSource.REPORTED, end)
            else:
                rest.append(ind)
        if rest:
            anchors.update(_first_reports(client, db, catalog, rest, end, actuals_at, first_days))
    return anchors


def _first_reports(client: Any, db: str, catalog: Catalog, inds: list[Indicator], end: date,
                   actuals_at: ActualsAt, first_days: FirstDays) -> dict[str, Anchor]:
    firsts = first_days(client, db, catalog, [i.code for i in inds], end)
    at_day: dict[date, list[Indicator]] = defaultdict(list)
    for ind in inds:
        first = firsts.get(ind.code)
        if first is not None:  # a flow's anchor is its first year's total, read on that year's last day
            at_day[date(first.year, 12, 31) if ind.kind is Kind.FLOW else first].append(ind)
    anchors = {}
    for day, group in sorted(at_day.items()):
        found = actuals_at(client, db, _subset(catalog, group), day)
        for ind in group:
            if ind.code in found:
                anchors[ind.code] = Anchor(position(ind, day), found[ind.code].value, BaselineSource.FIRST_REPORT, day)
    return anchors


def query_baselines(client: Any, db: str, catalog: Catalog) -> dict[str, Anchor]:
    """Baselines from data, read from the per-day series the worker keeps."""
    return resolve_baselines(client, db, catalog, query_actuals, series_first_days)


def reference_baselines(client: Any, db: str, catalog: Catalog) -> dict[str, Anchor]:
    """The same from every event deduplicated at query time (the definition)."""
    return resolve_baselines(client, db, catalog, reference_actuals, event_first_days)
