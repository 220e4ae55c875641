"""A report's period, its chart's sample days and what counts as a slip (dashboards/report.py)."""

from __future__ import annotations

from datetime import date

import pytest
from highland.catalog.domain import ProgressRow
from highland.dashboards.report import Entry, Period, chart_days, period_start, sample_days, stopped_since


@pytest.mark.parametrize(("as_of", "period", "start"), [
    (date(2019, 6, 30), Period.MONTH, date(2019, 6, 1)),
    (date(2019, 6, 30), Period.QUARTER, date(2019, 4, 1)),
    (date(2019, 1, 1), Period.QUARTER, date(2019, 1, 1)),
    (date(2019, 12, 31), Period.QUARTER, date(2019, 10, 1)),
    (date(2019, 8, 15), Period.YEAR, date(2019, 1, 1)),
])
def test_a_period_starts_on_the_first_day_of_its_month_quarter_or_year(as_of: date, period: Period,
                                                                       start: date) -> None:
    assert period_start(as_of, period) == start


def test_a_chart_samples_every_month_end_then_the_report_day() -> None:
    assert sample_days(date(2019, 1, 1), date(2019, 4, 10)) == [
        date(2019, 1, 31), date(2019, 2, 28), date(2019, 3, 31), date(2019, 4, 10)]
    # A report on a month's last day does not sample that day twice.
    assert sample_days(date(2020, 1, 1), date(2020, 2, 29)) == [date(2020, 1, 31), date(2020, 2, 29)]


def test_a_chart_after_the_plan_samples_the_plan_then_the_report_day() -> None:
    first, last = date(2016, 1, 1), date(2020, 12, 31)
    in_plan = chart_days(first, last, last)
    assert len(in_plan) == 60 and in_plan[-1] == last
    assert chart_days(first, last, date(2030, 6, 30)) == [*in_plan, date(2030, 6, 30)]
    assert chart_days(first, last, date(9999, 12, 31)) == [*in_plan, date(9999, 12, 31)]  # no date overflow
    assert chart_days(first, last, date(2015, 6, 30)) == [date(2015, 6, 30)]  # before the plan: its day
    assert chart_days(first, last, date(2019, 4, 10)) == sample_days(first, date(2019, 4, 10))


def row(status: str, last: str | None = None, stale: bool = False) -> ProgressRow:
    return ProgressRow("x", "X", "level", "u", "a", "as of", 1.0, 1.0, 2.0, 2020, None, 50.0, status, None, last,
                       stale=stale)


@pytest.mark.parametrize(("before", "now", "slipped"), [
    ("on_track", "at_risk", True), ("on_track", "off_track", True), ("at_risk", "off_track", True),
    ("no_data", "at_risk", True), ("no_data", "off_track", True),
    ("no_data", "on_track", False), ("off_track", "off_track", False), ("off_track", "at_risk", False),
    ("at_risk", "on_track", False), ("on_track", "no_data", False),
])
def test_a_slip_is_a_move_to_a_worse_status_during_the_period(before: str, now: str, slipped: bool) -> None:
    assert Entry(row(now), before, (), None).slipped is slipped


def test_the_slipped_come_first_then_the_worst_then_catalog_order() -> None:
    from dataclasses import replace

    from highland.catalog.loader import default_catalog
    from highland.dashboards.report import build

    catalog = default_catalog()
    codes = [i.code for i in catalog.indicators[:5]]
    now = {codes[0]: "on_track", codes[1]: "off_track", codes[2]: "at_risk", codes[3]: "no_data", codes[4]: "at_risk"}
    before = {codes[0]: "on_track", codes[1]: "off_track", codes[2]: "on_track", codes[3]: "no_data",
              codes[4]: "at_risk"}
    rows = [replace(row(status), indicator=code) for code, status in now.items()]
    olds = [replace(row(status), indicator=code) for code, status in before.items()]
    report = build(catalog, date(2019, 6, 30), Period.QUARTER, rows, olds, {})
    # codes[2] slipped (on track -> at risk): before codes[1], off track since before the quarter.
    assert [e.row.indicator for e in report.entries] == [codes[2], codes[1], codes[4], codes[0], codes[3]]
    assert [e.row.indicator for e in report.slipped] == [codes[2]]


def test_a_stopped_feed_is_named_by_the_plan_day_of_its_last_observation() -> None:
    # 2019-05-28T20:00Z is already 29 May in Chongqing.
    assert stopped_since(row("on_track", "2019-05-28T20:00:00+00:00", stale=True), "Asia/Shanghai") == \
        date(2019, 5, 29)
    assert stopped_since(row("on_track", "2019-05-28T20:00:00+00:00", stale=False), "Asia/Shanghai") is None
    assert stopped_since(row("no_data"), "Asia/Shanghai") is None  # never reported: no data, not stopped
