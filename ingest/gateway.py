"""The HTTP gateway, for agencies that can't speak Kafka (aiohttp, which ships with Faust).

``POST /v1/events`` with ``Authorization: Bearer <agency token>`` and a body that is one JSON
event, a JSON array of events, NDJSON (``application/x-ndjson``), or a table as agencies keep them:
CSV (UTF-8 or GB18030) or .xlsx, read as `highland push` reads files (ingest/uploads.py). Every
event is validated with
the shared validator in the name of the token's agency; accepted events are produced to Kafka
(acks=all, idempotent) and the response lists a result per event. Good events in a request are
delivered even when others in it are rejected.

Every request is bounded (docs/agencies.md, "Gateway limits"): the token is checked on the
headers, before a byte of the body is read; the body's bytes and its number of events have a
maximum; each token has a rate of events per second with a burst; and the splitting and
validation of a body run in a worker thread, so ``/health`` keeps answering during the largest
allowed request.

Status codes: 200 every event accepted; 400 some rejected (or the body is not JSON); 403 every
rejection is ``forbidden_agency``; 401 no valid token (the body is not read, nothing is stored;
the attempt is counted and logged); 413 body over the byte or event limit; 429 over the token's
rate, or the client's address has failed to authenticate too often (``Retry-After`` says when to
retry); 503 the broker did not acknowledge (nothing in the
request counts as accepted; retry). ``GET /health`` answers 200 when the broker is reachable,
else 503, and reports the count of unauthenticated attempts (a readiness check); ``GET /live``
answers 200 while the process serves HTTP (a liveness check: a broker outage must not restart
gateways); ``GET /metrics`` serves Prometheus' text format (ingest/gateway_metrics.py).
``GET /v1/dead-letters`` lists the token's agency's own rejected events, never another's,
``GET /v1/whoami`` names the token's agency, and
``GET /openapi.yaml`` serves the API's description (ingest/openapi.yaml, checked in and tested).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from highland.catalog.models import Catalog
from highland.ingest import wire
from highland.ingest.dead_letters import DeadLetter, dead_letter
from highland.ingest.events import BOM, MAX_PAYLOAD_BYTES, Accepted, Reason, Rejected, validate
from highland.ingest.files import FileError
from highland.ingest.gateway_metrics import GatewayMetrics
from highland.ingest.names import REASON_ZH, Names
from highland.ingest.token_use import UseRecorder, UseThrottle
from highland.ingest.uploads import XLSX_TYPE, TooManyRows, is_table, table_rows

from highland import strict_json
from highland.settings import Settings

log = logging.getLogger("highland.gateway")
_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace, nothing else
# NDJSON lines end at LF (a CR before it is stripped), as `push` reads JSON Lines: a CR inside a
# line is JSON whitespace, not a line break. Found lazily.
_LINE = re.compile(rb"[^\n]+")
_NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")
OPENAPI = Path(__file__).with_name("openapi.yaml")
_ZIP = b"PK\x03\x04"  # how every .xlsx (a zip archive) begins
MAX_DEAD_LETTERS = 1000  # per GET /v1/dead-letters
# Calls to the token store (look-ups on a cache miss, dead-letter reads) waiting their turn, at
# most: past it the answer is 503 token_store_busy at once. A flood of made-up tokens is a flood of
# cache misses; queued without a bound, it held every agency's requests behind it.
MAX_STORE_QUEUE = 64
# An agency's staff read the answers: every refusal of a whole request carries its Chinese words too.
ERROR_ZH = {
    **{reason.value: text for reason, text in REASON_ZH.items()},
    "unreadable_file": "文件无法读取（编码、表头或工作表有误），未保存任何数据",
    "rate_limited": "超出本令牌的报送频率，请按 Retry-After 秒数后重试",
    "too_many_failed_authentications": "该地址认证失败次数过多，请按 Retry-After 秒数后重试",
    "broker_unavailable": "服务暂时无法接收数据，本次请求未保存，请重试",
    "token_store_unavailable": "令牌服务暂时不可用，请重试",
    "token_store_busy": "令牌服务繁忙，请稍后重试",
    "store_unavailable": "数据暂时无法读取，请重试",
    "bad_request": "请求参数有误",
}


class TokenVerifier(Protocol):
    """(bearer token) -> the agency it belongs to, or None (unknown or revoked). Blocking: called in a
    worker thread on a cache miss, possibly from several threads at once. Tokens are stored by sinks/
    (sinks/tokens.py: ``verifier``); the command that starts the gateway passes the check in, as
    ingest sits below storage."""

    def __call__(self, token: str) -> str | None: ...


class DeadLetterReader(Protocol):
    """(agency, limit) -> that agency's stored dead letters, newest first, as JSON-ready dicts.
    Blocking; given by the command that starts the gateway (sinks/tokens.py: ``Verifier.dead_letters``)."""

    def __call__(self, agency: str, limit: int) -> list[dict[str, Any]]: ...


class BrokerDown(RuntimeError):
    pass


class TooManyEvents(Exception):
    pass


class TooManyFailures(Exception):
    """The client's address has failed to authenticate more often than its budget allows."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"retry in {wait:.1f} s")
        self.wait = wait


