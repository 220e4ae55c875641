"""`highland board` in a real 80x40 terminal (tmux) against a real ClickHouse.

A known feed is written straight into the test's own database; the expected figures are computed
from the feed by the reference model of tests/integration/support.py and formatted by the rules of
docs/board.md, then compared with what the terminal shows. Nothing here imports dashboards.board.
"""

from __future__ import annotations

import re
import shlex
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from highland.catalog.domain import Alert
from highland.catalog.loader import default_catalog
from highland.catalog.models import Direction
from highland.catalog.trajectory import Anchor, BaselineSource, expected, position
from highland.ingest.events import Accepted, validate
from highland.sinks.alerts import store
from highland.sinks.client import connect
from highland.sinks.writer import write_events

from highland.settings import Settings
from tests.conftest import ROOT
from tests.integration.support import TZ, Positioned, as_batch, dumps, event, reference_actuals, wait_for, worker_env

pytestmark = pytest.mark.integration
CATALOG = default_catalog()
AS_OF = date(2019, 12, 31)
EARLIER = AS_OF - timedelta(days=30)  # the trend's comparison date (docs/board.md)
WIDTH, HEIGHT = 80, 40
STATUSES = ("on_track", "at_risk", "off_track", "no_data")
# SGR codes tmux reports for the board's status colours (green, yellow, red, dim).
STATUS_SGR = {"on_track": "32", "at_risk": "33", "off_track": "31", "no_data": "2"}
CODES = {i.code for i in CATALOG.indicators}


def known_feed() -> list[dict]:
    """Three indicators in three states, each with a reading before and after D - 30 days."""
    feed = [event(f"ec-2019-{m}", "cq_commerce", "ecommerce_turnover", *(
        (1050, "亿元") if m % 2 else (1050 * 10_000, "万元")),  # the same amount in two units
        f"2019-{m:02d}-15T10:00:00+08:00") for m in range(1, 13)]
    feed += [
        event("ipi-nov", "cq_economy_it", "internet_plus_index", 4.0, "index", "2019-11-01T09:00:00+08:00"),
        event("ipi-dec", "cq_economy_it", "internet_plus_index", 4.6, "index", "2019-12-15T09:30:00+08:00"),
        # Lower is better: latency doubling is a worsening.
        event("lat-nov", "cq_comms_admin", "latency_world_cities", 100, "ms", "2019-11-01T08:00:00+08:00"),
        event("lat-dec", "cq_comms_admin", "latency_world_cities", 0.2, "s", "2019-12-10T08:00:00+08:00"),
    ]
    return feed


def write(settings: Settings, feed: list[dict]) -> None:
    batch = []
    for offset, e in enumerate(feed):
        verdict = validate(dumps(e), CATALOG)
        assert isinstance(verdict, Accepted), verdict
        batch.append(Positioned(verdict, 0, offset))
    write_events(connect(settings), settings.clickhouse_database, as_batch(batch), datetime.now(UTC),
                 CATALOG.plan.timezone)


# --- what the board should show, computed from the feed ------------------------------------------

def shown(v: float) -> str:
    """docs/board.md: 2 decimals below 10,000, whole numbers below a million, then M / G."""
    if abs(v) < 1e4:
        return f"{v:,.2f}"
    if abs(v) < 1e6:
        return f"{v:,.0f}"
    return f"{v / 1e6:,.2f}M" if abs(v) < 1e9 else f"{v / 1e9:,.2f}G"


def first_report(feed: list[dict], code: str) -> Anchor | None:
    """Where a path the plan gives no baseline for starts (docs/numbers.md, "Baselines from data"):
    the feed reports nothing for 2015, so at its first report, the value that day."""
    ind = CATALOG.indicator(code)
    if not ind.baseline_from_data:
        return None
    day = min(datetime.fromisoformat(e["observed_at"]).astimezone(TZ).date() for e in feed if e["indicator"] == code)
    return Anchor(position(ind, day), reference_actuals(feed, CATALOG, day)[code], BaselineSource.FIRST_REPORT, day)


def plan_at(feed: list[dict], code: str, day: date) -> float:
    value = expected(CATALOG.indicator(code), day, None, first_report(feed, code))
    assert value is not None
    return value


def performance_ratio(feed: list[dict], code: str, actual: float, day: date) -> float:
    ind = CATALOG.indicator(code)
    plan = plan_at(feed, code, day)
    return plan / actual if ind.direction is Direction.DOWN else actual / plan


