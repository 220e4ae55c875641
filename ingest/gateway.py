"""The HTTP gateway, for agencies that can't speak Kafka (aiohttp, which ships with Faust).

``POST /v1/events`` with ``Authorization: Bearer <agency token>`` and a body that is one JSON
event, a JSON array of events, or NDJSON (``application/x-ndjson``). Every event is validated with
the shared validator in the name of the token's agency; accepted events are produced to Kafka
(acks=all, idempotent) and the response lists a result per event. Good events in a request are
delivered even when others in it are rejected.

Status codes: 200 every event accepted; 400 some rejected (or the body is not JSON); 403 every
rejection is ``forbidden_agency``; 401 no valid token; 413 body over the limit; 503 the broker
did not acknowledge (nothing in the request counts as accepted; retry). ``GET /health`` answers
200 when the broker is reachable, else 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from highland.catalog.models import Catalog
from highland.ingest import wire
from highland.ingest.dead_letters import DeadLetter, dead_letter
from highland.ingest.events import BOM, MAX_PAYLOAD_BYTES, Accepted, Reason, Rejected, validate

from highland import strict_json
from highland.settings import Settings

log = logging.getLogger("highland.gateway")
TOKEN_CACHE_SECONDS = 30.0
_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace, nothing else


class TokenVerifier(Protocol):
    """(bearer token) -> the agency it belongs to, or None (unknown or revoked). Blocking: called in a
    worker thread on a cache miss. Tokens are stored by sinks/ (sinks/tokens.py: ``verifier``); the
    command that starts the gateway passes the check in, as ingest sits below storage."""

    def __call__(self, token: str) -> str | None: ...


@dataclass
class Gateway:
    settings: Settings
    catalog: Catalog
    token_lookup: TokenVerifier
    producer: AIOKafkaProducer | None = None

    def __post_init__(self) -> None:
        self._tokens: dict[str, tuple[str | None, float]] = {}
        self._start_lock = asyncio.Lock()

    # --- Kafka ----------------------------------------------------------------------------------
    async def ensure_producer(self) -> AIOKafkaProducer:
        """Start the producer on first use (and again after a failure), within a bounded time."""
        async with self._start_lock:
            if self.producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                    enable_idempotence=self.settings.producer_idempotence,
                    linger_ms=5, request_timeout_ms=int(self.settings.producer_max_block_s * 1000),
                )
                try:
                    await asyncio.wait_for(producer.start(), self.settings.producer_max_block_s)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise BrokerDown(str(exc) or type(exc).__name__) from exc
                self.producer = producer
            return self.producer

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def deliver(self, accepted: list[tuple[Accepted, bytes]], rejected: list[DeadLetter]) -> None:
        producer = await self.ensure_producer()
        try:
            records = [wire.event_record(self.settings, event, payload) for event, payload in accepted]
            records += [wire.dead_letter_record(self.settings, letter) for letter in rejected]
            futures = [await producer.send(r.topic, value=r.value, key=r.key, timestamp_ms=r.timestamp_ms,
                                           headers=r.headers) for r in records]
            await asyncio.wait_for(asyncio.gather(*futures), self.settings.producer_max_block_s * 3)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerDown(str(exc) or type(exc).__name__) from exc

    # --- auth -----------------------------------------------------------------------------------
    async def agency_for(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        cached = self._tokens.get(token)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        agency = await asyncio.to_thread(self.token_lookup, token)
        self._tokens[token] = (agency, time.monotonic() + TOKEN_CACHE_SECONDS)
        return agency


def _json_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=strict_json.dumps)


class BrokerDown(RuntimeError):
    pass


def split_body(body: bytes, content_type: str) -> list[bytes] | None:
    """The request's events as separate JSON payloads, each as sent (so the validator judges its
    repeated member names and lone surrogates); None if the body is not UTF-8 JSON at all. A
    byte-order mark at the start of the body is ignored (CONTRACT §1.1)."""
    body = body.removeprefix(BOM)
    if content_type in ("application/x-ndjson", "application/ndjson", "application/jsonl"):
        return [line.strip() for line in body.splitlines() if line.strip()]
    try:
        text = body.decode()
        start = _skip_whitespace(text, 0)
        if text[start:start + 1] == "[":
            return _array_items(text, start + 1)
        json.loads(text)
    except (ValueError, RecursionError):
        return None
    return [body]


def _array_items(text: str, index: int) -> list[bytes] | None:
    """The text of each element of the JSON array whose "[" ends at ``index``, not re-serialized:
    a parse and a dump would silently drop a repeated member name. None if not a JSON array."""
    items: list[bytes] = []
    index = _skip_whitespace(text, index)
    if text[index:index + 1] == "]":
        return items if _skip_whitespace(text, index + 1) == len(text) else None
    while True:
        _, end = _DECODER.raw_decode(text, index)
        items.append(text[index:end].encode())
        index = _skip_whitespace(text, end)
        separator = text[index:index + 1]
        index = _skip_whitespace(text, index + 1)
        if separator == "]":
            return items if index == len(text) else None
        if separator != ",":
            return None


def _skip_whitespace(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _status(results: list[dict[str, Any]]) -> int:
    reasons = {r["reason"] for r in results if r["status"] == "rejected"}
    if not reasons:
        return 200
    return 403 if reasons == {Reason.FORBIDDEN_AGENCY.value} else 400


def create_app(gateway: Gateway) -> web.Application:
    limit = gateway.settings.gateway_max_body_bytes
    app = web.Application(client_max_size=limit)

    async def post_events(request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        origin = request.remote or "?"
        body = await _read_limited(request, limit)
        agency = await gateway.agency_for(request)
        if agency is None:
            return await _refuse(gateway, 401, Reason.UNAUTHENTICATED, "missing, unknown or revoked bearer token",
                                 body, origin, now)
        if body is None:
            return await _refuse(gateway, 413, Reason.PAYLOAD_TOO_LARGE, f"request body over {limit} bytes",
                                 b"", origin, now, agency)
        payloads = split_body(body, request.content_type)
        if payloads is None:
            return await _refuse(gateway, 400, Reason.MALFORMED_JSON, "the body is not JSON", body, origin, now,
                                 agency)
        results, accepted, rejected = [], [], []
        for index, payload in enumerate(payloads):
            verdict = validate(payload, gateway.catalog, now=now, pushed_by=agency)
            if isinstance(verdict, Accepted):
                accepted.append((verdict, payload))
                results.append({"index": index, "status": "accepted", "event_id": verdict.event_id})
            else:
                rejected.append(dead_letter(verdict, payload, "gateway", f"{origin}#{index}", now))
                results.append({"index": index, "status": "rejected", "reason": verdict.reason.value,
                                "detail": verdict.detail})
        try:
            await gateway.deliver(accepted, rejected)
        except BrokerDown as exc:
            return _json_response({"error": "broker_unavailable", "detail": str(exc),
                                      "accepted": 0, "retry": True}, status=503)
        return _json_response({"accepted": len(accepted), "rejected": len(rejected), "results": results},
                                 status=_status(results))

    async def health(_request: web.Request) -> web.Response:
        try:
            await gateway.ensure_producer()
        except BrokerDown as exc:
            return _json_response({"status": "unavailable", "broker": False, "detail": str(exc)}, status=503)
        return _json_response({"status": "ok", "broker": True})

    async def on_cleanup(_app: web.Application) -> None:
        await gateway.close()

    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/health", health)
    app.on_cleanup.append(on_cleanup)
    return app


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None if it is larger than ``limit`` (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _refuse(gateway: Gateway, status: int, reason: Reason, detail: str, body: bytes | None, origin: str,
                  now: datetime, agency: str | None = None) -> web.Response:
    """Reject the whole request, leaving a dead letter (payload cut to the event size limit)."""
    payload = (body or b"")[:MAX_PAYLOAD_BYTES]
    record = dead_letter(Rejected(reason, detail, agency), payload, "gateway", origin, now)
    try:
        await gateway.deliver([], [record])
    except BrokerDown:
        log.error("could not dead-letter a refused request (%s): broker down", reason.value)
    return _json_response({"error": reason.value, "detail": detail}, status=status)


def serve(settings: Settings, catalog: Catalog, verify: TokenVerifier, host: str, port: int) -> None:
    web.run_app(create_app(Gateway(settings, catalog, verify)), host=host, port=port, print=None)
