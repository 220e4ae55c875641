"""The demo's synthetic history (ingest/synthetic.py): the feeds the card names -- broadband ports,
e-commerce turnover, logistics volume -- report to the plan's last month, and the silent profile
still stops other feeds in mid-2019 (what the board and `progress` show as stopped)."""

from __future__ import annotations

from datetime import date, datetime

from highland.catalog.loader import default_catalog
from highland.ingest.synthetic import LIVE_FEEDS, agency_feeds

CATALOG = default_catalog()


def last_reports() -> dict[str, date]:
    """The latest observed day of every indicator in the demo's files (Beijing dates as written)."""
    last: dict[str, date] = {}
    for rows in agency_feeds(CATALOG).values():
        for row in rows:
            if isinstance(row, dict) and row["value"] >= 0 and CATALOG.indicator(row["indicator"]):
                day = datetime.fromisoformat(row["observed_at"]).date()
                last[row["indicator"]] = max(day, last.get(row["indicator"], day))
    return last


def test_the_cards_three_feeds_report_to_the_end_of_the_plan():
    names = {CATALOG.indicator(code).name_zh for code in LIVE_FEEDS}
    assert {"光纤宽带接入端口数", "电子商务交易额"} <= names
    last = last_reports()
    for code in LIVE_FEEDS:
        assert last[code] >= date(2020, 12, 1), code


def test_some_other_feeds_still_stop_in_mid_2019():
    stopped = [code for code, day in last_reports().items() if day <= date(2019, 6, 30)]
    assert stopped and not set(stopped) & LIVE_FEEDS
