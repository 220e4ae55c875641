"""Whatever reaches a terminal from a user, a file or a server is printed as text, never obeyed:
no rich markup read in it (a closing tag such as ``[/oops]`` crashed the CLI), no control character
passed through (an escape sequence could clear or retitle the duty terminal). docs/security.md.
Stored dead letters are covered end to end in tests/integration/test_privileges.py."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from highland.dashboards.board import alert_line
from rich.console import Console

from tests.conftest import ROOT

HOSTILE = "[/oops] \x1b[2J\x1b]0;owned\x07 [bold]x\u202e"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "highland", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HIGHLAND_STATE_DIR": str(ROOT / ".highland" / "x"),
                                           "COLUMNS": "200"})


def _assert_literal(output: str) -> None:
    assert "Traceback" not in output and "MarkupError" not in output
    assert "[/oops]" in output
    assert not any(ch in output for ch in "\x1b\x07\u202e")


@pytest.mark.parametrize("command", [("template", "--agency", HOSTILE),
                                     ("push", "FILE", "--agency", HOSTILE, "--dry-run")])
def test_an_error_naming_what_the_user_typed_prints_it_literally(command: tuple[str, ...], tmp_path: Path):
    feed = tmp_path / "feed.jsonl"
    feed.write_text("{}\n")
    done = _cli(*(str(feed) if arg == "FILE" else arg for arg in command))
    assert done.returncode == 2
    _assert_literal(done.stderr)


def test_the_push_report_prints_a_rows_hostile_text_literally(tmp_path: Path):
    row = {"event_id": "e-1", "agency": "cq_comms_admin", "indicator": "telecom_business_volume", "value": 1,
           "unit": HOSTILE, "observed_at": "2019-01-01T00:00:00+08:00"}
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps(row) + "\n")
    done = _cli("push", str(feed), "--agency", "cq_comms_admin", "--dry-run")
    assert done.returncode == 1  # rejected: unit_mismatch
    assert "unit_mismatch" in done.stdout
    _assert_literal(done.stdout)


def test_the_boards_alert_line_shows_stored_text_literally():
    alert = {"created_at": datetime(2020, 1, 1, tzinfo=UTC), "indicator": HOSTILE, "old_status": "no_data",
             "new_status": "off_track", "detail": HOSTILE}
    console = Console(width=200, record=True, force_terminal=False)
    console.print(alert_line(alert, 200, ZoneInfo("Asia/Shanghai")))
    _assert_literal(console.export_text())
