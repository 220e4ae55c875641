"""Plans as data, and the catalog as the seed says it, end to end through real processes.

- A catalog made for this test (not a real plan: its targets are invented for the test, no later
  plan's are guessed) is chosen with HIGHLAND_CATALOG_DIR and drives `highland push`, a real
  `highland worker`, `highland progress` and `highland verify`.
- On the 13th plan shipped: a latency path from the agency's reported 2015 value, and a city-wide
  fiber report next to district reports, each against a hand-computed number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.sinks.client import connect
from highland.sinks.progress import progress
from highland.sinks.verification import differences

from highland.settings import Settings, worker_environment
from tests.conftest import ROOT
from tests.integration.support import WorkerProcess, event, wait_for
from tests.integration.test_worker import push

pytestmark = pytest.mark.integration

PLAN = """\
plan:
  code: test_plan_made_for_this_test
  title_zh: 测试用规划
  title_en: A plan made for this test
  document: none
  published: 2021-03-01
  timezone: Asia/Shanghai
  baseline_year: 2020
  target_year: 2025
  default_thresholds: {on_track: 0.95, at_risk: 0.85}
indicators:
  - code: widget_sales
    name_zh: 小部件销售额
    name_en: Widget sales
    section: test
    unit: 亿元
    unit_aliases: {万元: 0.0001}
    kind: flow
    baseline: {year: 2020, value: 100}
    target: {year: 2025, value: 200}
    agency: test_office
    cadence_days: 31
  - code: gadget_latency
    name_zh: 小装置时延
    name_en: Gadget latency
    section: test
    unit: ms
    kind: index
    direction: down
    baseline: {year: 2020, value: from_data}
    target: {year: 2025, value: 50}
    agency: test_office
    cadence_days: 31
  - code: port_count
    name_zh: 端口数
    name_en: Ports
    section: test
    unit: ports
    kind: level
    regional: true
    baseline: {year: 2020, value: from_data}
    target: {year: 2025, value: 1000}
    agency: test_office
    cadence_days: 31
"""
AGENCIES = """\
agencies:
  - {code: test_office, name_zh: 测试办公室, name_en: Test office}
"""
DISTRICTS = """\
districts:
  - {code: alpha, name_zh: 甲区, name_en: Alpha}
  - {code: beta, name_zh: 乙区, name_en: Beta}
