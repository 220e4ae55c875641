"""The plan's trajectory and the status rules of CONTRACT.md §2, as pure functions.

Time is measured in plan years: position ``p(D)`` is the number of years elapsed since the end
of the baseline year, counting the current year by the fraction of its days that are over at the
end of day ``D`` (31 December gives a whole year). The path runs from the baseline value at
``p = 0`` to the target value at ``p = target.year - baseline.year``.

- level / index / ratio: ``expected(D)`` is the path read at ``p(D)``.
- flow: the path gives each year's annual total (read at whole positions); ``expected(D)`` is
  that total times the fraction of D's year elapsed.

Before the baseline year the path holds the baseline; after the target year it holds the target
(the plan states nothing beyond its own period).
"""

from __future__ import annotations

import calendar
from datetime import date
from enum import StrEnum

from highland.catalog.models import Direction, Indicator, Kind, Shape, Thresholds


class Status(StrEnum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    OFF_TRACK = "off_track"
    NO_DATA = "no_data"


def year_fraction(d: date) -> float:
    """Fraction of d's year that is over at the end of day d."""
    days = 366 if calendar.isleap(d.year) else 365
    return d.timetuple().tm_yday / days


def _baseline(ind: Indicator) -> tuple[int, float]:
    """(year, value) the path starts from; without a baseline it starts at 0 at the plan's start."""
    if ind.baseline is not None and ind.baseline.value is not None:
        return ind.baseline.year, ind.baseline.value
    return ind.path_start_year, 0.0


def path_value(ind: Indicator, position: float) -> float | None:
    """The trajectory at ``position`` plan years after the baseline year's end (clamped)."""
    if ind.trajectory is Shape.GROWTH:
        return None
    target = ind.target.value
    assert target is not None  # guaranteed by the model for every shape but GROWTH
    if ind.trajectory is Shape.FLAT:
        return target
    base_year, base = _baseline(ind)
    span = ind.target.year - base_year
    share = min(max(position / span, 0.0), 1.0)
    if ind.trajectory is Shape.COMPOUND:
        return base * (target / base) ** share
    return base + (target - base) * share


def position(ind: Indicator, as_of: date) -> float:
    base_year, _ = _baseline(ind)
    return (as_of.year - 1 - base_year) + year_fraction(as_of)


def expected(ind: Indicator, as_of: date, prior_year_actual: float | None = None) -> float | None:
    """``expected(D)`` of CONTRACT.md §2; None where the plan gives no number for D.

    ``prior_year_actual`` is needed only by GROWTH targets (x % more than last year).
    """
    if ind.kind is Kind.FLOW:
        annual = annual_expected(ind, as_of.year, prior_year_actual)
        return None if annual is None else annual * year_fraction(as_of)
    return path_value(ind, position(ind, as_of))


def annual_expected(ind: Indicator, year: int, prior_year_actual: float | None = None) -> float | None:
    """A flow's expected annual total for ``year``."""
    if ind.trajectory is Shape.GROWTH:
        if prior_year_actual is None or ind.annual_growth is None:
            return None
        return prior_year_actual * (1 + ind.annual_growth)
    base_year, _ = _baseline(ind)
    return path_value(ind, float(year - base_year))


def performance(ind: Indicator, actual: float, expected_value: float) -> float:
    """actual/expected, inverted where lower is better; 1.0 means exactly on the path."""
    if ind.direction is Direction.DOWN:
        actual, expected_value = expected_value, actual
    if expected_value <= 0:
        return 1.0 if actual >= expected_value else 0.0
    return actual / expected_value


def status(ind: Indicator, actual: float | None, expected_value: float | None,
           thresholds: Thresholds) -> Status:
    if actual is None or expected_value is None:
        return Status.NO_DATA
    ratio = performance(ind, actual, expected_value)
    if ratio >= thresholds.on_track:
        return Status.ON_TRACK
    if ratio >= thresholds.at_risk:
        return Status.AT_RISK
    return Status.OFF_TRACK


def projected(ind: Indicator, as_of: date, actual: float | None,
              expected_value: float | None) -> float | None:
    """The value expected at the target date if the current pace holds.

    - flow: the target annual total scaled by today's performance (actual/expected): a feed at
      90 % of its year-to-date path is projected to reach 90 % of the target year's total;
    - level / index / ratio: the straight line from the baseline through today's actual,
      extended to the end of the target year (FLAT targets: today's actual).
    """
    if actual is None:
        return None
    target = ind.target.value
    if ind.kind is Kind.FLOW:
        if expected_value is None or target is None or expected_value <= 0:
            return None
        return target * (actual / expected_value)
    if ind.trajectory is Shape.FLAT or target is None:
        return actual
    base_year, base = _baseline(ind)
    elapsed = position(ind, as_of)
    span = ind.target.year - base_year
    if elapsed <= 0 or elapsed >= span:
        return actual
    return base + (actual - base) * span / elapsed
