"""The plan's trajectory and the status rules of CONTRACT.md §2, as pure functions.

Time is measured in plan years: position ``p(D)`` is the number of years elapsed since the end
of the indicator's baseline year, counting the current year by the fraction of its days that are
over at the end of day ``D`` (31 December gives a whole year).

The path starts at an ``Anchor`` (a value at a position) and reaches the target value at
``p = target.year - baseline.year``. The anchor is the plan's baseline at ``p = 0`` where the plan
states one; where it does not (``baseline: from_data``), the caller resolves it from the data
(sinks/progress.py): the agency's reported value for the end of the baseline year (``p = 0``), else
its first report, anchored where that report was (docs/numbers.md, "Baselines from data"). Until
then the path is unknown and the status is ``pending``.

- level / index / ratio: ``expected(D)`` is the path read at ``p(D)``.
- flow: the path gives each year's annual total (read at whole positions); ``expected(D)`` is
  that total times the fraction of D's year elapsed.

Before the anchor the path holds the anchor's value; after the target year it holds the target
(the plan states nothing beyond its own period). An anchor already at or beyond the target (a first
report of 100 ms against "降至150毫秒以内") makes the target itself the bar at every date: the plan asks
no more than its target, and a path from 100 up to 150 would ask for more early on. A flow anchored
on a first report has no expectation in that report's own year: its total is the anchor, not
something measured against it.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from highland.catalog.models import Direction, Indicator, Kind, Shape, Thresholds


class Status(StrEnum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    OFF_TRACK = "off_track"
    # Data, but no path to measure it against yet: the baseline is taken from data and not known
    # (a flow in its first reported year) or a growth target has no previous year's total.
    PENDING = "pending"
    NO_DATA = "no_data"


class BaselineSource(StrEnum):
    PLAN = "plan"  # stated by the plan
    REPORTED = "reported"  # the agency's reported value for the end of the baseline year
    FIRST_REPORT = "first_report"  # the agency's first report after the baseline year
    PENDING = "pending"  # taken from data, and no data yet
    NONE = "none"  # not needed: a floor held at every date, or a growth rate on last year


@dataclass(frozen=True)
class Anchor:
    """Where a path starts: ``value`` at ``position`` plan years after the baseline year's end.

    ``day`` is the report the value comes from (the last day of the year for a flow's total).
    """

    position: float
    value: float
    source: BaselineSource
    day: date | None = None


def year_fraction(d: date) -> float:
    """Fraction of d's year that is over at the end of day d."""
    days = 366 if calendar.isleap(d.year) else 365
    return d.timetuple().tm_yday / days


def position(ind: Indicator, as_of: date) -> float:
    return (as_of.year - 1 - ind.baseline.year) + year_fraction(as_of)


def plan_anchor(ind: Indicator) -> Anchor | None:
    """The anchor the plan itself states; None where the baseline is taken from data."""
    stated = ind.baseline.stated
    return None if stated is None else Anchor(0.0, stated, BaselineSource.PLAN)


def anchor_for(ind: Indicator, resolved: Anchor | None = None) -> Anchor | None:
    """The plan's anchor, else the one resolved from data (None: pending)."""
    return plan_anchor(ind) or resolved


def span(ind: Indicator) -> int:
    return ind.target.year - ind.baseline.year


def path_value(ind: Indicator, at: float, anchor: Anchor | None = None) -> float | None:
    """The trajectory at position ``at``; None for growth targets and unknown baselines."""
    if ind.trajectory is Shape.GROWTH:
        return None
    target = ind.target.value
    assert target is not None  # guaranteed by the model for every shape but GROWTH
    if ind.trajectory is Shape.FLAT:
        return target
    start = anchor_for(ind, anchor)
    if start is None:
        return None
    if start.position >= span(ind) or _meets(ind, start.value, target):
        return target  # reached already: the plan asks no more than its target, and no less
    share = min(max((at - start.position) / (span(ind) - start.position), 0.0), 1.0)
    if ind.trajectory is Shape.COMPOUND and start.value > 0:
        return start.value * (target / start.value) ** share
    return start.value + (target - start.value) * share


def _meets(ind: Indicator, value: float, target: float) -> bool:
    return value <= target if ind.direction is Direction.DOWN else value >= target


def expected(ind: Indicator, as_of: date, prior_year_actual: float | None = None,
             anchor: Anchor | None = None) -> float | None:
    """``expected(D)`` of CONTRACT.md §2; None where the plan gives no number for D yet.

    ``prior_year_actual`` is needed only by GROWTH targets (x % more than last year); ``anchor``
    only where the baseline is taken from data.
    """
    if ind.kind is Kind.FLOW:
        annual = annual_expected(ind, as_of.year, prior_year_actual, anchor)
        return None if annual is None else annual * year_fraction(as_of)
    return path_value(ind, position(ind, as_of), anchor)


def annual_expected(ind: Indicator, year: int, prior_year_actual: float | None = None,
                    anchor: Anchor | None = None) -> float | None:
    """A flow's expected annual total for ``year``."""
    if ind.trajectory is Shape.GROWTH:
        if prior_year_actual is None or ind.annual_growth is None:
            return None
        return prior_year_actual * (1 + ind.annual_growth)
    at = float(year - ind.baseline.year)
    start = anchor_for(ind, anchor)
    if start is not None and start.source is BaselineSource.FIRST_REPORT and at <= start.position:
        return None  # the first reported year is the anchor itself
    return path_value(ind, at, anchor)


def performance(ind: Indicator, actual: float, expected_value: float) -> float:
    """actual/expected, inverted where lower is better; 1.0 means exactly on the path."""
    if ind.direction is Direction.DOWN:
        actual, expected_value = expected_value, actual
    if expected_value <= 0:
        return 1.0 if actual >= expected_value else 0.0
    return actual / expected_value


def status(ind: Indicator, actual: float | None, expected_value: float | None,
           thresholds: Thresholds) -> Status:
    if actual is None:
        return Status.NO_DATA
    if expected_value is None:
        return Status.PENDING
    ratio = performance(ind, actual, expected_value)
    if ratio >= thresholds.on_track:
        return Status.ON_TRACK
    if ratio >= thresholds.at_risk:
        return Status.AT_RISK
    return Status.OFF_TRACK


def projected(ind: Indicator, as_of: date, actual: float | None,
              expected_value: float | None, anchor: Anchor | None = None) -> float | None:
    """The value expected at the target date if the current pace holds.

    - flow: the target annual total scaled by today's performance (actual/expected): a feed at
      90 % of its year-to-date path is projected to reach 90 % of the target year's total;
    - level / index / ratio: the straight line from the anchor through today's actual, extended to
      the end of the target year (FLAT targets, or no anchor yet: today's actual).
    """
    if actual is None:
        return None
    target = ind.target.value
    if ind.kind is Kind.FLOW:
        if expected_value is None or target is None or expected_value <= 0:
            return None
        return target * (actual / expected_value)
    start = anchor_for(ind, anchor)
    if ind.trajectory is Shape.FLAT or target is None or start is None:
        return actual
    elapsed = position(ind, as_of) - start.position
    remaining = span(ind) - start.position
    if elapsed <= 0 or elapsed >= remaining:
        return actual
    return start.value + (actual - start.value) * remaining / elapsed