def want_row(feed: list[dict], code: str) -> list[str]:
    """status, actual, expected, %tgt, trend and last update, as the board's row should show them."""
    ind = CATALOG.indicator(code)
    actual = reference_actuals(feed, CATALOG, AS_OF)[code]
    pct = 100 * (ind.target.value / actual if ind.direction is Direction.DOWN else actual / ind.target.value)
    now = performance_ratio(feed, code, actual, AS_OF)
    then = performance_ratio(feed, code, reference_actuals(feed, CATALOG, EARLIER)[code], EARLIER)
    thresholds = CATALOG.thresholds_for(ind)
    status = "on_track" if now >= thresholds.on_track else "at_risk" if now >= thresholds.at_risk else "off_track"
    arrow = "→" if abs(now - then) < 0.01 else "↑" if now > then else "↓"
    last = max(datetime.fromisoformat(e["observed_at"]) for e in feed if e["indicator"] == code)
    return [status, code, shown(actual), shown(plan_at(feed, code, AS_OF)), f"{pct:.1f}", arrow,
            *last.astimezone(TZ).strftime("%m-%d %H:%M").split()]


# --- the terminal ---------------------------------------------------------------------------------

class Terminal:
    """A private tmux server (its own socket) running one command in a WIDTH x HEIGHT pane."""

    def __init__(self, name: str, command: str, env: dict[str, str]) -> None:
        self.socket = f"highland-board-{name}"
        env = {k: v for k, v in env.items() if k != "TMUX"} | {"LANG": "C.UTF-8", "TERM": "xterm-256color"}
        # The server is started by this call, so the pane inherits exactly this environment.
        self._tmux("new-session", "-d", "-s", "board", "-x", str(WIDTH), "-y", str(HEIGHT), "-c", str(ROOT),
                   command, env=env)

    def _tmux(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], env=env, capture_output=True, text=True,
                              check=check, timeout=20)
        return done.stdout

    def screen(self, colours: bool = False) -> str:
        # -J joins wrapped lines: a line wider than the pane comes back longer than WIDTH.
        return self._tmux("capture-pane", "-p", "-J", *(["-e"] if colours else []), "-t", "board")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "board", *keys)

    def close(self) -> None:
        self._tmux("kill-server", check=False)


@contextmanager
def board_terminal(settings: Settings, tmp: Path, name: str, lang: str = "en") -> Iterator[Terminal]:
    """The board in a tmux pane; in English unless ``lang`` says otherwise (the figures checked here
    are the same in both languages; test_board_zh.py checks the Chinese board)."""
    env = worker_env(settings, name, tmp) | {
        "HIGHLAND_CLICKHOUSE_READER_PASSWORD": settings.clickhouse_reader_password.get_secret_value(),
        "HIGHLAND_CLICKHOUSE_PORT": str(settings.clickhouse_port),
        "HIGHLAND_LANG": lang,
    }
    # After the board ends, the shell prints its exit status and keeps the pane open to be read.
    command = (f"{shlex.quote(sys.executable)} -m highland board --as-of {AS_OF} --refresh 1; "
               "echo board-exit=$?; sleep 120")
    term = Terminal(name, command, env)
    try:
        yield term
    finally:
        term.close()


def rows_on(screen: str) -> dict[str, list[str]]:
    """Indicator rows by code: the lines that start with a status word and then a catalog code."""
    rows = {}
    for text in screen.splitlines():
        tokens = text.split()
        if len(tokens) > 2 and tokens[0] in STATUSES and tokens[1] in CODES:
            rows[tokens[1]] = tokens
    return rows


def row_count(screen: str) -> int:
    """Every indicator row, including those whose code the board cut short with "…"."""
    def is_code(token: str) -> bool:
        return token in CODES or (token.endswith("…") and any(c.startswith(token[:-1]) for c in CODES))
    return sum(1 for text in screen.splitlines()
               if len(tokens := text.split()) > 2 and tokens[0] in STATUSES and is_code(tokens[1]))


def wait_for_screen(term: Terminal, check: Callable[[str], bool], what: str, timeout_s: float = 30) -> str:
    wait_for(lambda: check(term.screen()), timeout_s, what, lambda: term.screen())
    return term.screen()


# --- tests ----------------------------------------------------------------------------------------

