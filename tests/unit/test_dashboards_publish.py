"""`highland dashboards publish` against a FAKE Grafana: an in-process HTTP server implementing the
few endpoints of Grafana's HTTP API that publish uses, as documented (datasources by uid, folders,
dashboards/db, provisioning alert-rules and rule-groups). It proves the calls, payloads and
idempotency as we understand the API; it is not a real Grafana (none can run here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from highland.dashboards import publish as publish_module
from highland.dashboards.build import build_all
from highland.dashboards.publish import PublishError, publish_changes

from highland.settings import Settings

TOKEN = "glsa_test_token"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


class FakeGrafana:
    """State of the fake server, and every write request it received."""

    def __init__(self) -> None:
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.group_interval = 10  # Grafana's base interval for a group created rule by rule
        self.writes: list[tuple[str, str, Any]] = []

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")[1:]  # drop "api"
        if method != "GET":
            self.writes.append((method, path, body))
        route = {"frontend": self._settings, "datasources": self._datasources, "folders": self._folders,
                 "dashboards": self._dashboards, "v1": self._provisioning}.get(parts[0])
        return route(method, parts[1:], body) if route else (404, {"message": "not found"})

    def _settings(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        return 200, {"buildInfo": {"version": "12.1.1"}}

    def _datasources(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if method == "POST":
            self.datasources[body["uid"]] = body
            return 200, {"message": "Datasource added", "datasource": body}
        uid = parts[1]
        if method == "PUT":
            self.datasources[uid] = body
            return 200, {"message": "Datasource updated"}
        if uid not in self.datasources:
            return 404, {"message": "Data source not found"}
        shown = {k: v for k, v in self.datasources[uid].items() if k != "secureJsonData"}
        return 200, {**shown, "id": 3, "orgId": 1, "secureJsonFields": {"password": True}}

    def _folders(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if method == "POST":
            self.folders[body["uid"]] = body
            return 200, body
        return (200, self.folders[parts[0]]) if parts[0] in self.folders else (404, {"message": "folder not found"})

    def _dashboards(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if method == "POST":
            if body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            board = body["dashboard"]
            version = self.dashboards.get(board["uid"], {}).get("version", 0) + 1
            self.dashboards[board["uid"]] = {**board, "id": 11, "version": version}
            return 200, {"status": "success", "uid": board["uid"], "version": version}
        uid = parts[1]
        if uid not in self.dashboards:
            return 404, {"message": "Dashboard not found"}
        return 200, {"dashboard": self.dashboards[uid], "meta": {"folderUid": "highland"}}

    def _provisioning(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if parts[1] == "folder":  # folder/<uid>/rule-groups/<group>
            if method == "PUT":
                self.group_interval = body["interval"]
            rules = [r for r in self.rules.values() if r["ruleGroup"] == parts[4]]
            return 200, {"title": parts[4], "folderUid": parts[2], "interval": self.group_interval, "rules": rules}
        if method == "POST":
            self.rules[body["uid"]] = body
            return 201, body
        uid = parts[2]
        if method == "PUT":
            self.rules[uid] = body
            return 200, body
        if uid not in self.rules:
            return 404, {"message": "rule not found"}
        return 200, {**self.rules[uid], "id": 5, "updated": "2026-01-01T00:00:00Z", "provenance": "api"}


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"message": "Unauthorized"})
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            return self._reply(*state.handle(self.command, self.path, body))

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


REAL_SYNC = publish_module.sync_plan


@pytest.fixture(autouse=True)
def no_clickhouse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan-table sync needs ClickHouse; tests/integration covers it."""
    monkeypatch.setattr(publish_module, "sync_plan", lambda settings: "plan tables: synced (stub)")


def _settings(url: str, **extra: Any) -> Settings:
    values = {"grafana_url": url, "grafana_token": TOKEN, "clickhouse_database": "highland_db",
              "clickhouse_reader_password": "reader-pass-1", **extra}
    return Settings(**values)