"""


def write_catalog(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in (("plan.yaml", PLAN), ("agencies.yaml", AGENCIES), ("districts.yaml", DISTRICTS)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def highland(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **worker_environment(settings), "HIGHLAND_LANG": "en", **extra}
    return subprocess.run([sys.executable, "-m", "highland", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def dashboard_path(settings: Settings, indicator: str, day: str) -> float | None:
    """expected(day) as the dashboards read it: the current version of the plan tables."""
    db = settings.clickhouse_database
    rows = connect(settings).execute(
        f"SELECT expected, has_expected FROM {db}.plan_trajectory WHERE version = (SELECT argMax(version, "
        f"(seq, version)) FROM {db}.plan_versions) AND indicator = %(ind)s AND day = %(day)s LIMIT 1",
        {"ind": indicator, "day": date.fromisoformat(day)})
    return rows[0][0] if rows and rows[0][1] else None


def test_a_catalog_made_for_the_test_drives_push_worker_progress_and_verify(isolated: Settings, tmp_path: Path):
    folder = write_catalog(tmp_path / "plan")
    settings = isolated.model_copy(update={"catalog_dir": folder})
    checked = highland(settings, "catalog", "validate", str(folder))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    feed = [
        event("s1", "test_office", "widget_sales", 60, "亿元", "2022-03-31T12:00:00+08:00"),
        event("s2", "test_office", "widget_sales", 700_000, "万元", "2022-06-30T12:00:00+08:00"),  # 70 亿元
        event("l0", "test_office", "gadget_latency", 80, "ms", "2020-12-31T12:00:00+08:00"),  # end of 2020
        event("l1", "test_office", "gadget_latency", 75, "ms", "2022-06-30T12:00:00+08:00"),
        event("pa", "test_office", "port_count", 300, "ports", "2021-06-30T12:00:00+08:00", region="alpha"),
        event("pb", "test_office", "port_count", 200, "ports", "2021-06-30T12:00:00+08:00", region="beta"),
        event("pa2", "test_office", "port_count", 350, "ports", "2022-01-31T12:00:00+08:00", region="alpha"),
        event("pc", "test_office", "port_count", 650, "ports", "2022-03-31T12:00:00+08:00", region="chongqing"),
        # An indicator of the 13th plan is unknown to this one.
        event("x", "test_office", "ecommerce_turnover", 1, "亿元", "2022-03-31T12:00:00+08:00"),
    ]
    rows = tmp_path / "feed.jsonl"
    rows.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in feed), encoding="utf-8")
    issued = highland(settings, "tokens", "issue", "--agency", "test_office")  # an agency of this plan only
    assert issued.returncode == 0, issued.stdout + issued.stderr
    pushed = highland(settings, "push", str(rows), "--agency", "test_office", "--json",
                      HIGHLAND_TOKEN=issued.stdout.strip())
    report = json.loads(pushed.stdout)
    assert "accepted" in report, pushed.stdout + pushed.stderr
    assert (report["accepted"], report["rejected"]) == (8, 1), pushed.stdout + pushed.stderr
    assert [r["reason"] for r in report["by_reason"]] == ["unknown_indicator"]

    worker = WorkerProcess(settings, "plan", tmp_path)  # HIGHLAND_CATALOG_DIR reaches it through the env
    try:
        def numbers() -> dict[str, Any]:
            done = highland(settings, "progress", "--as-of", "2022-06-30", "--json")
            return {r["indicator"]: r for r in json.loads(done.stdout)["indicators"]} if done.returncode == 0 else {}

        wait_for(lambda: (numbers().get("widget_sales") or {}).get("actual") == 130, 90, "the worker to store the feed",
                 worker.log)
        rows_now = numbers()
        # The worker's evaluator writes the baselines it took from data into the dashboards' plan tables.
        wait_for(lambda: dashboard_path(settings, "gadget_latency", "2022-06-30") is not None, 60,
                 "the plan tables to carry the latency's baseline", worker.log)
    finally:
        worker.kill()
    assert set(rows_now) == {"widget_sales", "gadget_latency", "port_count"}
    sales, latency, ports = rows_now["widget_sales"], rows_now["gadget_latency"], rows_now["port_count"]
    # Flow: 2022's total on the path from 100 (2020) to 200 (2025) is 140; 181 of 365 days are over.
    assert sales["expected"] == pytest.approx(140 * 181 / 365)
    assert (sales["actual"], sales["status"], sales["baseline_source"]) == (130, "on_track", "plan")
    # Latency: baseline 80 ms reported for the end of 2020; 30 June 2022 is 1 + 181/365 years on a
    # 5-year path down to 50: 80 - 30 * 1.4958904 / 5 = 71.024658; 71.02/75 = 0.947: at risk.
    assert latency["expected"] == pytest.approx(71.024658, rel=1e-6)
    assert (latency["actual"], latency["status"]) == (75, "at_risk")
    assert (latency["baseline"], latency["baseline_source"], latency["baseline_day"]) == (80, "reported", "2020-12-31")
    # Ports: the first report (30 June 2021: 300 + 200) anchors the path at 181/365 years; a city-wide
    # report (650) is the city's value from then on, never added to the districts (350 + 200).
    p0 = 181 / 365
    assert ports["expected"] == pytest.approx(500 + 500 * (1 + p0 - p0) / (5 - p0))  # = 611.0097
    assert (ports["actual"], ports["status"]) == (650, "on_track")
    assert (ports["baseline"], ports["baseline_source"], ports["baseline_day"]) == (500, "first_report", "2021-06-30")
    assert dashboard_path(settings, "gadget_latency", "2022-06-30") == pytest.approx(71.024658, rel=1e-6)
    assert dashboard_path(settings, "port_count", "2022-06-30") == pytest.approx(ports["expected"])
    verified = highland(settings, "verify", "--as-of", "2021-06-30", "--as-of", "2022-06-30")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 difference(s) over 2 date(s) and 3 indicators" in verified.stdout


CATALOG = default_catalog()


def test_the_13th_plan_latency_path_and_a_city_wide_fiber_report(isolated: Settings, tmp_path: Path):
    feed = [
        # 降至150毫秒以内: the agency's value for the end of 2015 is the baseline, 230 ms at the end of 2017.
        event("w2015", "cq_comms_admin", "latency_world_cities", 250, "ms", "2015-12-31T12:00:00+08:00"),
        event("w2017", "cq_comms_admin", "latency_world_cities", 230, "ms", "2017-12-31T12:00:00+08:00"),
        # Ports by district in March 2019, then the city-wide figure in June.
        event("f1", "cq_comms_admin", "fiber_broadband_ports", 6_000_000, "ports", "2019-03-31T12:00:00+08:00",
              region="yuzhong"),
        event("f2", "cq_comms_admin", "fiber_broadband_ports", 4_000_000, "ports", "2019-03-31T12:00:00+08:00",
              region="jiangbei"),
        event("f3", "cq_comms_admin", "fiber_broadband_ports", 1100, "万个", "2019-06-30T12:00:00+08:00"),
        event("f4", "cq_comms_admin", "fiber_broadband_ports", 6_500_000, "ports", "2019-09-30T12:00:00+08:00",
              region="yuzhong"),
    ]
    worker = WorkerProcess(isolated, "seed", tmp_path)
    try:
        push(isolated, feed)
        client, db = connect(isolated), isolated.clickhouse_database

        def rows(day: date) -> dict[str, Any]:
            return {r.indicator: r for r in progress(client, db, CATALOG, day)}

        wait_for(lambda: rows(date(2019, 9, 30))["fiber_broadband_ports"].actual == 11_000_000, 90,
                 "the worker to store the feed", worker.log)
    finally:
        worker.kill()
    latency = rows(date(2017, 12, 31))["latency_world_cities"]
    # 250 - (250 - 150) * 2/5 = 210 ms expected; 210/230 = 0.913: at risk (a flat bar of 150 said off track).
    assert latency.expected == pytest.approx(210.0)
    assert (latency.actual, latency.status) == (230, "at_risk")
    assert (latency.baseline, latency.baseline_source) == (250, "reported")
    march, june = rows(date(2019, 3, 31))["fiber_broadband_ports"], rows(date(2019, 9, 30))["fiber_broadband_ports"]
    assert march.actual == 10_000_000  # districts only: their sum
    assert june.actual == 11_000_000  # the city-wide report, not 11 M + 6.5 M + 4 M
    # The fiber path starts at the first report (10 M on 31 March 2019, 3 + 90/365 years in) and reaches
    # 15 M at the end of 2020: on 30 September 2019 (3 + 273/365) it expects
    # 10 M + 5 M * (183/365) / (2 - 90/365) = 11,429,688.
    assert june.expected == pytest.approx(10e6 + 5e6 * (183 / 365) / (2 - 90 / 365))
    assert june.baseline_source == "first_report"
    assert differences(client, db, CATALOG, [date(2017, 12, 31), date(2019, 3, 31), date(2019, 9, 30)]) == []
