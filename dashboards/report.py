"""Monthly, quarterly and yearly reports (月报 / 季报 / 年报) for the officials who read them.

A report is the numbers of ``highland progress`` on one day, told for a period: the summary counts,
the indicators that slipped during the period first, every indicator with its actual, expected and
target and a small chart of its path, and the feeds that stopped reporting. This module gathers and
orders those facts; dashboards/report_render.py turns them into HTML or PDF (docs/reports.md).

"Slipped" compares each indicator's status on the day before the period began with its status on
the report's day: a move to a worse status (on_track < at_risk < off_track) is a slip. An indicator
without data at the start (no_data) that arrives off track also slipped: it was never on track.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from highland.catalog.domain import ProgressRow
from highland.catalog.i18n import report_day
from highland.catalog.models import Catalog
from highland.sinks.progress import progress


class Period(StrEnum):
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


# Worse is larger. no_data and pending are not on the scale: an indicator cannot slip into silence
# (a silent feed is reported as stopped instead), and one that gains a status off track slipped
# from "unknown".
SEVERITY = {"on_track": 0, "at_risk": 1, "off_track": 2}
# Every status a row can carry, in the order a report counts and lists them (worst first).
STATUSES = ("off_track", "at_risk", "on_track", "pending", "no_data")


@dataclass(frozen=True)
class Point:
    """One sample of an indicator's path: actual and expected on ``day`` (either may be unknown)."""

    day: date
    actual: float | None
    expected: float | None


@dataclass(frozen=True)
class Entry:
    """One indicator in a report: its numbers on the report's day, its status at the period's
    start, and the path of actual and expected up to the report's day."""

    row: ProgressRow
    status_before: str
    path: tuple[Point, ...]
    stopped_since: date | None  # the last observation's date when the feed stopped, else None

    @property
    def slipped(self) -> bool:
        now = SEVERITY.get(self.row.status)
        if now is None:
            return False
        before = SEVERITY.get(self.status_before)
        return now > 0 and (before is None or now > before)


@dataclass(frozen=True)
class Report:
    as_of: date
    period: Period
    start: date  # first day of the period
    entries: tuple[Entry, ...]  # slipped first (worst first), then by status, then catalog order

    @property
    def slipped(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.slipped)

    @property
    def stopped(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.stopped_since is not None)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for e in self.entries:
            out[e.row.status] += 1
        return out


def period_start(as_of: date, period: Period) -> date:
    """The first day of the month, quarter or year that holds ``as_of``."""
    if period is Period.MONTH:
        return as_of.replace(day=1)
    if period is Period.QUARTER:
        return date(as_of.year, 3 * ((as_of.month - 1) // 3) + 1, 1)
    return date(as_of.year, 1, 1)


def sample_days(first: date, as_of: date) -> list[date]:
    """Month ends from ``first``'s month through the month before ``as_of``, then ``as_of`` itself:
    the chart's x positions."""
    days: list[date] = []
    cursor = first.replace(day=1)
    while True:
        nxt = (cursor.replace(day=28) + timedelta(days=4)).replace(day=1)
        end = nxt - timedelta(days=1)
        if end >= as_of:
            break
        days.append(end)
        cursor = nxt
    days.append(as_of)
    return days


def chart_days(first: date, last: date, as_of: date) -> list[date]:
    """The chart's x positions for a plan whose first day is ``first`` and last day ``last``: month
    ends from ``first`` through the report's day, or through ``last`` when the report comes later,
    then the report's day. Each is one read of progress, so a report long after the plan (a year
    mistyped, 2109 for 2019) costs what one on the plan's last day does; before the plan: its day."""
    if as_of < first:
        return [as_of]
    days = sample_days(first, min(as_of, last))
    return days if days[-1] == as_of else [*days, as_of]


def stopped_since(row: ProgressRow, tz: str) -> date | None:
    """The day of the feed's last observation when the feed stopped (``row.stale``: more than one
    reporting cadence passed since it, catalog/domain.py ``is_stale``), else None."""
    if not row.stale or row.last_observed_at is None:
        return None
    return report_day(row.last_observed_at, tz)


def _order(entries: list[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: (not e.slipped, STATUSES.index(e.row.status))))  # stable


def build(catalog: Catalog, as_of: date, period: Period, now: list[ProgressRow], before: list[ProgressRow],
          paths: dict[str, list[Point]]) -> Report:
    """Assemble a report from progress rows on the report's day and on the day before its period."""
    status_before = {r.indicator: r.status for r in before}
    tz = catalog.plan.timezone
    entries = [Entry(row, status_before.get(row.indicator, "no_data"), tuple(paths.get(row.indicator, ())),
                     stopped_since(row, tz)) for row in now]
    return Report(as_of, period, period_start(as_of, period), _order(entries))


def gather(client: Any, db: str, catalog: Catalog, as_of: date, period: Period) -> Report:
    """Read every number a report needs: progress on each sample day from the plan's first year."""
    days = chart_days(date(catalog.plan.baseline_year + 1, 1, 1), date(catalog.plan.target_year, 12, 31), as_of)
    paths: dict[str, list[Point]] = {i.code: [] for i in catalog.indicators}
    rows_on: dict[date, list[ProgressRow]] = {}
    for day in days:
        rows_on[day] = progress(client, db, catalog, day)
        for r in rows_on[day]:
            paths[r.indicator].append(Point(day, r.actual, r.expected))
    start = period_start(as_of, period)
    before = progress(client, db, catalog, start - timedelta(days=1))
    return build(catalog, as_of, period, rows_on[as_of], before, paths)
