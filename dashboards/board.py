"""``highland board``: a live terminal board for duty staff who only have a shell (docs/board.md).

One frame = a header (as-of date, counts per status, refresh time), every indicator sorted worst
first (as many as fit the terminal, then "+N more") and the latest alerts. Every line is cut to the
terminal width, so the board stays readable in an 80-column ssh session. The numbers are the ones of
``highland progress`` (sinks/progress.py); the board adds only ordering, a 30-day trend and layout.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from clickhouse_driver.errors import Error as ClickHouseError
from clickhouse_driver.errors import ServerException
from highland.catalog import i18n
from highland.catalog.domain import ProgressRow
from highland.catalog.i18n import Lang
from highland.catalog.loader import catalog_at
from highland.catalog.models import Catalog
from highland.catalog.trajectory import performance
from highland.dashboards.terminal import number, plain
from highland.sinks.alerts import list_alerts
from highland.sinks.client import connect
from highland.sinks.progress import default_as_of, progress
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from highland.settings import Settings

STATUS_STYLE = {"on_track": "green", "at_risk": "yellow", "off_track": "red", "pending": "cyan", "no_data": "dim"}
# Worst first. pending (a baseline still taken from data) and no_data go last: neither says anything
# about the plan (a silent feed is a "stale" alert), and early in a rollout most indicators have no
# data and would push the real problems off screen.
STATUS_ORDER = {"off_track": 0, "at_risk": 1, "on_track": 2, "pending": 3, "no_data": 4}
TREND_WINDOW = timedelta(days=30)
# A change of the performance ratio smaller than this is "the same": rounding and tiny revisions
# must not make arrows flicker.
TREND_TOLERANCE = 0.01
UP, DOWN, SAME = "↑", "↓", "→"
MAX_ALERT_LINES = 5
ALERTS_FETCHED = 20  # a few more than shown, so a taller terminal could show more later
MIN_REFRESH_S = 0.5  # a refresh of 0 would hammer ClickHouse with 5 queries in a busy loop
MIN_NAME_WIDTH = 12  # below this the indicator code is unreadable: drop optional columns instead

# (header, width, optional): the fixed-width columns after the indicator code, widths in terminal cells
# ("30天" takes 4). Optional ones are dropped, last first, when the terminal is too narrow to keep
# MIN_NAME_WIDTH for the code.
COLUMNS: list[tuple[str, int, bool]] = [
    ("actual", 9, False), ("expected", 9, True), ("%tgt", 6, False), ("30d", 4, False),
    ("last update", 11, True),
]
STATUS_WIDTH = 9  # "off_track"; the Chinese words take 6 cells, the board keeps one layout
# Header keys (catalog/i18n.py LABELS) of the columns above, in the reader's language.
COLUMN_LABEL = {"actual": "actual", "expected": "expected", "%tgt": "pct_target", "30d": "trend",
                "last update": "last_report"}
# A transitional status counted only while some indicator is in it: the 80-column header has no cell
# to spare for a zero (the quit hint would be cut).
COUNTED_WHEN_PRESENT = frozenset({"pending"})
STALE_MARK = "!"  # before the last report's date of a feed that stopped (docs/board.md)
CODE_PREFIX = re.compile(r"^Code: \d+\.\s*")  # clickhouse-driver's error-code prefix


@dataclass(frozen=True)
class BoardRow:
    row: ProgressRow
    trend: str


@dataclass(frozen=True)
class Snapshot:
    """One successful read of ClickHouse."""

    as_of: date
    rows: list[BoardRow]  # sorted worst first
    alerts: list[dict[str, Any]]  # newest first
    fetched_at: datetime  # aware, plan time zone


@dataclass(frozen=True)
class View:
    """What the next frame shows: the last good snapshot and, if the last read failed, why."""

    snapshot: Snapshot | None
    error: str | None
    target: str  # host:port, so the message says where the board is looking
    retry_s: float | None  # None: a single frame (--once), nothing will retry
    problem: str = "unreachable"  # or "answers with an error" (a server-side refusal)


# --- data -----------------------------------------------------------------------------------------

def ratio(catalog: Catalog, row: ProgressRow) -> float | None:
    """The performance ratio behind the status (actual/expected, inverted where lower is better)."""
    ind = catalog.indicator(row.indicator)
    if ind is None or row.actual is None or row.expected is None:
        return None
    return performance(ind, row.actual, row.expected)


def trend(now: float | None, then: float | None) -> str:
    """↑ the ratio improved over the window, ↓ it worsened, → same or not comparable."""
    if now is None or then is None or abs(now - then) < TREND_TOLERANCE:
        return SAME
    return UP if now > then else DOWN


def sort_key(item: BoardRow) -> tuple[int, bool, float, str]:
    """Worst status first; within a status the feeds that stopped first (a stopped feed is news, a
    feed that never reported is not), then the lowest percent of target; the code keeps the order stable."""
    pct = item.row.pct_of_target
    rank = STATUS_ORDER.get(item.row.status, len(STATUS_ORDER))
    return rank, not item.row.stale, pct if pct is not None else float("inf"), item.row.indicator


def board_rows(catalog: Catalog, current: list[ProgressRow], earlier: list[ProgressRow]) -> list[BoardRow]:
    before = {r.indicator: ratio(catalog, r) for r in earlier}
    rows = [BoardRow(r, trend(ratio(catalog, r), before.get(r.indicator))) for r in current]
    return sorted(rows, key=sort_key)


def fetch(client: Any, db: str, catalog: Catalog, as_of: date, now: datetime) -> Snapshot:
    current = progress(client, db, catalog, as_of)
    earlier = progress(client, db, catalog, as_of - TREND_WINDOW)
    alerts = list_alerts(client, db, ALERTS_FETCHED)
    return Snapshot(as_of, board_rows(catalog, current, earlier), alerts, now)


# --- formatting -----------------------------------------------------------------------------------



def fmt_pct(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.1f}" if abs(p) < 1e4 else f"{p:.0f}"


def as_local(value: datetime | str, tz: ZoneInfo) -> datetime:
    """The stores hand out aware instants (read as DateTime('UTC')); a naive one is UTC."""
    return i18n.aware(value).astimezone(tz)


def fmt_last(value: str | None, as_of: date, tz: ZoneInfo, stale: bool = False) -> str:
    """``MM-DD HH:MM`` in the as-of year; older data shows only its date (the year matters more).
    A feed that stopped shows ``!`` and the date of its last report."""
    if value is None:
        return "—"
    local = as_local(value, tz)
    if stale:
        return f"{STALE_MARK}{local:%Y-%m-%d}"
    return local.strftime("%m-%d %H:%M") if local.year == as_of.year else local.strftime("%Y-%m-%d")


# --- layout ---------------------------------------------------------------------------------------

def fixed_columns(width: int) -> list[tuple[str, int, bool]]:
    """The columns that fit next to a readable indicator code."""
    columns = list(COLUMNS)
    while _name_width(width, columns) < MIN_NAME_WIDTH and any(opt for _, _, opt in columns):
        last_optional = max(i for i, (_, _, opt) in enumerate(columns) if opt)
        columns.pop(last_optional)
    return columns


def _name_width(width: int, columns: list[tuple[str, int, bool]]) -> int:
    gaps = len(columns) + 1  # one space between each pair of the len(columns) + 2 columns
    return width - STATUS_WIDTH - sum(w for _, w, _ in columns) - gaps


def row_budget(height: int | None, n_rows: int, used: int) -> int:
    """How many indicator rows fit beside the ``used`` lines of header, table header and alerts,
    keeping one line for "+N more" when not everything fits."""
    if height is None:
        return n_rows
    room = height - used
    return n_rows if n_rows <= room else max(room - 1, 0)


def line(text: Text, width: int) -> Text:
    text.no_wrap = True
    text.truncate(width, overflow="ellipsis")
    return text


def zone_name(moment: datetime, lang: Lang) -> str:
    """北京时间 in Chinese for the plan's zone; else the zone's abbreviation (CST)."""
    if lang == "zh" and str(moment.tzinfo) == "Asia/Shanghai":
        return i18n.ZONE_NAME["zh"]
    return moment.tzname() or ""


def header(view: View, width: int, as_of: date | None, lang: Lang = "en") -> list[Text]:
    snap = view.snapshot
    title = Text(i18n.label(lang, "board_title"), style="bold")
    shown_day = snap.as_of if snap else as_of  # the figures' date, even if they are from a while ago
    title.append(f" · {i18n.label(lang, 'as_of')} {shown_day.isoformat() if shown_day else '—'}")
    when = (f"{i18n.label(lang, 'refreshed')} {snap.fetched_at:%H:%M:%S} {zone_name(snap.fetched_at, lang)}" if snap
            else i18n.label(lang, "not_refreshed"))
    gap = max(width - title.cell_len - i18n.cells(when), 1)
    first = title + Text(" " * gap) + Text(when)
    if not view.error:
        return [line(first, width), line(counts(snap, live=view.retry_s is not None, lang=lang), width)]
    problem = "refused" if view.problem != "unreachable" else "unreachable"
    retry = i18n.label(lang, "retrying", s=f"{view.retry_s:g}") if view.retry_s else ""
    banner = Text(i18n.label(lang, problem, target=view.target) + retry, style="bold white on red")
    reason = Text((i18n.label(lang, "last_good") if snap else "") + view.error, style="red")
    return [line(first, width), line(banner, width), line(reason, width)]


def counts(snap: Snapshot | None, live: bool, lang: Lang = "en") -> Text:
    """The number of indicators per status, then the feeds that stopped (they keep a status)."""
    text = Text()
    for status, style in STATUS_STYLE.items():
        n = sum(1 for r in snap.rows if r.row.status == status) if snap else 0
        if n == 0 and status in COUNTED_WHEN_PRESENT:
            continue
        text.append(f"{i18n.status_word(lang, status)} {n}", style=style)
        text.append("  ")
    stale = sum(r.row.stale for r in snap.rows) if snap else 0
    text.append(f"{i18n.status_word(lang, 'stale')} {stale} ({STALE_MARK})", style="red" if stale else "")
    text.append("  ")
    text.append(f"{i18n.label(lang, 'of')} {len(snap.rows) if snap else 0}"
                + (f" · {i18n.label(lang, 'quit')}" if live else ""))
    return text


def indicator_table(rows: list[BoardRow], width: int, as_of: date, tz: ZoneInfo, lang: Lang = "en",
                    catalog: Catalog | None = None) -> Table:
    """Widths in terminal cells (rich measures a CJK character as two), so Chinese names line up."""
    columns = fixed_columns(width)
    table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, expand=True, width=width,
                  show_edge=False, header_style="bold")
    table.add_column(i18n.label(lang, "status"), width=STATUS_WIDTH, no_wrap=True)
    table.add_column(i18n.label(lang, "indicator"), ratio=1, no_wrap=True, overflow="ellipsis")
    for name, w, _ in columns:
        table.add_column(i18n.label(lang, COLUMN_LABEL[name]), width=w, no_wrap=True, overflow="ellipsis",
                         justify="right")
    for item in rows:
        r = item.row
        cells = {"actual": number(r.actual), "expected": number(r.expected),
                 "%tgt": fmt_pct(r.pct_of_target), "30d": item.trend,
                 "last update": Text(fmt_last(r.last_observed_at, as_of, tz, r.stale),
                                     style="bold red" if r.stale else "")}
        name = i18n.indicator_name(catalog, r.indicator, lang) if catalog else r.indicator
        table.add_row(Text(i18n.status_word(lang, r.status), style=STATUS_STYLE.get(r.status, "")), Text(name),
                      *(cells[name] for name, _, _ in columns), style="dim" if r.status == "no_data" else None)
    return table


def alert_line(alert: dict[str, Any], width: int, tz: ZoneInfo, lang: Lang = "en",
               catalog: Catalog | None = None) -> Text:
    name = i18n.indicator_name(catalog, alert["indicator"], lang) if catalog else alert["indicator"]
    # Stored text is shown, never obeyed: control characters become U+FFFD (dashboards/terminal.py).
    text = Text(f"{as_local(alert['created_at'], tz):%m-%d %H:%M} {plain(name).plain} "
                f"{i18n.status_word(lang, alert['old_status'])} → ")
    text.append(i18n.status_word(lang, alert["new_status"]), style=STATUS_STYLE.get(alert["new_status"], "bold"))
    detail = i18n.alert_detail(alert, catalog, lang) if catalog else str(alert.get("detail") or "")
    if detail:
        # One alert, one line: a multi-line detail would break the height budget of the frame.
        text.append("  " + " ".join(plain(detail).plain.replace("\ufffd", " ").split()), style="dim")
    return line(text, width)


def frame(view: View, width: int, height: int | None, as_of: date | None, tz: ZoneInfo, lang: Lang = "en",
          catalog: Catalog | None = None) -> RenderableType:
    """The whole board for a terminal of ``width`` x ``height`` (height None: show every row), in
    ``lang`` with the catalog's names (without a catalog: the codes)."""
    top = header(view, width, as_of, lang)
    parts: list[RenderableType] = [*top]
    snap = view.snapshot
    if snap is None:
        return Group(*parts)
    alerts = snap.alerts[:MAX_ALERT_LINES]
    # table header + alerts title + the alert lines (or "none")
    shown = row_budget(height, len(snap.rows), len(top) + 2 + max(len(alerts), 1))
    parts.append(indicator_table(snap.rows[:shown], width, snap.as_of, tz, lang, catalog))
    if shown < len(snap.rows):
        parts.append(line(Text(i18n.label(lang, "more", n=len(snap.rows) - shown), style="italic"), width))
    parts.append(line(Text(i18n.label(lang, "latest_alerts"), style="bold underline"), width))
    parts += ([alert_line(a, width, tz, lang, catalog) for a in alerts]
              or [line(Text(i18n.label(lang, "none"), style="dim"), width)])
    return Group(*parts)


