"""The board and `highland progress` in Chinese in a real 80-column terminal (tmux) against a real
ClickHouse: the catalog's Chinese names, columns aligned in terminal cells (a CJK character takes two),
Beijing time named, and feeds that stopped saying since when and counted.

Positions are measured with rich's cell widths on what tmux shows, not on what the board computed.
"""

from __future__ import annotations

import re
import shlex
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from highland.catalog.domain import Alert
from highland.catalog.loader import default_catalog
from highland.ingest.dead_letters import DeadLetter
from highland.ingest.events import Reason
from highland.sinks.alerts import store as store_alerts
from highland.sinks.client import connect
from highland.sinks.dead_letters import store as store_letters
from rich.cells import cell_len

from highland.settings import Settings
from tests.integration.support import event, worker_env
from tests.integration.test_board import AS_OF, Terminal, board_terminal, known_feed, wait_for_screen, write
from tests.support.cells import cells_at

pytestmark = pytest.mark.integration
CATALOG = default_catalog()
WIDTH = 80
WORDS = ("正常", "有风险", "滞后", "基数待定", "无数据")


def stopped_feeds() -> list[dict]:
    """direct_connect_cities (a monthly level) last reports on 2019-06-30; telecom_business_volume (a
    monthly flow) only in 2018, so it has no data for 2019 at all."""
    return [
        event("dcc-q1", "cq_comms_admin", "direct_connect_cities", 18, "cities", "2019-03-31T12:00:00+08:00"),
        event("dcc-q2", "cq_comms_admin", "direct_connect_cities", 19, "cities", "2019-06-30T12:00:00+08:00"),
        event("tbv-2018", "cq_comms_admin", "telecom_business_volume", 800, "亿元", "2018-12-15T12:00:00+08:00"),
    ]


def feed() -> list[dict]:
    kept = ("ecommerce_turnover", "internet_plus_index")
    return [e for e in known_feed() if e["indicator"] in kept] + stopped_feeds()


def right_edges(header: str, names: tuple[str, ...]) -> dict[str, int]:
    return {n: cell_len(header[:header.index(n) + len(n)]) for n in names}


def row_of(lines: list[str], name: str) -> str:
    """The board's line of an indicator: its name, or the start of it cut with "…", after the status."""
    for text in lines:
        words = text.split()
        if len(words) > 2 and words[0] in WORDS and (words[1] == name or (
                words[1].endswith("…") and name.startswith(words[1][:-1]))):
            return text
    raise AssertionError(f"no row for {name}:\n" + "\n".join(lines))


def test_the_chinese_board_aligns_in_cells_and_says_since_when_feeds_stopped(isolated: Settings, unique: str,
                                                                             tmp_path: Path):
    write(isolated, feed())
    with board_terminal(isolated, tmp_path, unique, lang="zh") as term:
        screen = wait_for_screen(term, lambda s: "停报" in s and "电子商务交易额" in s, "the Chinese board")
        lines = screen.rstrip("\n").splitlines()
        assert max(cell_len(x) for x in lines) <= WIDTH, screen
        assert re.fullmatch(r"互联网经济高地监测 · 截至 2019-12-31 +刷新于 \d\d:\d\d:\d\d 北京时间", lines[0].rstrip())
        assert cell_len(lines[0].rstrip()) == WIDTH  # the refresh time ends at the right edge
        assert "停报 2 (!)" in lines[1], lines[1]
        header = next(x for x in lines if x.startswith("状态"))
        edges = right_edges(header, ("实际", "预期", "%目标", "30天", "最近报送"))
        assert edges["最近报送"] == WIDTH
        rows = {code: row_of(lines, CATALOG.indicator(code).name_zh) for code in
                ("ecommerce_turnover", "internet_plus_index", "direct_connect_cities", "telecom_business_volume")}
        for code, text in rows.items():
            for column, edge in edges.items():  # right-aligned: the last cell of each column is written
                assert cells_at(text, edge - 1, edge) != " ", (code, column, text)
                assert cells_at(text, edge, edge + 1) in (" ", ""), (code, column, text)
        assert rows["direct_connect_cities"].rstrip().endswith("!2019-06-30")
        assert rows["telecom_business_volume"].split()[0] == "无数据"
        assert rows["telecom_business_volume"].rstrip().endswith("!2018-12-15")
        assert rows["ecommerce_turnover"].rstrip().endswith("12-15 10:00")  # Beijing time, as observed
        term.keys("C-c")
        wait_for_screen(term, lambda s: "board-exit=0" in s, "the board to exit on Ctrl-C", 15)


