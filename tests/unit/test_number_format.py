"""One value, the same digits wherever a person reads it: `highland progress`, the board, the report, the alert's
stored detail, its Chinese line in `highland alerts` and the chat message duty staff receive. A duty
officer who checks an alert against the terminal must not find 1,234.57 in one and 1,235 in the other."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from highland.catalog.domain import AlertState, ProgressRow
from highland.catalog.i18n import alert_detail
from highland.catalog.loader import default_catalog
from highland.dashboards.board import board_rows, indicator_table
from highland.dashboards.report_render import number as report_number
from highland.dashboards.terminal import progress_table
from highland.streams import notify
from highland.streams.alerts import status_alerts
from rich.console import Console

CATALOG = default_catalog()
DAY = date(2019, 6, 30)
NOW = datetime(2019, 6, 30, 2, 0, tzinfo=UTC)


def row(actual: float, expected: float) -> ProgressRow:
    ind = CATALOG.indicator("ecommerce_turnover")
    assert ind is not None
    return ProgressRow(ind.code, ind.name_en, ind.kind.value, ind.unit, ind.agency, "", actual, expected, 18_000.0,
                       2020, 8_000.0, 50.0, "off_track", None, "2019-06-29T00:00:00+00:00")


def printed(table: object) -> str:
    console = Console(width=160, record=True, color_system=None, legacy_windows=False)
    with console.capture() as cap:
        console.print(table)
    return cap.get()


@pytest.mark.parametrize(("actual", "expected", "actual_shown", "expected_shown"), [
    (1_234.5678, 0.123456, "1,235", "0.12"),
    (999.996, 10.0, "1,000.00", "10.00"),
    (0.005, 250_000.25, "0.01", "250,000"),
])
def test_every_surface_prints_a_value_as_progress_does(actual, expected, actual_shown, expected_shown):
    r = row(actual, expected)
    for table in (progress_table([r], CATALOG, "en", DAY),
                  indicator_table(board_rows(CATALOG, [r], [r]), 160, DAY, ZoneInfo("Asia/Shanghai"))):
        assert f"{actual_shown} " in printed(table) and f"{expected_shown} " in printed(table)
    assert (report_number(actual), report_number(expected)) == (actual_shown, expected_shown)

    [alert] = status_alerts(AlertState(), [r], DAY, NOW)
    assert f"actual {actual_shown} vs expected {expected_shown}" in alert.detail
    stored = {"indicator": alert.indicator, "kind": alert.kind, "actual": alert.actual,
              "expected": alert.expected, "as_of": alert.as_of, "detail": alert.detail}
    assert f"实际 {actual_shown} 亿元，预期 {expected_shown} 亿元" in alert_detail(stored, CATALOG, "zh")
    chat = notify.message(alert, CATALOG).text()
    assert f"实际值 {actual_shown} 亿元，预期值 {expected_shown} 亿元" in chat