# --- loop -----------------------------------------------------------------------------------------

class Board:
    """Keeps the ClickHouse client and the last good snapshot between refreshes."""

    def __init__(self, settings: Settings, as_of: date | None, refresh_s: float, once: bool = False) -> None:
        self.settings = settings
        self.catalog = catalog_at(settings.catalog_dir)
        self.tz = ZoneInfo(self.catalog.plan.timezone)
        self.fixed_as_of = as_of
        self.refresh_s = refresh_s
        # The read-only user: a display tool never needs to write.
        self.client = connect(settings, reader=True)
        self.view = View(None, None, f"{settings.clickhouse_host}:{settings.clickhouse_port}",
                         None if once else refresh_s)

    def as_of(self) -> date:
        """Recomputed every refresh, so a board left running over midnight moves to the new day."""
        return self.fixed_as_of or default_as_of(self.catalog, datetime.now(self.tz).date())

    def refresh(self) -> View:
        try:
            snap = fetch(self.client, self.settings.clickhouse_database, self.catalog, self.as_of(),
                         datetime.now(self.tz))
        except (ClickHouseError, OSError, EOFError) as exc:
            self.client.disconnect()  # start the next attempt on a fresh connection
            problem = "answers with an error" if isinstance(exc, ServerException) else "unreachable"
            self.view = View(self.view.snapshot, describe(exc), self.view.target, self.view.retry_s, problem)
        else:
            self.view = View(snap, None, self.view.target, self.view.retry_s)
        return self.view

    def render(self, console: Console, fit_height: bool) -> RenderableType:
        height = console.size.height if fit_height else None
        return frame(self.view, console.size.width, height, self.as_of(), self.tz, self.settings.lang, self.catalog)


