"""The gateway attacked over HTTP (issues 15 and 16): a flood of made-up tokens, each a look-up in the
token store, must not hold an authenticated agency's events behind it; reading dead letters is
rated like pushing events; a JSON event with a carriage return between its members is one event."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp.test_utils import TestClient, TestServer
from highland.catalog.loader import default_catalog
from highland.ingest.gateway import MAX_STORE_QUEUE, Gateway, create_app

from highland.settings import Settings

EVENT = {"event_id": "e-1", "agency": "cq_commerce", "indicator": "ecommerce_turnover", "value": 12.5,
         "unit": "亿元", "observed_at": "2019-05-01T00:00:00+08:00"}
HONEST = {"Authorization": "Bearer hlt_honest"}


class SlowStore:
    """A token store that answers one query at a time, each taking a while (as one ClickHouse
    connection does)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.lookups, self._lock = seconds, 0, threading.Lock()

    def __call__(self, token: str) -> str | None:
        with self._lock:
            time.sleep(self.seconds)
            self.lookups += 1
        return "cq_commerce" if token == "hlt_honest" else None

    def dead_letters(self, agency: str, limit: int) -> list[dict]:
        return []


def gateway_for(store: SlowStore, settings: Settings | None = None) -> Gateway:
    gateway = Gateway(settings or Settings(), default_catalog(), store, read_dead_letters=store.dead_letters)

    async def deliver(accepted: list, rejected: list) -> None:
        pass

    gateway.deliver = deliver  # type: ignore[method-assign]
    return gateway


def test_a_flood_of_made_up_tokens_does_not_hold_an_authenticated_agencys_events():
    flood = 400

    async def scenario() -> None:
        store = SlowStore(0.01)
        # As from many addresses: the per-address budget of failures (test_gateway_flood) out of the
        # way, the bound on waiting store calls is what holds. The honest verdict stays cached for the
        # whole flood (on a loaded machine the flood outlasts the default second; expiry and
        # revocation are test_agency_door's).
        many_addresses = Settings(gateway_auth_failure_burst=10 * flood, gateway_token_cache_seconds=600)
        async with TestClient(TestServer(create_app(gateway_for(store, many_addresses)))) as client:
            assert (await client.post("/v1/events", json=EVENT, headers=HONEST)).status == 200  # now cached
            attempts = [asyncio.ensure_future(client.get("/v1/whoami", headers={"Authorization": f"Bearer hlt_{i}"}))
                        for i in range(flood)]
            while store.lookups < 5:  # the flood has reached the store
                await asyncio.sleep(0.01)
            answer = await client.post("/v1/events", json=EVENT, headers=HONEST)
            looked_up_meanwhile = store.lookups
            answers = [(a.status, a.headers.get("Retry-After"), (await a.json())["error"])
                       for a in await asyncio.gather(*attempts)]
        assert answer.status == 200
        # Answered while the flood was still being looked up, not after every made-up token.
        assert looked_up_meanwhile < flood / 2
        busy = [a for a in answers if a[0] == 503]
        assert set(answers) == {(401, None, "unauthenticated"), (503, "1", "token_store_busy")}
        assert store.lookups <= flood - len(busy) + 1 and len(answers) - len(busy) >= MAX_STORE_QUEUE

    asyncio.run(scenario())


def test_reading_dead_letters_takes_from_the_tokens_rate_like_events():
    async def scenario() -> None:
        settings = Settings(gateway_rate_events_per_s=1, gateway_rate_burst_events=2000)
        async with TestClient(TestServer(create_app(gateway_for(SlowStore(0), settings)))) as client:
            statuses = [(await client.get("/v1/dead-letters?limit=1000", headers=HONEST)).status for _ in range(3)]
            refused = await client.get("/v1/dead-letters?limit=1000", headers=HONEST)
        assert statuses == [200, 200, 429] and refused.status == 429 and int(refused.headers["Retry-After"]) >= 1

    asyncio.run(scenario())


def test_a_carriage_return_between_the_members_of_an_ndjson_event_keeps_it_one_event():
    # JSON allows CR as whitespace and `push` splits JSON Lines on LF only: the same file must
    # not become two broken events at the gateway (push --gateway then stopped on a count mismatch).
    async def scenario() -> None:
        body = json.dumps(EVENT).replace(', "value"', ',\r"value"') + "\r\n" + json.dumps({**EVENT, "event_id": "e-2"})
        async with TestClient(TestServer(create_app(gateway_for(SlowStore(0))))) as client:
            answer = await client.post("/v1/events", data=body.encode(),
                                       headers={**HONEST, "Content-Type": "application/x-ndjson"})
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["accepted"] == 2

    asyncio.run(scenario())


def test_every_refusal_an_agency_reads_from_the_gateway_is_in_chinese_too():
    # The staff reading curl's output read Chinese: a rejected event had only the English reason,
    # a refused request only an English error.
    async def scenario() -> None:
        settings = Settings(gateway_max_events=2)
        async with TestClient(TestServer(create_app(gateway_for(SlowStore(0), settings)))) as client:
            rejected = await client.post("/v1/events", json={**EVENT, "unit": "kg"}, headers=HONEST)
            forged = await client.post("/v1/events", json=EVENT, headers={"Authorization": "Bearer hlt_forged"})
            too_many = await client.post("/v1/events", json=[EVENT] * 3, headers=HONEST)
            unreadable = await client.post("/v1/events", data="名称\n1\n".encode(),
                                           headers={**HONEST, "Content-Type": "text/csv"})
            bad_limit = await client.get("/v1/dead-letters?limit=0", headers=HONEST)
            answers = [await r.json() for r in (rejected, forged, too_many, unreadable, bad_limit)]
        assert answers[0]["results"][0]["reason_zh"] == "单位不符"
        assert [a["error_zh"] for a in answers[1:]] == [
            "未认证", "数据过大", "文件无法读取（编码、表头或工作表有误），未保存任何数据", "请求参数有误"]

    asyncio.run(scenario())


def test_a_workbook_sent_without_its_content_type_is_named_and_not_dead_lettered(tmp_path):
    # `curl --data-binary @报表.xlsx` without -H sends a form: the answer was "the body is not JSON"
    # and 64 KiB of the workbook became a malformed_json dead letter in the agency's name.
    from tests.unit.test_files import XLSX_ROWS, excel_workbook

    book = excel_workbook(tmp_path / "报表.xlsx", XLSX_ROWS).read_bytes()

    async def scenario() -> None:
        gateway = gateway_for(SlowStore(0))
        letters: list = []

        async def deliver(accepted: list, rejected: list) -> None:
            letters.extend(rejected)

        gateway.deliver = deliver  # type: ignore[method-assign]
        async with TestClient(TestServer(create_app(gateway))) as client:
            for content_type in ("application/x-www-form-urlencoded", "text/csv", "application/json"):
                answer = await client.post("/v1/events", data=book, headers={**HONEST, "Content-Type": content_type})
                said = await answer.json()
                assert answer.status == 400 and said["error"] == "unreadable_file", said
                assert "spreadsheetml.sheet" in said["detail"]
        assert letters == []

    asyncio.run(scenario())