def test_progress_in_chinese_at_80_columns_keeps_names_whole_and_counts_stopped_feeds(isolated: Settings,
                                                                                        unique: str, tmp_path: Path):
    write(isolated, feed())
    env = worker_env(isolated, unique, tmp_path) | {
        "HIGHLAND_CLICKHOUSE_PORT": str(isolated.clickhouse_port), "HIGHLAND_LANG": "zh"}
    command = (f"{shlex.quote(sys.executable)} -m highland progress --as-of {AS_OF}; "
               "echo progress-exit=$?; sleep 120")
    term = Terminal(f"progress-{unique}", command, env)
    try:
        wait_for_screen(term, lambda s: "progress-exit=" in s, "progress to finish")
        full = term._tmux("capture-pane", "-p", "-J", "-S", "-400", "-t", "board")
    finally:
        term.close()
    lines = full.rstrip("\n").splitlines()
    assert "progress-exit=0" in full, full
    assert max(cell_len(x) for x in lines) <= WIDTH, full
    assert "规划进度（截至 2019-12-31；流量指标为年初至今）" in full
    assert re.search(r"互联网直联城市 .* 2019-06-30 停报", full), full
    assert re.search(r"电信业务总量 .* 无数据 +2018-12-15 停报", full), full
    assert "停报 2 项" in full
    # Every name whole: a long one folds onto the next lines of its column instead of being cut.
    header = next(x for x in lines if x.startswith("指标"))
    name_width = right_edges(header, ("实际",))["实际"] - 8 - 1  # 8-cell numbers, one cell between columns
    names = "".join(cells_at(x, 0, name_width).strip() for x in lines[lines.index(header) + 2:])
    for ind in CATALOG.indicators:
        assert ind.name_zh in names, ind.name_zh


def test_alerts_and_dead_letters_in_chinese_at_80_columns_line_up_in_beijing_time(isolated: Settings, unique: str,
                                                                                  tmp_path: Path):
    at = datetime(2020, 1, 1, 16, 30, tzinfo=UTC)  # 2020-01-02 00:30 in Beijing
    client, db = connect(isolated), isolated.clickhouse_database
    store_alerts(client, db, [
        Alert("zh-1", "status", 1, "ecommerce_turnover", "cq_commerce", "on_track", "off_track", 12_345.6, 20_000.0,
              date(2020, 1, 2), "set by the test", at),
        Alert("zh-2", "stale", 1, "direct_connect_cities", "cq_comms_admin", "fresh", "stale", None, None,
              date(2020, 1, 2), "direct_connect_cities: no event from cq_comms_admin since "
              "2019-06-30T04:00:00+00:00 (cadence 31 d)", at)])
    store_letters(client, db, [(0, 1, DeadLetter(reason=Reason.UNIT_MISMATCH, detail="unit 'kg' for 'x'",
                                                 agency="cq_commerce", received_at=at, source="push",
                                                 origin="商务.csv:3", payload="{}"))])
    env = worker_env(isolated, unique, tmp_path) | {
        "HIGHLAND_CLICKHOUSE_PORT": str(isolated.clickhouse_port), "HIGHLAND_LANG": "zh"}
    command = (f"{shlex.quote(sys.executable)} -m highland alerts; {shlex.quote(sys.executable)} -m highland dlq; "
               "echo both-exit=$?; sleep 120")
    term = Terminal(f"alerts-{unique}", command, env)
    try:
        screen = wait_for_screen(term, lambda s: "both-exit=" in s, "alerts and dlq to finish")
    finally:
        term.close()
    lines = screen.rstrip("\n").splitlines()
    assert "both-exit=0" in screen and max(cell_len(x) for x in lines) <= WIDTH, screen
    header = next(x for x in lines if x.startswith("时间 (北京时间)"))
    letters = next(x for x in lines if x.startswith("收到时间 (北京时间)"))
    kind_at = cell_len(header[:header.index("类型")])
    rows = [x for x in lines[lines.index(header):lines.index(letters)] if x.startswith("2020-01-02 00:30 ")]
    assert [cells_at(x, kind_at, kind_at + 8) for x in rows] == ["状态变化", "数据中断"], screen
    assert "电子商务交易额" in screen and "互联网直联城市" in screen and "2019-06-30" in screen  # since when
    reason_at = cell_len(letters[:letters.index("原因")])
    (letter,) = [x for x in lines[lines.index(letters):] if x.startswith("2020-01-02 00:30")]
    assert cells_at(letter, reason_at, reason_at + 8) == "单位不符", letter
    assert "重庆市商务委员会" in letter and "商务.csv:3" in screen