# --- bounded state -----------------------------------------------------------------------------

class TokenCache:
    """Verdicts of recent token look-ups, at most ``size`` of them, each trusted for ``ttl`` seconds.

    Keyed by the token's SHA-256, so the cache never holds a secret. Unknown tokens are cached too
    (a client retrying a bad token costs one look-up per ``ttl``), and the least recently used
    verdict makes room, so a flood of random tokens cannot grow the process. A revocation takes
    effect once the cached verdict expires: ``ttl`` plus one look-up."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl, self._clock = size, ttl, clock
        self._entries: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, key: str) -> tuple[bool, str | None]:
        """(found, agency): found is False when the key is absent or its verdict expired."""
        entry = self._entries.get(key)
        if entry is None or entry[1] <= self._clock():
            return False, None
        self._entries.move_to_end(key)
        return True, entry[0]

    def put(self, key: str, agency: str | None) -> None:
        self._entries[key] = (agency, self._clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RateLimiter:
    """A token bucket of events per bearer token: ``rate`` a second, up to ``burst`` saved up.

    A request of n events takes min(n, burst) from its bucket (so the largest allowed request can
    pass once the bucket is full); when the bucket holds fewer, the request is refused with the
    seconds until it would hold enough. At most ``size`` buckets are kept, least recently used out:
    a dropped bucket starts full again, which only forgets an idle token's debt."""

    def __init__(self, rate: float, burst: int, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.size, self._clock = rate, burst, size, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str) -> float:
        level, at = self._buckets.get(key, (float(self.burst), self._clock()))
        return min(float(self.burst), level + (self._clock() - at) * self.rate)

    def wait(self, key: str, events: int = 1) -> float:
        """Seconds until ``events`` could be taken (0 when they can be now); takes nothing."""
        need = min(events, self.burst)
        return max(0.0, (need - self._level(key)) / self.rate)

    def take(self, key: str, events: int) -> float:
        """Take ``events`` and answer 0, or take nothing and answer the seconds to wait."""
        wait = self.wait(key, events)
        if wait > 0:
            return wait
        self._set(key, self._level(key) - min(events, self.burst))
        return 0.0

    def give_back(self, key: str, events: int) -> None:
        """Return ``events`` taken in advance (never above the burst)."""
        if key in self._buckets:
            self._set(key, min(float(self.burst), self._level(key) + events))

    def _set(self, key: str, level: float) -> None:
        self._buckets[key] = (level, self._clock())
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)


def trusted_networks(setting: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``gateway_trusted_proxies``: comma-separated addresses or networks (CIDR)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in setting.split(",") if part.strip())