def test_the_board_shows_the_feed_fits_80_columns_and_follows_new_data(isolated: Settings, unique: str,
                                                                         tmp_path: Path):
    feed = known_feed()
    write(isolated, feed)
    created = datetime.now(UTC).replace(microsecond=0, tzinfo=None)  # DateTime: UTC, whole seconds
    store(connect(isolated), isolated.clickhouse_database, [Alert(
        "board-test-1", "status", 1, "ecommerce_turnover", "cq_commerce", "no_data", "at_risk", 12_600.0,
        14_449.0, AS_OF, "set by the board test", created)])
    watched = ["ecommerce_turnover", "internet_plus_index", "latency_world_cities"]

    with board_terminal(isolated, tmp_path, unique) as term:
        screen = wait_for_screen(term, lambda s: set(watched) <= rows_on(s).keys(), "the board's rows")
        lines = screen.rstrip("\n").splitlines()
        assert len(lines) <= HEIGHT and max(len(x) for x in lines) <= WIDTH, screen
        rows = rows_on(screen)
        for code in watched:
            assert rows[code] == want_row(feed, code), screen
        assert {rows[c][0] for c in watched} == {"on_track", "at_risk", "off_track"}, "the feed covers each state"

        # The header is complete: nothing of it was cut off at the right edge.
        assert re.fullmatch(r"Highland board · as of 2019-12-31 +refreshed \d\d:\d\d:\d\d CST *", lines[0]), lines[0]
        counts = dict(re.findall(r"(on_track|at_risk|off_track|no_data) (\d+)", lines[1]))
        assert counts == {"on_track": "1", "at_risk": "1", "off_track": "1", "no_data": str(len(CODES) - 3)}
        # Worst first, and every indicator is either on screen or counted in "+N more".
        assert [rows[c][0] for c in rows][:3] == ["off_track", "at_risk", "on_track"], screen
        more = re.search(r"^\+(\d+) more", screen, re.MULTILINE)
        assert more and row_count(screen) + int(more.group(1)) == len(CODES), screen
        alert = f"{created.replace(tzinfo=UTC).astimezone(TZ):%m-%d %H:%M} ecommerce_turnover no_data → at_risk"
        assert any(x.startswith(alert) for x in lines), screen

        coloured = term.screen(colours=True)
        for code in watched:
            status = rows[code][0]
            assert re.search(rf"\x1b\[[0-9;]*\b{STATUS_SGR[status]}m{status}", coloured), (status, coloured)

        # A late December figure arrives: the next refresh (1 s) shows the new year-to-date total.
        extra = event("ec-2019-extra", "cq_commerce", "ecommerce_turnover", 2_000, "亿元", "2019-12-20T10:00:00+08:00")
        write(isolated, [extra])
        new_row = want_row([*feed, extra], "ecommerce_turnover")
        assert new_row[2] != rows["ecommerce_turnover"][2]
        wait_for_screen(term, lambda s: rows_on(s).get("ecommerce_turnover") == new_row, "the new figure", 15)

        term.keys("C-c")
        after = wait_for_screen(term, lambda s: "board-exit=" in s, "the board to exit on Ctrl-C", 15)
        assert "board-exit=0" in after and "Traceback" not in after, after


class Forwarder(socketserver.ThreadingTCPServer):
    """A TCP pipe to ClickHouse that the test switches on and off, to play an outage."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sockets: list[socket.socket] = []
        super().__init__(("127.0.0.1", port), _Pipe)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        for s in self.sockets:  # cut the board's open connection too: a real outage
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class _Pipe(socketserver.BaseRequestHandler):
    server: Forwarder

    def handle(self) -> None:
        upstream = socket.create_connection(self.server.upstream)
        self.server.sockets += [upstream, self.request]
        threading.Thread(target=_copy, args=(upstream, self.request), daemon=True).start()
        _copy(self.request, upstream)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    with suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_board_survives_clickhouse_outages_and_recovers(isolated: Settings, unique: str, tmp_path: Path):
    port = free_port()
    behind_pipe = isolated.model_copy(update={"clickhouse_port": port})
    with board_terminal(behind_pipe, tmp_path, unique) as term:
        # Nothing listens yet: the board must say so in the frame and keep going.
        wait_for_screen(term, lambda s: f"ClickHouse unreachable at 127.0.0.1:{port}" in s, "the outage message")
        pipe = Forwarder(port, (isolated.clickhouse_host, isolated.clickhouse_port))
        try:
            wait_for_screen(term, lambda s: f"no_data {len(CODES)}" in s, "the board to recover")
        finally:
            pipe.stop()
        screen = wait_for_screen(term, lambda s: "showing the last good refresh" in s, "the second outage")
        assert f"ClickHouse unreachable at 127.0.0.1:{port}" in screen and "board-exit" not in screen, screen
        assert max(len(x) for x in screen.splitlines()) <= WIDTH, screen
