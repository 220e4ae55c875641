"""The CLI's tables as a duty officer reads them (dashboards/terminal.py): in Chinese with the catalog's
names, laid out in terminal cells at 80 columns (a CJK character is two cells), nothing cut, times in
Beijing time with the zone named, stopped feeds saying since when.

Positions are measured in cells with wcwidth's rule as rich applies it (``rich.cells.cell_len``),
independently of how the table computed them.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from highland.catalog.domain import ProgressRow
from highland.catalog.loader import default_catalog
from highland.dashboards.terminal import alerts_table, dlq_table, progress_summary, progress_table
from rich.cells import cell_len
from rich.console import Console

from tests.support.cells import cells_at

CATALOG = default_catalog()
WIDTH = 80
DAY = date(2020, 12, 31)
STATUSES = ("on_track", "at_risk", "off_track", "no_data")
WORDS = {"on_track": "正常", "at_risk": "有风险", "off_track": "滞后", "no_data": "无数据"}


def render(table: object) -> list[str]:
    console = Console(width=WIDTH, record=True, color_system=None, legacy_windows=False)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip("\n").splitlines()


def cell_of(text: str, index: int) -> int:
    """The cell offset of character ``index`` in ``text``."""
    return cell_len(text[:index])


def rows(stale_codes: set[str]) -> list[ProgressRow]:
    """Every indicator, statuses in turn, huge and tiny numbers; the listed ones stopped in mid-2019."""
    out = []
    for n, ind in enumerate(CATALOG.indicators):
        status = STATUSES[n % 4]
        actual = None if status == "no_data" else [0.5, 4_512.0, 12_345_678.0, 9.9e14][n % 4]
        stale = ind.code in stale_codes
        last = "2019-06-30T04:00:00+00:00" if stale else "2020-12-30T20:00:00+00:00"  # 12-31 04:00 in Beijing
        out.append(ProgressRow(ind.code, ind.name_en, ind.kind.value, ind.unit, ind.agency, "", actual, 1_234.5,
                               ind.target.value, ind.target.year, None, 95.0 if actual else None, status, None,
                               last, stale))
    return out


def test_progress_in_chinese_keeps_every_name_whole_and_every_column_aligned_at_80_cells():
    stale = {"ecommerce_turnover", "telecom_business_volume"}
    lines = render(progress_table(rows(stale), CATALOG, "zh", DAY))
    assert max(cell_len(x) for x in lines) <= WIDTH
    header = next(x for x in lines if x.startswith("指标"))
    # Right-aligned numbers end where their header ends; status and last report start under theirs.
    ends = {h: cell_of(header, header.index(h) + len(h)) for h in ("实际", "预期", "目标")}
    starts = {h: cell_of(header, header.index(h)) for h in ("状态", "最近报送")}
    name_width = ends["实际"] - 8 - 1  # the numbers' columns are 8 cells wide, one cell between columns
    body = lines[lines.index(header) + 2:]
    names, current = [], ""
    for text in body:
        word = cells_at(text, starts["状态"], starts["最近报送"]).strip()
        if word:  # the first line of an indicator; folded lines carry only the rest of its name
            if current:
                names.append(current)
            current = ""
            assert word in WORDS.values(), text
            for h, end in ends.items():
                assert cells_at(text, end - 1, end) != " ", (h, text)
                assert cells_at(text, end, end + 1) == " ", (h, text)
        current += cells_at(text, 0, name_width).strip()
    names.append(current)
    assert names == [i.name_zh for i in CATALOG.indicators]
    stopped = [x for x in body if "停报" in x]
    assert len(stopped) == 2 and all("2019-06-30 停报" in x for x in stopped)
    assert sum("2020-12-31" in x for x in body) == len(CATALOG.indicators) - 2  # Beijing's day, not UTC's


def test_progress_in_english_shows_every_code_whole():
    lines = render(progress_table(rows(set()), CATALOG, "en", DAY))
    assert max(cell_len(x) for x in lines) <= WIDTH
    text = "".join(x.split(" ")[0] for x in lines if x and not x.startswith(" "))
    long_codes = [i.code for i in CATALOG.indicators if len(i.code) > 26]
    assert long_codes, "the catalog has codes longer than the old 26-character cut"
    for code in long_codes:
        assert code in text


def test_the_summary_counts_stopped_feeds_beside_the_statuses():
    summary = progress_summary(rows({"ecommerce_turnover", "telecom_business_volume", "it_employment"}), "zh")
    assert "停报 3 项" in summary
    counts = dict(re.findall(r"(正常|有风险|滞后|无数据) (\d+)", summary))
    assert sum(map(int, counts.values())) == len(CATALOG.indicators)


@pytest.mark.parametrize("lang, zone", [("zh", "北京时间"), ("en", "Asia/Shanghai")])
def test_alerts_and_dead_letters_show_beijing_time_with_the_zone_named(lang: str, zone: str):
    from datetime import UTC, datetime

    instant = datetime(2020, 1, 1, 16, 30, tzinfo=UTC)  # 2020-01-02 00:30 in Chongqing
    alert = {"alert_id": "a", "kind": "stale", "seq": 1, "indicator": "ecommerce_turnover", "agency": "cq_commerce",
             "old_status": "fresh", "new_status": "stale", "actual": None, "expected": None, "as_of": date(2020, 1, 2),
             "detail": "ecommerce_turnover: no event from cq_commerce since 2019-06-30T04:00:00+00:00 (cadence 31 d)",
             "created_at": instant}
    lines = render(alerts_table([alert], CATALOG, lang))
    assert max(cell_len(x) for x in lines) <= WIDTH
    screen = "\n".join(lines)
    assert zone in screen and "2020-01-02 00:30" in screen and "2020-01-01 16:30" not in screen
    if lang == "zh":
        assert "电子商务交易额" in screen and "自 2019-06-30" in screen  # since when, Beijing's day
    letter = {"reason": "unit_mismatch", "agency": "cq_commerce", "source": "push", "origin": "a.csv:3",
              "detail": "[red]unit kg\x1b[2J", "received_at": instant}
    lines = render(dlq_table([letter], CATALOG, lang, {"unit_mismatch": "单位不符"}))
    screen = "\n".join(lines)
    assert zone in screen and "2020-01-02 00:30" in screen
    assert "[red]unit" in screen and "\x1b" not in screen  # stored text is shown, never obeyed


def test_the_catalog_in_chinese_fits_80_cells_and_keeps_agency_names_whole():
    from highland.dashboards.terminal import catalog_table

    lines = render(catalog_table(CATALOG, "zh"))
    assert max(cell_len(x) for x in lines) <= WIDTH
    header = lines[0]
    start = cell_of(header, header.index("责任单位"))
    column = "".join(cells_at(x, start, WIDTH).strip() for x in lines[2:])
    for ind in CATALOG.indicators:
        agency = next(a.name_zh for a in CATALOG.agencies if a.code == ind.agency)
        assert agency in column
    assert column.count("重庆市") >= len(CATALOG.indicators)  # one whole name per indicator