def test_first_publish_creates_everything_with_the_expected_payloads(grafana: tuple[str, FakeGrafana],
                                                                     tmp_path: Path):
    url, state = grafana
    settings = _settings(url)
    build_all(settings, tmp_path)
    lines = publish_changes(settings, tmp_path)
    assert lines == [
        f"grafana {url}: version 12.1.1", "plan tables: synced (stub)", "datasource highland-clickhouse: created",
        "datasource highland-prometheus: created",
        "folder highland: created", "dashboard highland-alerts: created", "dashboard highland-feeds: created",
        "dashboard highland-indicator: created", "dashboard highland-overview: created",
        "dashboard highland-pipeline: created",
        "alert rule highland-off-track: created", "alert rule highland-at-risk: created",
        "alert rule highland-stale-feed: created", "rule group highland-plan: interval set to 60s"]
    source = state.datasources["highland-clickhouse"]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["username"] == settings.clickhouse_reader_user
    assert source["secureJsonData"] == {"password": "reader-pass-1"}
    posted = [body for method, path, body in state.writes if path == "/api/dashboards/db"]
    assert all(b["overwrite"] is True and b["folderUid"] == "highland" for b in posted)
    assert {b["dashboard"]["uid"] for b in posted} == set(state.dashboards)
    validator = jsonschema.Draft7Validator(json.loads((SCHEMAS / "alert-rule.schema.json").read_text()))
    for rule in state.rules.values():
        assert list(validator.iter_errors(rule)) == []
        assert rule["folderUID"] == "highland" and rule["ruleGroup"] == "highland-plan"


def test_publishing_again_changes_nothing(grafana: tuple[str, FakeGrafana], tmp_path: Path):
    url, state = grafana
    settings = _settings(url)
    build_all(settings, tmp_path)
    publish_changes(settings, tmp_path)
    writes = len(state.writes)
    lines = publish_changes(settings, tmp_path)
    assert all(line.endswith("unchanged") for line in lines[2:]), lines
    assert len(state.writes) == writes


def test_only_what_changed_is_updated(grafana: tuple[str, FakeGrafana], tmp_path: Path):
    url, state = grafana
    build_all(_settings(url), tmp_path)
    publish_changes(_settings(url), tmp_path)
    board_file = tmp_path / "dashboards" / "highland-feeds.json"
    board = json.loads(board_file.read_text())
    board["title"] = "Feeds (renamed)"
    board_file.write_text(json.dumps(board))
    rotated = _settings(url, clickhouse_reader_password="reader-pass-2")
    changed = [line for line in publish_changes(rotated, tmp_path) if not line.endswith("unchanged")][2:]
    assert changed == ["datasource highland-clickhouse: updated", "dashboard highland-feeds: updated"]
    assert state.dashboards["highland-feeds"]["title"] == "Feeds (renamed)"
    assert state.dashboards["highland-feeds"]["version"] == 2


def test_a_refused_token_is_a_clear_error(grafana: tuple[str, FakeGrafana], tmp_path: Path):
    url, _state = grafana
    build_all(_settings(url), tmp_path)
    with pytest.raises(PublishError, match="refused the request: Unauthorized"):
        publish_changes(_settings(url, grafana_token="wrong"), tmp_path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_grafana_is_a_clear_error_not_a_traceback(tmp_path: Path):
    url = f"http://127.0.0.1:{_closed_port()}"
    build_all(_settings(url), tmp_path)
    with pytest.raises(PublishError, match=f"Grafana at {url} is not reachable"):
        publish_changes(_settings(url), tmp_path)

    # the command itself, as an operator runs it
    env = {**os.environ, "HIGHLAND_GRAFANA_URL": url, "HIGHLAND_GRAFANA_TOKEN": TOKEN}
    done = subprocess.run([sys.executable, "-m", "highland", "dashboards", "publish", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"error: Grafana at {url} is not reachable" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_missing_token_or_missing_build_say_what_to_do(tmp_path: Path):
    with pytest.raises(PublishError, match="HIGHLAND_GRAFANA_TOKEN is not set"):
        publish_changes(Settings(grafana_token=""), tmp_path)
    with pytest.raises(PublishError, match="run `highland dashboards build` first"):
        publish_changes(_settings("http://127.0.0.1:9"), tmp_path / "empty")


def test_unreachable_clickhouse_is_a_clear_error():
    settings = Settings(clickhouse_port=_closed_port(), clickhouse_database="highland_db")
    with pytest.raises(PublishError, match="could not sync the plan tables into ClickHouse"):
        REAL_SYNC(settings)
