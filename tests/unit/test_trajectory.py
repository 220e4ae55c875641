"""expected(D), status and projection (CONTRACT.md §2), checked against hand-computed values."""

from __future__ import annotations

from datetime import date

import pytest
from highland.catalog.models import Indicator, Thresholds
from highland.catalog.trajectory import (
    Anchor,
    BaselineSource,
    Status,
    annual_expected,
    expected,
    position,
    projected,
    status,
    year_fraction,
)

DEFAULT = Thresholds(on_track=0.95, at_risk=0.85)


def make(**fields) -> Indicator:
    base = {
        "code": "x", "name_zh": "x", "name_en": "x", "section": "box1", "unit": "u", "kind": "level",
        "baseline": {"year": 2015, "value": 17}, "target": {"year": 2020, "value": 22},
        "agency": "a", "cadence_days": 31,
    }
    base.update(fields)
    return Indicator.model_validate(base)


def test_year_fraction_counts_the_day_itself():
    assert year_fraction(date(2018, 12, 31)) == 1.0
    assert year_fraction(date(2016, 7, 1)) == pytest.approx(183 / 366)  # 2016 is a leap year
    assert year_fraction(date(2018, 1, 1)) == pytest.approx(1 / 365)


def test_linear_level_is_read_at_the_date_itself():
    cities = make()
    # End of 2018: three of five years done -> 17 + 5 * 3/5.
    assert expected(cities, date(2018, 12, 31)) == pytest.approx(20.0)
    # Mid-2016: half a year done -> 17 + 5 * 0.5/5.
    assert expected(cities, date(2016, 7, 1)) == pytest.approx(17.5)
    assert position(cities, date(2020, 12, 31)) == pytest.approx(5.0)


def test_path_holds_the_baseline_before_and_the_target_after_the_plan():
    cities = make()
    assert expected(cities, date(2014, 6, 1)) == 17
    assert expected(cities, date(2023, 6, 1)) == 22


def test_linear_flow_expects_the_years_total_times_the_elapsed_fraction():
    flow = make(kind="flow", baseline={"year": 2015, "value": 100}, target={"year": 2020, "value": 200})
    assert annual_expected(flow, 2018) == pytest.approx(160.0)
    # 31 + 28 + 31 = 90 days of 365 elapsed on 31 March 2018.
    assert expected(flow, date(2018, 3, 31)) == pytest.approx(160.0 * 90 / 365)
    assert expected(flow, date(2020, 12, 31)) == pytest.approx(200.0)


def test_compound_flow_grows_geometrically():
    turnover = make(kind="flow", trajectory="compound",
                    baseline={"year": 2015, "value": 6000}, target={"year": 2020, "value": 18000})
    # 6000 * 3 ** (1/5) = 7474.38...; 6000 * 3 ** (2/5) = 9311.07...
    assert annual_expected(turnover, 2016) == pytest.approx(7474.3800, rel=1e-6)
    assert annual_expected(turnover, 2017) == pytest.approx(9311.0734, rel=1e-6)
    # 30 June 2017: 181 of 365 days.
    assert expected(turnover, date(2017, 6, 30)) == pytest.approx(9311.0734 * 181 / 365, rel=1e-6)


def test_a_baseline_from_data_is_pending_until_the_data_gives_one():
    output = make(kind="flow", baseline={"year": 2015, "value": "from_data"}, target={"year": 2020, "value": 2000})
    assert annual_expected(output, 2017) is None  # no path from an invented 0
    assert status(output, 300.0, expected(output, date(2017, 6, 30)), DEFAULT) is Status.PENDING
    assert status(output, None, None, DEFAULT) is Status.NO_DATA


def test_latency_falls_along_a_path_from_the_reported_2015_value():
    """降至150毫秒以内 by 2020, the agency reporting 250 ms for the end of 2015."""
    latency = make(kind="index", direction="down", baseline={"year": 2015, "value": "from_data"},
                   target={"year": 2020, "value": 150})
    reported = Anchor(0.0, 250.0, BaselineSource.REPORTED, date(2015, 12, 31))
    # End of 2017, 2 of 5 years: 250 - 100 * 2/5 = 210 ms.
    assert expected(latency, date(2017, 12, 31), anchor=reported) == pytest.approx(210.0)
    # 30 June 2017: 1 + 181/365 years: 250 - 100 * 1.4958904/5 = 220.0822 ms.
    assert expected(latency, date(2017, 6, 30), anchor=reported) == pytest.approx(220.08219, rel=1e-6)
    # 230 ms at the end of 2017: 210/230 = 0.913, at risk (the old flat bar of 150 said 0.652, off track).
    assert status(latency, 230.0, 210.0, DEFAULT) is Status.AT_RISK


def test_a_first_report_anchors_the_path_where_it_was_made():
    share = make(kind="ratio", unit="%", baseline={"year": 2015, "value": "from_data"},
                 target={"year": 2020, "value": 90})
    first = Anchor(position(share, date(2017, 3, 31)), 40.0, BaselineSource.FIRST_REPORT, date(2017, 3, 31))
    assert first.position == pytest.approx(1 + 90 / 365)
    assert expected(share, date(2017, 3, 31), anchor=first) == pytest.approx(40.0)  # on the path that day
    # End of 2018: 40 + 50 * (3 - 1.2465753) / (5 - 1.2465753) = 40 + 50 * 0.4671533 = 63.3577.
    assert expected(share, date(2018, 12, 31), anchor=first) == pytest.approx(63.35766, rel=1e-6)
    assert expected(share, date(2020, 12, 31), anchor=first) == pytest.approx(90.0)
    # Projection: the line from the first report through 70 at the end of 2018, to the end of 2020:
    # 40 + 30 * 3.7534247 / 1.7534247 = 104.2188.
    assert projected(share, date(2018, 12, 31), 70.0, 63.36, first) == pytest.approx(104.21875, rel=1e-6)


