"""Failed authentications are bounded per client address (issue 15, "bounded gateway"; docs/agencies.md,
"Gateway limits"): against the real `highland gateway`, a flood of made-up tokens from one address is
answered 429 once that address has spent its budget -- without a token look-up -- while an agency
on another address is served, its token never seen before (a look-up of its own). X-Forwarded-For
names the client only when the request comes from the configured trusted proxy.

Two client addresses on one machine: the loopback network is 127.0.0.0/8, so a client socket bound
to 127.0.0.2 reaches the gateway on 127.0.0.1 from another address."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import aiohttp
import pytest
from highland.sinks.client import connect
from highland.sinks.tokens import issue

from highland.settings import Settings
from tests.integration.test_ingest import GOOD, GatewayProcess

pytestmark = pytest.mark.integration

FLOODER, AGENCY = "127.0.0.2", "127.0.0.1"
FLOOD = 300
BURST = 10
LIMITS = {"HIGHLAND_GATEWAY_AUTH_FAILURE_BURST": str(BURST), "HIGHLAND_GATEWAY_AUTH_FAILURES_PER_S": "1"}


async def _call(session: aiohttp.ClientSession, port: int, method: str, path: str, token: str,
                body: bytes | None = None, forwarded: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    async with session.request(method, f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as answer:
        return answer.status, {**json.loads(await answer.read() or b"{}"), "_retry": answer.headers.get("Retry-After")}


def _from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=100))


async def _flood_while_an_agency_pushes(port: int, token: str, flood_xff: list[str | None], agency_xff: str | None,
                                        flooder: str = FLOODER) -> tuple[Counter[tuple[int, str]], int]:
    """FLOOD made-up tokens from ``flooder`` and, once they are under way, one event with ``token``
    (never used before) from AGENCY; (the flood's answers by status and error, the agency's status)."""
    async with _from(flooder) as bad, _from(AGENCY) as good:
        flood = [asyncio.ensure_future(_call(bad, port, "GET", "/v1/whoami", f"hlt_made_up_{i}",
                                             forwarded=flood_xff[i % len(flood_xff)]))
                 for i in range(FLOOD)]
        await asyncio.sleep(0.2)
        status, _ = await _call(good, port, "POST", "/v1/events", token, json.dumps(GOOD).encode(), agency_xff)
        answers = await asyncio.gather(*flood)
    return Counter((code, body.get("error", "")) for code, body in answers), status


def test_a_flood_of_made_up_tokens_from_one_address_is_refused_429_and_another_address_is_served(
        isolated: Settings, tmp_path):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    gateway = GatewayProcess(isolated, tmp_path, extra=LIMITS)
    try:
        answers, agency = asyncio.run(_flood_while_an_agency_pushes(gateway.port, token, [None], None))
        health = gateway.request("GET", "/health")[1]
    finally:
        gateway.stop()
    assert agency == 200
    refused = answers[(429, "too_many_failed_authentications")]
    unauthenticated = answers[(401, "unauthenticated")]
    assert refused + unauthenticated == FLOOD, answers  # nothing else: no 503 token_store_busy
    # The budget and what refilled (1 a second) while the flood ran; the rest never reached the store.
    assert BURST <= unauthenticated < BURST + 30, answers
    assert health["unauthenticated_requests"] == FLOOD  # counted either way


def test_x_forwarded_for_counts_only_behind_the_trusted_proxy(isolated: Settings, tmp_path):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    gateway = GatewayProcess(isolated, tmp_path, extra={**LIMITS, "HIGHLAND_GATEWAY_TRUSTED_PROXIES": f"{AGENCY}/32"})
    try:
        # Through the proxy (AGENCY's address): the flooder and the agency are told apart by the
        # address the proxy appends, so the agency is served.
        answers, agency = asyncio.run(_flood_while_an_agency_pushes(
            gateway.port, token, ["203.0.113.7"], "198.51.100.9", flooder=AGENCY))
        assert agency == 200
        assert answers[(429, "too_many_failed_authentications")] > FLOOD / 2, answers
        # Not through the proxy: an address written into the header by the client itself changes
        # nothing; rotating it does not escape the limit.
        rotating = [f"192.0.2.{i % 250 + 1}" for i in range(FLOOD)]
        answers, _ = asyncio.run(_flood_while_an_agency_pushes(gateway.port, token, rotating, "198.51.100.9"))
        assert answers[(429, "too_many_failed_authentications")] > FLOOD / 2, answers
    finally:
        gateway.stop()
