"""Test support: feeds with known answers, an independent reference model, and worker processes.

The reference model below re-implements CONTRACT.md §2 in plain Python, from the events as
pushed, so the integration tests compare the ClickHouse SQL with a second, independent reading
of the contract rather than with itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from highland.catalog.models import Catalog, Kind
from highland.ingest.events import Accepted
from highland.sinks.writer import BatchColumns, BatchShares

from highland.settings import Settings, worker_environment
from tests.conftest import ROOT

TZ = ZoneInfo("Asia/Shanghai")


def reference_actuals(events: Iterable[dict], catalog: Catalog, as_of: date) -> dict[str, float]:
    """actual(as_of) per indicator, from the pushed events in push order (all valid)."""
    latest: dict[tuple[str, str], dict] = {}
    for e in events:
        key = (e["agency"], e["event_id"])
        if key not in latest or e.get("revision", 0) > latest[key].get("revision", 0):
            latest[key] = e
    totals: dict[str, float] = {}
    newest: dict[tuple[str, str], tuple[tuple, float]] = {}
    for e in latest.values():
        ind = catalog.indicator(e["indicator"])
        value = e["value"] * ind.factor_for(e["unit"])
        observed = datetime.fromisoformat(e["observed_at"])
        local = observed.astimezone(TZ).date()
        if local > as_of:
            continue
        if ind.kind is Kind.FLOW:
            if local.year == as_of.year:
                totals[ind.code] = totals.get(ind.code, 0.0) + value
        else:
            region = e.get("region", "chongqing")
            rank = (observed.timestamp(), e.get("revision", 0), e["event_id"])
            if (ind.code, region) not in newest or rank > newest[(ind.code, region)][0]:
                newest[(ind.code, region)] = (rank, value)
    # A city-wide report, once there is one, is the city's level; districts are summed only without one.
    city_wide = {code for code, region in newest if region == "chongqing"}
    for (code, region), (_rank, value) in newest.items():
        if code not in city_wide or region == "chongqing":
            totals[code] = totals.get(code, 0.0) + value
    return totals


def event(event_id: str, agency: str, indicator: str, value: float, unit: str, observed_at: str,
          revision: int = 0, region: str | None = None) -> dict:
    e = {"event_id": event_id, "revision": revision, "agency": agency, "indicator": indicator,
         "value": value, "unit": unit, "observed_at": observed_at}
    if region is not None:
        e["region"] = region
    return e


def worker_env(settings: Settings, name: str, tmp: Path) -> dict[str, str]:
    """Environment for a `highland worker` process using the test's own topics and database."""
    return {**os.environ, **worker_environment(settings), "HIGHLAND_WORKER_DATA_DIR": str(tmp / f"faust-{name}")}


def free_port() -> int:
    """A port nobody listens on now (a fixed one collides with a test's other workers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """A real `highland worker` subprocess, its /health and /metrics on a port of its own (``web_port``)."""

    def __init__(self, settings: Settings, name: str, tmp: Path) -> None:
        self.log_path = tmp / f"worker-{name}.log"
        self._log = self.log_path.open("ab")
        self.web_port = free_port()
        env = {**worker_env(settings, name, tmp), "HIGHLAND_WORKER_WEB_PORT": str(self.web_port)}
        self.proc = subprocess.Popen([sys.executable, "-m", "highland", "worker", "--loglevel", "info"],
                                     env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, path: str) -> bytes:
        """GET ``path`` from the worker's web server (/health, /metrics)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as answer:
            return answer.read()  # type: ignore[no-any-return]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, on_timeout: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{on_timeout()}")


def dumps(e: dict) -> bytes:
    return json.dumps(e, ensure_ascii=False).encode()



class Positioned(NamedTuple):
    """An accepted event and where it was read from (partition, offset)."""

    event: Accepted
    partition: int
    offset: int


def as_batch(items: Iterable[Positioned]) -> BatchColumns:
    """``items`` as one batch, built the way the worker builds its batches (BatchShares)."""
    shares = BatchShares(1)
    for event, partition, offset in items:
        shares.add(event, partition, offset)
    [columns] = shares.columns()
    return columns


def one_bad_row_per_reason(good: dict[str, Any]) -> dict[str, Any]:
    """A row (a JSON Lines line or an event) for each rejection reason a file can meet, made from
    the valid event ``good`` (its value 12.5): the reason it must get -> the row."""
    in_three_days = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    return {
        "malformed_json": "{not json",
        "schema_violation": {**good, "event_id": "bad id"},
        "unknown_indicator": {**good, "event_id": "b2", "indicator": "gdp"},
        "unknown_region": {**good, "event_id": "b3", "region": "atlantis"},
        "unit_mismatch": {**good, "event_id": "b4", "unit": "kg"},
        "not_finite": json.dumps({**good, "event_id": "b5"}).replace("12.5", "NaN"),
        "negative_value": {**good, "event_id": "b6", "value": -3},
        "future_timestamp": {**good, "event_id": "b7", "observed_at": in_three_days},
        "out_of_range": {**good, "event_id": "b10", "observed_at": "2999-01-01T00:00:00+08:00"},
        "forbidden_agency": {**good, "event_id": "b8", "agency": "cq_transport"},
        "payload_too_large": {**good, "event_id": "b9", "pad": "x" * 70_000},
    }
