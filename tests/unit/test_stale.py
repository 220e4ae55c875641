"""Stale is not no data (docs/i18n.md): a feed is stale as of D when its latest observation at or before
D is more than the catalog's cadence_days before D, in days of the plan's calendar (Beijing), and a
row that has stopped says since when -- also for a flow with nothing in D's year."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from highland.catalog.domain import is_stale
from highland.catalog.loader import default_catalog
from highland.sinks.progress import Actual, progress_row

CATALOG = default_catalog()


@pytest.mark.parametrize("cadence, last, as_of, stale", [
    (31, date(2019, 6, 30), date(2019, 7, 31), False),  # exactly one monthly cadence: still current
    (31, date(2019, 6, 30), date(2019, 8, 1), True),    # one day more
    (366, date(2019, 12, 31), date(2020, 12, 31), False),  # a yearly figure, a leap year later
    (366, date(2019, 12, 31), date(2021, 1, 1), True),
    (31, None, date(2020, 12, 31), False),  # never reported: no data, not stale
])
def test_stale_is_more_than_one_cadence_since_the_last_report(cadence: int, last: date | None, as_of: date,
                                                               stale: bool):
    assert is_stale(cadence, last, as_of) is stale


def test_a_flow_silent_all_year_has_no_data_and_says_since_when_it_stopped():
    ind = CATALOG.indicator("ecommerce_turnover")
    assert ind is not None and ind.cadence_days == 31
    last = datetime(2019, 6, 30, 4, tzinfo=UTC)  # 12:00 in Beijing
    row = progress_row(CATALOG, ind, date(2020, 12, 31), None, last)
    assert (row.status, row.actual, row.stale) == ("no_data", None, True)
    assert datetime.fromisoformat(row.last_observed_at) == last


def test_the_days_counted_are_beijing_days():
    ind = CATALOG.indicator("ecommerce_turnover")
    late = datetime(2019, 6, 30, 20, tzinfo=UTC)  # 2019-07-01 04:00 in Beijing: 31 days before 2019-08-01
    row = progress_row(CATALOG, ind, date(2019, 8, 1), Actual(100.0, late, None))
    assert row.stale is False
    earlier = datetime(2019, 6, 30, 15, 59, tzinfo=UTC)  # 2019-06-30 23:59 in Beijing: 32 days
    assert progress_row(CATALOG, ind, date(2019, 8, 1), Actual(100.0, earlier, None)).stale is True
