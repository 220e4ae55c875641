"""`highland stack` against real processes: idempotent up, honest status, down stops only its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from highland.settings import Settings
from highland.stack import local
from highland.stack.processes import port_open, process_exists
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def highland(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "highland", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=120)


def test_up_again_starts_nothing_and_keeps_the_same_processes(stack: Settings):
    before = {r["component"]: r["pid"] for r in local.status(stack)}
    report = local.up(stack)
    assert report.started == []
    assert report.topics_created == []
    assert report.migrations_applied == []
    assert {r["component"]: r["pid"] for r in local.status(stack)} == before


def test_status_names_the_broker_mode_and_what_a_restart_loses(stack: Settings):
    result = highland("stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["component"]: r for r in json.loads(result.stdout)}
    assert rows["broker"]["answers"] and rows["clickhouse"]["answers"]
    assert rows["broker"]["broker"] == stack.broker
    if stack.broker == "kafka":
        assert "Apache Kafka" in rows["broker"]["detail"] and "durable" in rows["broker"]["detail"]
    else:
        assert "memory" in rows["broker"]["detail"] and "LOSES" in rows["broker"]["detail"]


def test_progress_lists_every_indicator_as_no_data_on_an_empty_database(isolated: Settings):
    from highland.catalog.loader import default_catalog

    env = {"HIGHLAND_CLICKHOUSE_DATABASE": isolated.clickhouse_database}
    result = highland("progress", "--json", "--as-of", "2018-06-30", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["indicators"]
    assert [r["indicator"] for r in rows] == [i.code for i in default_catalog().indicators]
    assert {r["status"] for r in rows} == {"no_data"}
    turnover = next(r for r in rows if r["indicator"] == "ecommerce_turnover")
    assert (turnover["baseline"], turnover["target"]) == (6000, 18000)


def test_down_stops_only_what_up_started(tmp_path):
    """A second, private stack on other ports: up, then down; the session stack keeps running."""
    env = {
        "HIGHLAND_STATE_DIR": str(tmp_path / "state"),
        "HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:31192",
        "HIGHLAND_KAFKA_CONTROLLER_PORT": "31193",
        "HIGHLAND_CLICKHOUSE_PORT": "31100",
        "HIGHLAND_CLICKHOUSE_HTTP_PORT": "31124",
    }
    up = highland("stack", "up", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "broker" in up.stdout and "clickhouse" in up.stdout
    assert port_open(31192) and port_open(31100)
    pids = [r["pid"] for r in json.loads(highland("stack", "status", "--json", env=env).stdout)]
    assert all(pids)

    down = highland("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not port_open(31192) and not port_open(31100)
    assert not any(process_exists(pid) for pid in pids)
    status = highland("stack", "status", "--json", env=env)
    assert status.returncode == 1  # nothing answers any more
    assert port_open(int(Settings().bootstrap_servers[0].rsplit(":", 1)[1])), "session stack untouched"


def test_commands_name_an_unreachable_clickhouse_in_one_line(stack: Settings):
    for args, env in ((("progress",), {"HIGHLAND_CLICKHOUSE_PORT": "1"}),
                      (("alerts",), {"HIGHLAND_CLICKHOUSE_READER_PASSWORD": "wrong"})):  # duty staff's user
        result = highland(*args, env=env)
        assert result.returncode == 2
        assert "error: ClickHouse at 127.0.0.1:" in result.stderr
        assert "Traceback" not in result.stderr