def test_a_flows_first_reported_year_is_its_anchor_not_measured_against_itself():
    freight = make(kind="flow", baseline={"year": 2015, "value": "from_data"}, target={"year": 2020, "value": 2000})
    first = Anchor(2.0, 500.0, BaselineSource.FIRST_REPORT, date(2017, 12, 31))
    assert annual_expected(freight, 2017, anchor=first) is None
    assert annual_expected(freight, 2018, anchor=first) == pytest.approx(1000.0)  # 500 + 1500 * 1/3
    assert annual_expected(freight, 2019, anchor=first) == pytest.approx(1500.0)
    assert annual_expected(freight, 2020, anchor=first) == pytest.approx(2000.0)
    reported = Anchor(0.0, 500.0, BaselineSource.REPORTED, date(2015, 12, 31))
    assert annual_expected(freight, 2016, anchor=reported) == pytest.approx(800.0)  # 500 + 1500 / 5


def test_a_stated_baseline_wins_over_any_anchor():
    cities = make()
    assert expected(cities, date(2018, 12, 31), anchor=Anchor(0.0, 0.0, BaselineSource.REPORTED)) == pytest.approx(20.0)


def test_growth_target_needs_last_years_actual():
    agri = make(kind="flow", baseline={"year": 2015, "value": "from_data"}, target={"year": 2020, "value": None},
                trajectory="growth", annual_growth=0.30)
    assert expected(agri, date(2019, 12, 31)) is None
    assert expected(agri, date(2019, 12, 31), prior_year_actual=100.0) == pytest.approx(130.0)
    assert status(agri, 40.0, None, DEFAULT) is Status.PENDING  # this year's data, no previous year


def test_status_bands_and_their_edges():
    cities = make()
    assert status(cities, 19.0, 20.0, DEFAULT) is Status.ON_TRACK  # 0.95 exactly
    assert status(cities, 17.0, 20.0, DEFAULT) is Status.AT_RISK  # 0.85 exactly
    assert status(cities, 16.99, 20.0, DEFAULT) is Status.OFF_TRACK
    assert status(cities, None, 20.0, DEFAULT) is Status.NO_DATA
    lenient = Thresholds(on_track=0.8, at_risk=0.5)
    assert status(cities, 17.0, 20.0, lenient) is Status.ON_TRACK


def test_lower_is_better_inverts_the_ratio():
    latency = make(kind="level", direction="down", baseline={"year": 2015, "value": "from_data"},
                   target={"year": 2020, "value": 150}, trajectory="flat")
    assert expected(latency, date(2017, 5, 1)) == 150  # a floor (here a ceiling) needs no baseline
    assert status(latency, 120.0, 150.0, DEFAULT) is Status.ON_TRACK  # faster than the bound
    assert status(latency, 170.0, 150.0, DEFAULT) is Status.AT_RISK  # 150/170 = 0.882
    assert status(latency, 200.0, 150.0, DEFAULT) is Status.OFF_TRACK  # 0.75
    falling = make(direction="down", baseline={"year": 2015, "value": 200},
                   target={"year": 2020, "value": 100})
    assert expected(falling, date(2017, 12, 31)) == pytest.approx(160.0)
    assert status(falling, 170.0, 160.0, DEFAULT) is Status.AT_RISK  # 160/170 = 0.941


def test_projection_extends_the_current_pace_to_the_target_date():
    cities = make()
    # End of 2017 (2 of 5 years), actual 18: line from 17 through 18 -> 17 + 1 * 5/2 at the end.
    assert projected(cities, date(2017, 12, 31), 18.0, 19.0) == pytest.approx(19.5)
    flow = make(kind="flow", baseline={"year": 2015, "value": 100}, target={"year": 2020, "value": 200})
    # 90 % of the year-to-date path -> 90 % of the target year's total.
    assert projected(flow, date(2018, 3, 31), 36.0, 40.0) == pytest.approx(180.0)
    assert projected(flow, date(2018, 3, 31), None, 40.0) is None


def test_a_baseline_already_beyond_the_target_makes_the_target_the_bar():
    """A first report of 100 ms against 降至150毫秒以内: 150 is the bar, not a path from 100 up to 150."""
    latency = make(kind="index", direction="down", baseline={"year": 2015, "value": "from_data"},
                   target={"year": 2020, "value": 150})
    first = Anchor(position(latency, date(2019, 11, 1)), 100.0, BaselineSource.FIRST_REPORT, date(2019, 11, 1))
    assert expected(latency, date(2019, 12, 31), anchor=first) == 150
    assert status(latency, 200.0, 150.0, DEFAULT) is Status.OFF_TRACK  # 150/200 = 0.75
    share = make(kind="ratio", baseline={"year": 2015, "value": "from_data"}, target={"year": 2020, "value": 60})
    reported = Anchor(0.0, 70.0, BaselineSource.REPORTED, date(2015, 12, 31))
    assert expected(share, date(2017, 6, 30), anchor=reported) == 60