def describe(exc: BaseException) -> str:
    """The first line of the error, without clickhouse-driver's "Code: 210." prefix."""
    text = CODE_PREFIX.sub("", str(exc).strip())  # server errors put the message on the next line
    first = (text.splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:200]


def run_board(settings: Settings, as_of: date | None = None, refresh_s: float = 5.0, once: bool = False) -> None:
    """Draw the board every ``refresh_s`` seconds until Ctrl-C; ``once`` draws one frame to stdout.

    With ``once``, the frame fits the terminal if stdout is one, else it lists every indicator (for
    scripts); the exit status is 1 when ClickHouse could not be read.
    """
    # clickhouse-driver logs every failed connect with a traceback on stderr, which would tear the
    # live frame; the frame itself says what failed.
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    board = Board(settings, as_of, max(refresh_s, MIN_REFRESH_S), once=once)
    if once:
        draw_once(board)
        return
    with contextlib.suppress(KeyboardInterrupt), _sigterm_as_interrupt():
        live_loop(board)


def draw_once(board: Board) -> None:
    console = Console()
    view = board.refresh()
    console.print(board.render(console, fit_height=console.is_terminal))
    if view.error:
        raise SystemExit(1)


def live_loop(board: Board, sleep: Callable[[float], None] = time.sleep) -> None:
    console = Console()
    # screen=True: the alternate screen, restored on exit like top(1); crop, never scroll.
    with Live(console=console, screen=True, auto_refresh=False, vertical_overflow="crop") as live:
        while True:
            board.refresh()
            live.update(board.render(console, fit_height=True), refresh=True)
            sleep(board.refresh_s)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill`` ends the board as cleanly as Ctrl-C (the terminal leaves the alternate screen)."""
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
