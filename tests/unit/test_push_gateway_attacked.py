"""`highland push --gateway` against a gateway that is busy or restarts (issue 16, attacked): a run
of 429s is waited out however long it lasts, and a gateway that drops a request (a restart) is
asked again, since an event sent twice counts once; before, both stopped the push with exit 2,
"nothing was sent", after earlier requests had been accepted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.conftest import ROOT
from tests.unit.test_push_report import GOOD, NO_SERVICES


class FakeGateway:
    """The gateway's answers as the documentation gives them, with a script of troubles first."""

    def __init__(self, troubles: list[str]) -> None:
        self.troubles, self.events = list(troubles), 0
        self.loop = asyncio.new_event_loop()
        self.port = 0

    async def whoami(self, request: web.Request) -> web.Response:
        return web.json_response({"agency": "cq_commerce"})

    async def events_post(self, request: web.Request) -> web.StreamResponse:
        lines = (await request.read()).splitlines()
        trouble = self.troubles.pop(0) if self.troubles else None
        if trouble == "429":
            return web.json_response({"error": "rate_limited"}, status=429, headers={"Retry-After": "0"})
        if trouble == "503":  # the broker did not acknowledge: nothing in the request was kept
            return web.json_response({"error": "broker_unavailable", "accepted": 0, "retry": True}, status=503)
        if trouble == "drop":  # the process went away mid-request
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        self.events += len(lines)
        results = [self.judged(i, json.loads(line)["event_id"]) for i, line in enumerate(lines)]
        rejected = sum(r["status"] == "rejected" for r in results)
        return web.json_response({"accepted": len(lines) - rejected, "rejected": rejected, "results": results},
                                 status=400 if rejected else 200)

    @staticmethod
    def judged(index: int, event_id: str) -> dict[str, object]:
        """Events whose id starts with "bad" are rejected (unit_mismatch), the rest accepted."""
        if event_id.startswith("bad"):
            return {"index": index, "status": "rejected", "event_id": event_id, "reason": "unit_mismatch",
                    "detail": "unit 'kg' is not the indicator's"}
        return {"index": index, "status": "accepted", "event_id": event_id}

    def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/whoami", self.whoami)
        app.router.add_post("/v1/events", self.events_post)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def rows(tmp_path) -> Iterator:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({**GOOD, "event_id": f"e-{i}"}, ensure_ascii=False) + "\n"
                            for i in range(3)))
    yield path


def push(path, gateway: FakeGateway) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **NO_SERVICES, "HIGHLAND_TOKEN": "hlt_test"}
    return subprocess.run([sys.executable, "-m", "highland", "push", str(path), "--gateway",
                           f"http://127.0.0.1:{gateway.port}", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("troubles", [["429"] * 8, ["drop"], ["503"], ["drop", "429", "drop"]],
                         ids=["eight-429s", "a-restart", "broker-down", "restart-busy-restart"])
def test_a_push_through_a_busy_or_restarting_gateway_delivers_every_row(rows, troubles):
    gateway = FakeGateway(troubles)
    gateway.start()
    try:
        result = push(rows, gateway)
    finally:
        gateway.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["accepted"] == 3 and gateway.events == 3


@pytest.mark.parametrize("url", ["http://192.0.2.10:8080", "http://gw.example", "ftp://gw.example", "file:///etc"])
def test_a_token_is_never_sent_in_clear_text_to_another_machine(rows, url):
    # Before, `--gateway http://...` sent the bearer token over the network unencrypted.
    env = {**os.environ, **NO_SERVICES, "HIGHLAND_TOKEN": "hlt_test"}
    result = subprocess.run([sys.executable, "-m", "highland", "push", str(rows), "--gateway", url, "--json"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert result.returncode == 2
    assert "https://" in json.loads(result.stdout)["error"] or "not an http(s) URL" in result.stdout


def test_a_rerun_that_rejects_nothing_leaves_no_rejected_file_from_before(tmp_path):
    path = tmp_path / "rows.jsonl"
    gateway = FakeGateway([])
    gateway.start()
    try:
        path.write_text("".join(json.dumps({**GOOD, "event_id": i}) + "\n" for i in ("e-1", "bad-1")))
        assert push(path, gateway).returncode == 1
        rejected = tmp_path / "rows.jsonl.rejected.jsonl"
        assert "bad-1" in rejected.read_text()
        path.write_text(json.dumps({**GOOD, "event_id": "e-1"}) + "\n")  # corrected, pushed again
        assert push(path, gateway).returncode == 0
    finally:
        gateway.stop()
    assert not rejected.exists(), "the first run's rejections still look like this run's"