def _is_trusted(address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The address a request comes from. ``X-Forwarded-For`` is believed only from a trusted proxy
    (anyone else could write any address into it): then the nearest address in it that is not a
    trusted proxy itself, as each proxy appends the address it was reached from."""
    address = peer or "?"
    if not forwarded_for or not _is_trusted(address, trusted):
        return address
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else address


@dataclass
class Gateway:
    settings: Settings
    catalog: Catalog
    token_lookup: TokenVerifier
    producer: AIOKafkaProducer | None = None
    record_use: UseRecorder | None = None  # "last used" of `highland tokens list`
    read_dead_letters: DeadLetterReader | None = None  # GET /v1/dead-letters
    unauthenticated: int = 0
    tokens: TokenCache = field(init=False)
    rates: RateLimiter = field(init=False)
    metrics: GatewayMetrics = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.tokens = TokenCache(s.gateway_token_cache_size, s.gateway_token_cache_seconds)
        self.rates = RateLimiter(s.gateway_rate_events_per_s, s.gateway_rate_burst_events,
                                 s.gateway_token_cache_size)
        # Failed authentications per client address (docs/agencies.md, "Gateway limits"): a look-up
        # of an uncached token is taken from its address's bucket before it runs and given back when
        # the token is valid, so one address has at most the burst of look-ups waiting at once.
        self.failures = RateLimiter(s.gateway_auth_failures_per_s, s.gateway_auth_failure_burst,
                                    s.gateway_token_cache_size)
        self.trusted_proxies = trusted_networks(s.gateway_trusted_proxies)
        self._start_lock = asyncio.Lock()
        self.metrics = GatewayMetrics()
        self.uses = UseThrottle(s.token_use_record_seconds, s.gateway_token_cache_size)
        self.names = Names.of(self.catalog)
        self._noting: set[asyncio.Future[None]] = set()
        # The store's calls run on a thread of their own (the store takes one query at a time
        # anyway), so they never queue ahead of the splitting and judging of bodies in the default
        # executor, and how many wait is bounded (MAX_STORE_QUEUE).
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="highland-token-store")
        self._store_queue = 0

    # --- Kafka ----------------------------------------------------------------------------------
    async def ensure_producer(self) -> AIOKafkaProducer:
        """Start the producer on first use (and again after a failure), within a bounded time."""
        async with self._start_lock:
            if self.producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                    enable_idempotence=self.settings.producer_idempotence,
                    linger_ms=5, request_timeout_ms=int(self.settings.producer_max_block_s * 1000),
                    **self.settings.kafka_security(),
                )
                try:
                    await asyncio.wait_for(producer.start(), self.settings.producer_max_block_s)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise BrokerDown(str(exc) or type(exc).__name__) from exc
                self.producer = producer
            return self.producer

    async def close(self) -> None:
        self._store.shutdown(wait=False, cancel_futures=True)
        if self.producer is not None:
            await self.producer.stop()

    async def in_store(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on the store's thread; 503 ``token_store_busy`` at once when
        MAX_STORE_QUEUE calls already wait."""
        if self._store_queue >= MAX_STORE_QUEUE:
            self.metrics.token_store_errors.inc()
            raise web.HTTPServiceUnavailable(text=strict_json.dumps({
                "error": "token_store_busy", "error_zh": ERROR_ZH["token_store_busy"],
                "detail": "too many token look-ups waiting; retry", "retry": True}),
                content_type="application/json", headers={"Retry-After": "1"})
        self._store_queue += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._store, call, *args)
        finally:
            self._store_queue -= 1

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
    def address_of(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.get("X-Forwarded-For"), self.trusted_proxies)

    def _failed(self, address: str) -> None:
        """Count a failed authentication against ``address``; TooManyFailures once over its budget."""
        wait = self.failures.take(address, 1)
        if wait > 0:
            raise TooManyFailures(wait)

    async def agency_for(self, request: web.Request, address: str) -> tuple[str, str] | None:
        """(agency, token key) of the request's bearer token, from its headers only; None if it
        has none or it is unknown or revoked; TooManyFailures when ``address`` has failed too often
        (then an uncached token is not looked up at all)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self._failed(address)
            return None
        key = TokenCache.key(token)
        found, agency = self.tokens.get(key)
        if not found:
            self._failed(address)  # taken in advance, given back below for a valid token
            try:
                agency = await self.in_store(self.token_lookup, token)
            except web.HTTPServiceUnavailable:
                self.failures.give_back(address, 1)
                raise
            except Exception as exc:  # the token store is down: a retry signal, not a refusal
                self.failures.give_back(address, 1)
                log.error("token look-up failed: %s", exc)
                self.metrics.token_store_errors.inc()
                raise web.HTTPServiceUnavailable(text=strict_json.dumps({
                    "error": "token_store_unavailable", "error_zh": ERROR_ZH["token_store_unavailable"],
                    "detail": type(exc).__name__, "retry": True}),
                    content_type="application/json") from exc
            self.tokens.put(key, agency)
            if agency is not None:
                self.failures.give_back(address, 1)
        elif agency is None:
            self._failed(address)
        return (agency, key) if agency is not None else None

    def note_use(self, key: str, agency: str) -> None:
        """Note, in a worker thread and without delaying the request, that the token ``key`` was
        used: at most once per ``token_use_record_seconds`` per token. A failure to note it is
        logged, never the request's failure."""
        if self.record_use is None or not self.uses.due(key):
            return
        record = self.record_use

        def noted(future: asyncio.Future[None]) -> None:
            self._noting.discard(future)
            if not future.cancelled() and future.exception() is not None:
                log.warning("could not note the use of token %s: %s", key[:12], future.exception())

        future = asyncio.get_running_loop().run_in_executor(self._store, record, key, agency)
        self._noting.add(future)
        future.add_done_callback(noted)

    def count_unauthenticated(self, origin: str, now: datetime) -> None:
        """Count and log an attempt without a valid token; its body is neither read nor stored
        (CONTRACT §1.1)."""
        self.unauthenticated += 1
        self.metrics.unauthenticated.inc()
        log.warning("unauthenticated request from %s at %s (%d so far)", origin, now.isoformat(),
                    self.unauthenticated)


