"""The gateway's bounds without a broker: event counting, the token cache, the rate limiter, the
shared token connection, and a 401 that reads no body and stores nothing (docs/agencies.md,
"Gateway limits")."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiohttp.test_utils import TestClient, TestServer
from highland.catalog.loader import default_catalog
from highland.ingest.gateway import Gateway, RateLimiter, TokenCache, TooManyEvents, create_app, split_body
from highland.sinks.tokens import Verifier

from highland.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_event_count_stops_at_the_limit_without_splitting_the_rest():
    with pytest.raises(TooManyEvents):
        split_body(b"{}\n" * 6, "application/x-ndjson", 5)
    with pytest.raises(TooManyEvents):
        split_body(b"[" + b",".join([b"{}"] * 6) + b"]", "application/json", 5)
    assert len(split_body(b"{}\n" * 5, "application/x-ndjson", 5) or []) == 5
    assert split_body(b"[{}, {}] x", "application/json", 5) is None  # still not JSON
    started = time.monotonic()
    with pytest.raises(TooManyEvents):
        split_body(b"{}\n" * 1_000_000, "application/x-ndjson", 10_000)
    assert time.monotonic() - started < 0.5


def test_the_token_cache_is_bounded_and_forgets_after_its_ttl():
    clock = Clock()
    cache = TokenCache(size=3, ttl=1.0, clock=clock)
    for i in range(5):
        cache.put(f"k{i}", f"agency{i}")
    assert len(cache) == 3 and cache.get("k0") == (False, None) and cache.get("k4") == (True, "agency4")
    cache.get("k2")  # used: k3 is now the least recently used
    cache.put("k5", None)
    assert cache.get("k3") == (False, None) and cache.get("k2") == (True, "agency2")
    assert cache.get("k5") == (True, None)  # an unknown token is remembered too
    clock.now += 1.0
    assert cache.get("k2") == (False, None)
    assert TokenCache.key("hlt_secret") != "hlt_secret"


def test_the_rate_limiter_allows_a_burst_then_the_rate():
    clock = Clock()
    rates = RateLimiter(rate=10.0, burst=20, size=2, clock=clock)
    assert rates.take("a", 20) == 0
    assert rates.take("a", 1) == pytest.approx(0.1)
    clock.now += 0.5
    assert rates.take("a", 5) == 0 and rates.take("a", 1) > 0
    assert rates.take("b", 15) == 0  # its own bucket
    assert rates.take("c", 50) == 0  # more than the burst: takes the burst, not refused forever
    assert rates.take("c", 1) == pytest.approx(0.1)


def test_token_look_ups_share_one_connection_across_threads_and_reopen_after_a_failure():
    opened: list[FakeClient] = []

    def open_one() -> FakeClient:
        opened.append(FakeClient())
        return opened[-1]

    check = Verifier(Settings(), connect_to=open_one)
    with ThreadPoolExecutor(8) as pool:
        agencies = list(pool.map(check, [f"hlt_{i}" for i in range(200)]))
    assert agencies == ["cq_commerce"] * 200 and len(opened) == 1
    assert opened[0].max_concurrent == 1  # one query at a time on the connection
    opened[0].broken = True
    with pytest.raises(ConnectionError):
        check("hlt_x")
    assert check("hlt_y") == "cq_commerce" and len(opened) == 2


class FakeClient:
    def __init__(self) -> None:
        self.broken, self.active, self.max_concurrent = False, 0, 0
        self._lock = threading.Lock()

    def execute(self, sql: str, _params: dict) -> list:
        if self.broken:
            raise ConnectionError("gone")
        with self._lock:
            self.active += 1
            self.max_concurrent = max(self.max_concurrent, self.active)
        time.sleep(0.001)
        with self._lock:
            self.active -= 1
        return [] if "agency_token_expiry" in sql else [("cq_commerce",)]  # a token without an expiry

    def disconnect(self) -> None:
        pass


def test_a_request_without_a_valid_token_is_refused_unread_and_stores_nothing():
    async def scenario() -> None:
        gateway = Gateway(Settings(), default_catalog(), lambda token: None)
        delivered: list = []

        async def deliver(accepted: list, rejected: list) -> None:
            delivered.extend(accepted + rejected)

        gateway.deliver = deliver  # type: ignore[method-assign]
        read: list[int] = []
        async with TestClient(TestServer(create_app(gateway))) as client:
            async def body():
                for _ in range(100):
                    read.append(1)
                    yield b"x" * 65536
            for headers in ({}, {"Authorization": "Bearer hlt_forged"}, {"Authorization": "Basic abc"}):
                resp = await client.post("/v1/events", data=b"{}", headers=headers)
                assert resp.status == 401 and (await resp.json())["error"] == "unauthenticated"
            try:
                resp = await client.post("/v1/events", data=body(), headers={"Authorization": "Bearer hlt_x"})
                assert resp.status == 401
            except Exception:  # the server may close before the client is done sending
                pass
        assert delivered == [] and gateway.unauthenticated == 4
        assert len(read) < 100  # the streamed body was not drained

    asyncio.run(scenario())