def _json_response(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    if "error" in data and data["error"] in ERROR_ZH:
        data = {"error": data["error"], "error_zh": ERROR_ZH[data["error"]], **data}
    return web.json_response(data, status=status, dumps=strict_json.dumps, headers=headers)


# --- the body ----------------------------------------------------------------------------------

def split_body(body: bytes, content_type: str, max_events: int | None = None) -> list[bytes] | None:
    """The request's events as separate JSON payloads, each as sent (so the validator judges its
    repeated member names and lone surrogates); None if the body is not UTF-8 JSON at all. A
    byte-order mark at the start of the body is ignored (CONTRACT §1.1). Raises TooManyEvents as
    soon as the count passes ``max_events``, before the rest is split."""
    body = body.removeprefix(BOM)
    if content_type in _NDJSON:
        return _bounded(_lines(body), max_events)
    try:
        text = body.decode()
        start = _skip_whitespace(text, 0)
        if text[start:start + 1] == "[":
            return _bounded(_array_items(text, start + 1), max_events)
        json.loads(text)
    except (ValueError, RecursionError):
        return None
    return [body]


class _NotAnArray(Exception):
    pass


def _bounded(items: Iterator[bytes], max_events: int | None) -> list[bytes] | None:
    out: list[bytes] = []
    try:
        for item in items:
            out.append(item)
            if max_events is not None and len(out) > max_events:
                raise TooManyEvents(f"more than {max_events} events in one request")
    except _NotAnArray:
        return None
    return out


def _lines(body: bytes) -> Iterator[bytes]:
    for match in _LINE.finditer(body):
        line = match.group().strip()
        if line:
            yield line


def _array_items(text: str, index: int) -> Iterator[bytes]:
    """The text of each element of the JSON array whose "[" ends at ``index``, not re-serialized:
    a parse and a dump would silently drop a repeated member name. Raises _NotAnArray (at the
    end, or at the first element that is not JSON) if the text is not one JSON array."""
    index = _skip_whitespace(text, index)
    if text[index:index + 1] == "]":
        if _skip_whitespace(text, index + 1) != len(text):
            raise _NotAnArray
        return
    while True:
        try:
            _, end = _DECODER.raw_decode(text, index)
        except (ValueError, RecursionError) as exc:
            raise _NotAnArray from exc
        yield text[index:end].encode()
        index = _skip_whitespace(text, end)
        separator = text[index:index + 1]
        index = _skip_whitespace(text, index + 1)
        if separator == "]":
            if index != len(text):
                raise _NotAnArray
            return
        if separator != ",":
            raise _NotAnArray


def _skip_whitespace(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


@dataclass
class Judgement:
    results: list[dict[str, Any]]
    accepted: list[tuple[Accepted, bytes]]
    rejected: list[DeadLetter]


def judge(payloads: list[bytes], catalog: Catalog, agency: str, origin: str, now: datetime,
          lines: list[int] | None = None) -> Judgement:
    """Validate each event in the name of ``agency``; ``lines``: each event's row in an uploaded
    table (reported with its result and in its dead letter's origin). CPU-bound: run in a thread."""
    out = Judgement([], [], [])
    for index, payload in enumerate(payloads):
        verdict = validate(payload, catalog, now=now, pushed_by=agency)
        where = {"index": index} if lines is None else {"index": index, "line": lines[index]}
        if isinstance(verdict, Accepted):
            out.accepted.append((verdict, payload))
            out.results.append({**where, "status": "accepted", "event_id": verdict.event_id})
        else:
            at = f"{origin}#{index}" if lines is None else f"{origin}:line {lines[index]}"
            out.rejected.append(dead_letter(verdict, payload, "gateway", at, now))
            out.results.append({**where, "status": "rejected", "reason": verdict.reason.value,
                                "reason_zh": REASON_ZH[verdict.reason], "detail": verdict.detail})
    return out


def split_request(body: bytes, content_type: str, charset: str | None, sheet: str | None,
                  max_events: int, names: Names) -> tuple[list[bytes], list[int] | None] | None:
    """(the events as JSON, each one's line in a table or None) of a request body of any accepted
    format; None if a JSON body is not JSON. Raises TooManyEvents past ``max_events`` and FileError
    for a table that cannot be read as a whole. CPU-bound: the gateway runs it in a thread."""
    if content_type != XLSX_TYPE and body.startswith(_ZIP):  # curl sends a file as a form by default
        raise FileError(f"the body is an Excel workbook (.xlsx), sent as {content_type}: send it with "
                        f"Content-Type: {XLSX_TYPE}")
    if is_table(content_type):
        try:
            rows = table_rows(body, content_type, charset=charset, sheet=sheet, max_rows=max_events, names=names)
        except TooManyRows as exc:
            raise TooManyEvents(str(exc)) from None
        return [r.payload for r in rows], [r.line for r in rows]
    payloads = split_body(body, content_type, max_events)
    return None if payloads is None else (payloads, None)


def _status(results: list[dict[str, Any]]) -> int:
    reasons = {r["reason"] for r in results if r["status"] == "rejected"}
    if not reasons:
        return 200
    return 403 if reasons == {Reason.FORBIDDEN_AGENCY.value} else 400


# --- the app -----------------------------------------------------------------------------------

def create_app(gateway: Gateway) -> web.Application:
    settings = gateway.settings
    limit, max_events = settings.gateway_max_body_bytes, settings.gateway_max_events
    app = web.Application(client_max_size=limit)

    async def admit(request: web.Request) -> web.Response | str:
        """The checks on the headers alone: token, declared size, rate. The agency, or the answer."""
        now, origin = datetime.now(UTC), gateway.address_of(request)
        identity = await identify(request, origin, now)
        if isinstance(identity, web.Response):
            return _unread(identity)
        agency, key = identity
        gateway.note_use(key, agency)
        if request.content_length is not None and request.content_length > limit:
            return await _too_large(gateway, f"request body over {limit} bytes", origin, now, agency)
        wait = gateway.rates.wait(key)
        if wait > 0:
            return _unread(_rate_limited(wait))
        request["agency"] = agency
        request["token_key"] = key
        return agency

    async def expect(request: web.Request) -> web.StreamResponse | None:
        """An ``Expect: 100-continue`` client waits for this before it sends the body at all."""
        verdict = await admit(request)
        if isinstance(verdict, web.Response):
            return verdict
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the response proper starts now
        return None

    async def post_events(request: web.Request) -> web.Response:
        agency = request.get("agency")
        if agency is None:
            verdict = await admit(request)
            if isinstance(verdict, web.Response):
                return verdict
            agency = verdict
        now, origin = datetime.now(UTC), gateway.address_of(request)
        body = await _read_limited(request, limit)
        if body is None:
            return await _too_large(gateway, f"request body over {limit} bytes", origin, now, agency)
        try:
            split = await asyncio.to_thread(split_request, body, request.content_type, request.charset,
                                            request.query.get("sheet"), max_events, gateway.names)
        except TooManyEvents as exc:
            return await _too_large(gateway, str(exc), origin, now, agency)
        except FileError as exc:  # as `push` answers a file it cannot read: one error, nothing stored
            return _json_response({"error": "unreadable_file", "detail": str(exc)}, status=400)
        if split is None:
            letter = dead_letter(Rejected(Reason.MALFORMED_JSON, "the body is not JSON", agency),
                                 body[:MAX_PAYLOAD_BYTES], "gateway", origin, now)
            return await _refuse(gateway, 400, letter)
        payloads, lines = split
        gateway.metrics.events_received.inc(len(payloads))
        wait = gateway.rates.take(request["token_key"], len(payloads))
        if wait > 0:
            return _rate_limited(wait)
        judged = await asyncio.to_thread(judge, payloads, gateway.catalog, agency, origin, now, lines)
        try:
            await gateway.deliver(judged.accepted, judged.rejected)
        except BrokerDown as exc:
            return _json_response({"error": "broker_unavailable", "detail": str(exc),
                                   "accepted": 0, "retry": True}, status=503)
        gateway.metrics.settled(len(judged.accepted), [letter.reason.value for letter in judged.rejected])
        return _json_response({"accepted": len(judged.accepted), "rejected": len(judged.rejected),
                               "results": judged.results}, status=_status(judged.results))

    async def health(_request: web.Request) -> web.Response:
        counts = {"unauthenticated_requests": gateway.unauthenticated}
        try:
            await gateway.ensure_producer()
        except BrokerDown as exc:
            return _json_response({"status": "unavailable", "broker": False, "detail": str(exc), **counts},
                                  status=503)
        return _json_response({"status": "ok", "broker": True, **counts})

    async def identify(request: web.Request, origin: str, now: datetime) -> tuple[str, str] | web.Response:
        """(agency, token key), or the answer to a request without a valid token: 401, or 429 while
        its address is over its failed authentications."""
        try:
            identity = await gateway.agency_for(request, origin)
        except TooManyFailures as exc:
            gateway.count_unauthenticated(origin, now)
            seconds = max(1, math.ceil(exc.wait))
            return _json_response({"error": "too_many_failed_authentications", "retry_after": seconds,
                                   "detail": f"too many failed authentications from {origin}; retry in {seconds} s"},
                                  status=429, headers={"Retry-After": str(seconds)})
        if identity is None:
            gateway.count_unauthenticated(origin, now)
            return _json_response({"error": Reason.UNAUTHENTICATED.value,
                                   "detail": "missing, unknown, revoked or expired bearer token"}, status=401)
        return identity

    async def authenticated(request: web.Request) -> str | web.Response:
        """The agency of a request without a body (a GET), or its 401 (429)."""
        identity = await identify(request, gateway.address_of(request), datetime.now(UTC))
        if isinstance(identity, web.Response):
            return identity
        agency, key = identity
        gateway.note_use(key, agency)
        request["token_key"] = key
        return agency

    async def whoami(request: web.Request) -> web.Response:
        """The agency the token belongs to: a client's check of its token before it sends anything."""
        agency = await authenticated(request)
        return agency if isinstance(agency, web.Response) else _json_response({"agency": agency})

    async def get_dead_letters(request: web.Request) -> web.Response:
        """The token's agency's own dead letters, newest first (``?limit=``, 1 to MAX_DEAD_LETTERS)."""
        agency = await authenticated(request)
        if isinstance(agency, web.Response):
            return agency
        try:
            wanted = int(request.query.get("limit", "100"))
        except ValueError:
            wanted = 0
        if not 1 <= wanted <= MAX_DEAD_LETTERS or gateway.read_dead_letters is None:
            detail = (f"limit is a whole number from 1 to {MAX_DEAD_LETTERS}" if gateway.read_dead_letters
                      else "this gateway has no dead-letter store")
            return _json_response({"error": "bad_request", "detail": detail}, status=400)
        wait = gateway.rates.take(request["token_key"], wanted)  # a read costs its rows, as events do
        if wait > 0:
            return _rate_limited(wait)
        try:
            letters = await gateway.in_store(gateway.read_dead_letters, agency, wanted)
        except web.HTTPServiceUnavailable:
            raise
        except Exception as exc:  # the store is down: a retry signal
            log.error("dead-letter read failed: %s", exc)
            return _json_response({"error": "store_unavailable", "detail": type(exc).__name__, "retry": True},
                                  status=503)
        return _json_response({"agency": agency, "dead_letters": letters})

    async def openapi(_request: web.Request) -> web.Response:
        return web.Response(body=OPENAPI.read_bytes(), content_type="application/yaml", charset="utf-8")

    async def live(_request: web.Request) -> web.Response:
        return _json_response({"status": "alive"})

    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = gateway.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    @web.middleware
    async def measured(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/v1/events":
            return await handler(request)  # type: ignore[no-any-return]
        started, status = time.monotonic(), 500
        try:
            response = await handler(request)
            status = response.status
            return response  # type: ignore[no-any-return]
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            gateway.metrics.requests.labels(str(status)).inc()
            gateway.metrics.request_seconds.observe(time.monotonic() - started)

    async def on_cleanup(_app: web.Application) -> None:
        await gateway.close()

    app.middlewares.append(measured)
    app.router.add_post("/v1/events", post_events, expect_handler=expect)
    app.router.add_get("/v1/whoami", whoami)
    app.router.add_get("/v1/dead-letters", get_dead_letters)
    app.router.add_get("/openapi.yaml", openapi)
    app.router.add_get("/health", health)
    app.router.add_get("/live", live)
    app.router.add_get("/metrics", metrics)
    app.on_cleanup.append(on_cleanup)
    return app


def _unread(response: web.Response) -> web.Response:
    """The answer to a request whose body is not to be read: the connection closes after it, so
    the body is never drained into the process (the server runs with no lingering time)."""
    response.force_close()
    return response


def _rate_limited(wait: float) -> web.Response:
    seconds = max(1, math.ceil(wait))
    return _json_response({"error": "rate_limited", "detail": f"over this token's event rate; retry in {seconds} s",
                           "retry_after": seconds}, status=429, headers={"Retry-After": str(seconds)})


async def _too_large(gateway: Gateway, detail: str, origin: str, now: datetime, agency: str) -> web.Response:
    """413 for an authenticated request: one dead letter in the agency's name, without the body."""
    letter = dead_letter(Rejected(Reason.PAYLOAD_TOO_LARGE, detail, agency), b"", "gateway", origin, now)
    return _unread(await _refuse(gateway, 413, letter))


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None if it is larger than ``limit`` (read no further than that): a declared
    Content-Length is checked before reading, a chunked body while it streams."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _refuse(gateway: Gateway, status: int, letter: DeadLetter) -> web.Response:
    """Reject the whole request of an authenticated agency, leaving one dead letter."""
    try:
        await gateway.deliver([], [letter])
    except BrokerDown:
        log.error("could not dead-letter a refused request (%s): broker down", letter.reason.value)
    else:
        gateway.metrics.settled(0, [letter.reason.value])
    return _json_response({"error": letter.reason.value, "detail": letter.detail}, status=status)


def serve(settings: Settings, catalog: Catalog, verify: TokenVerifier, host: str, port: int,
          record_use: UseRecorder | None = None, read_dead_letters: DeadLetterReader | None = None) -> None:
    # No lingering: a request answered before its body was read (401, 413, 429) closes its
    # connection instead of draining the rest of the body.
    gateway = Gateway(settings, catalog, verify, record_use=record_use, read_dead_letters=read_dead_letters)
    web.run_app(create_app(gateway), host=host, port=port, print=None, lingering_time=0)
