"""The Faust worker: events topic -> validate -> ClickHouse, at least once, exact by construction.

The process is a Faust app (web, timers, the dead-letter agent, the alert evaluator), but the
events topic is read by a batch consumer it hosts (``streams/batches.py``): Faust's per-message
stream loop capped the worker near 9,000 events/s. Per batch (steps 1-2 of one batch overlap
steps 3-4 of the one before):
1. every message is re-validated with the shared validator (a producer can't be trusted);
2. rejects are sent to the dead-letter topic and their delivery awaited;
3. accepted events are written to ClickHouse by the worker's writer processes, each its share of
   the partitions (idempotent: each (agency, event_id, revision) once), retried until ClickHouse
   answers, but only while this worker still owns the partitions. Under the poison-record policy
   (sinks/poison.py): events the store refuses for their content are dead-lettered
   (``out_of_range``), never retried; only infrastructure failures are;
4. only then are the batch's offsets committed.
A worker killed at any point re-reads at most the uncommitted batches, and the writer skips what
is already stored (see docs/streams.md).

State lives in ClickHouse, not in Faust tables: plan totals are queries over the deduplicated
events, live windows are materialized views of the same INSERT, and alert state is the alerts
table. A restarted or added worker needs nothing but its committed offsets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple, TypeVar

import faust
from aiokafka import ConsumerRecord
from faust.app.base import BootStrategy
from faust.types import EventT
from highland.catalog.loader import catalog_at
from highland.catalog.models import Catalog
from highland.ingest import wire
from highland.ingest.dead_letters import DeadLetter, dead_letter, unreadable
from highland.ingest.events import Accepted, Reason, Rejected, Verdict, validate_batch
from highland.sinks import dead_letters as dead_letter_sink
from highland.sinks.client import connect
from highland.sinks.poison import Unisolated, retryable
from highland.sinks.topology import Topology
from highland.sinks.writer import BatchColumns, BatchShares, WriteResult, write_events
from highland.sinks.writer_process import IsolatedPart, PoisonRow, WriterPool, write_isolated
from highland.streams.audit import SelfCheck
from highland.streams.batches import BatchConsumer, Lease
from highland.streams.evaluator import AlertEvaluator
from highland.streams.health import Health
from highland.streams.metrics import WorkerMetrics
from mode import Service, ServiceT

from highland.settings import Settings

log = logging.getLogger("highland.worker")
T = TypeVar("T")
# The Faust app's own group (dead letters only). The events consumer keeps ``consumer_group``: it
# owns the events offsets, and one group can't mix Faust's assignor with the client's.
FAUST_GROUP_SUFFIX = "-faust"
PREPARE_SLICE = 1000  # events validated between two yields to the event loop (~5 ms)
# The threads that hand a batch to the writer processes and collect their answers need the GIL for
# a moment while the event loop validates the next batch; at Python's default 5 ms switch interval
# each hand-over can wait that long. 0.2 ms was faster in alternating runs (docs/benchmarks.md,
# sessions 3 and 4).
GIL_SWITCH_INTERVAL_S = 0.0002
# A batch allocates ~5 tracked objects per event (records, dicts, tuples), none of them in a cycle,
# but Python's default thresholds (700, 10, 10) then ran a collection every ~140 events and a full
# one, over the whole heap and the batch read ahead, every ~100,000: a large share of the worker's
# CPU (docs/benchmarks.md, session 4). The few cycles (futures, tracebacks) are
# still collected: young ones every 100,000 allocations, all every 20 million.
GC_THRESHOLDS = (100_000, 20, 10)
STUCK_CHECK_S = 1.0  # how often batches in progress are checked for being stuck
CRASH_CHECK_S = 0.2  # how soon a crashed app makes the worker leave


async def retrying(what: str, attempt: Callable[[], Awaitable[T]], health: Health | None = None,
                   failed: Callable[[], None] = lambda: None) -> T:
    """The one retry loop of the worker's ClickHouse calls: ``attempt()`` again, with back-off,
    while it fails in a way ``retryable`` says is worth it (``failed`` runs after each such failure);
    any other exception -- a failure of the content, ``LeaseLost``, a bug -- is raised at once."""
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not retryable(exc):
                raise
            log.warning("ClickHouse %s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
            if health is not None:
                health.counters.infrastructure_retries += 1
            failed()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _once(target: Callable[..., T], args: tuple[Any, ...], lease: Lease | None,
                done: Callable[[Any], bool] | None) -> T:
    """One try of ``target(*args)`` in a thread; under a ``lease``, only while it holds."""
    if lease is not None:
        return await lease.attempt(target, *args, done=done)
    return await asyncio.to_thread(target, *args)


class ClickHouseSink:
    """One ClickHouse connection per worker, used from a worker thread so the event loop (and
    with it the group heartbeat) never blocks on a slow or restarting server."""

    def __init__(self, settings: Settings, health: Health | None = None) -> None:
        self.settings = settings
        self.db = settings.clickhouse_database
        self.health = health
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def _reconnect(self) -> None:
        self._client = None  # the server may have restarted

    async def call(self, what: str, fn: Any, *args: Any, lease: Lease | None = None,
                   done: Callable[[Any], bool] | None = None) -> Any:
        """Run ``fn(client, db, *args)`` in a thread, ``retrying`` until ClickHouse answers; under a
        ``lease``, only while it holds (``LeaseLost`` once the partitions are gone; ``done``: see
        ``Lease.attempt``). A failure of the content is never retried (it would be forever): the
        poison-record policy inside ``fn`` keeps those from getting here."""
        return await retrying(what, lambda: _once(fn, (self.client, self.db, *args), lease, done), self.health,
                              self._reconnect)


class ProcessSink:
    """The events writes, in the writer processes (sinks/writer_process.py), ``retrying`` as
    ``ClickHouseSink`` does: ``call(what, fn, parts, *args)`` runs ``fn(client, db, part, *args)``
    for each part, each in a process of its own, at the same time. A process reconnects by itself,
    and the next call replaces a dead one."""

    def __init__(self, settings: Settings, health: Health | None = None) -> None:
        self.health = health
        self.pool = WriterPool(settings, settings.worker_writers)

    async def call(self, what: str, fn: Any, *args: Any, lease: Lease | None = None,
                   done: Callable[[Any], bool] | None = None) -> Any:
        return await retrying(what, lambda: _once(self.pool.write, (fn, *args), lease, done), self.health)


class _EventsEarly(BootStrategy):
    """Faust's start order with the events consumer right after the producer (it sends dead
    letters). As an ``app.service`` it would start only after Faust's own group join, and a worker
    would join its two groups one after the other. Children stop in reverse order, so the events
    consumer still releases its partitions before the producer stops."""

    def __init__(self, app: faust.App, events: ServiceT) -> None:
        super().__init__(app)
        self.events = events

    def server(self) -> list[ServiceT]:
        services = list(super().server())
        services.insert(services.index(self.app.producer) + 1, self.events)
        return services


class Prepared(NamedTuple):
    """A batch after validation."""

    parts: list[BatchColumns]  # the accepted events, one part per writer process
    read: int
    rejected: int
    received_at: datetime
    records: list[ConsumerRecord]  # as read: the raw payload of an event the store refuses
    reasons: dict[str, int]  # rejected records by reason
    letters: list[DeadLetter]  # the rejected records' dead letters


SendDeadLetters = Callable[[list[DeadLetter]], Awaitable[None]]


class EventSteps:
    """The events batch's steps (``streams.batches.Steps``): validate, dead-letter, write. The batch
    consumer runs them in order and commits last."""

    def __init__(self, settings: Settings, catalog: Catalog, sink: ProcessSink, health: Health,
                 metrics: WorkerMetrics, send_dead_letters: SendDeadLetters) -> None:
        self.settings = settings
        self.catalog = catalog
        self.sink = sink
        self.health = health
        self.metrics = metrics
        self.send_dead_letters = send_dead_letters
        self.watch = health.watch("events")

    def owner_of(self, topic: str) -> str | None:
        return wire.agency_of_topic(self.settings, topic)

    async def validate(self, records: list[ConsumerRecord]) -> Prepared:
        now = datetime.now(UTC)
        accepted = BatchShares(self.settings.worker_writers)
        rejected: list[DeadLetter] = []
        for start in range(0, len(records), PREPARE_SLICE):
            # Validation is CPU work in the event loop: yield between slices, so the previous
            # batch's write gets going in its thread and heartbeats and fetches keep flowing.
            await asyncio.sleep(0)
            rejected += split(records[start:start + PREPARE_SLICE], self.catalog, now, accepted, self.owner_of)
        reasons: dict[str, int] = {}
        for letter in rejected:
            reasons[letter.reason.value] = reasons.get(letter.reason.value, 0) + 1
        return Prepared(accepted.columns(), len(records), len(rejected), now, records, reasons, rejected)

    async def dead_letter(self, batch: Prepared) -> None:
        if batch.letters:
            await self.send_dead_letters(batch.letters)

    async def write(self, batch: Prepared, lease: Lease) -> None:
        """The accepted events to ClickHouse; the events it refused for their content dead-lettered
        before the batch counts as done (``_nothing_poisoned``)."""
        started = time.monotonic()
        with self.watch.running():
            parts: list[IsolatedPart] = await self.sink.call(
                "insert", partial(write_isolated, write_events), batch.parts, batch.received_at,
                self.catalog.plan.timezone, Topology.of(self.settings), lease=lease, done=_nothing_poisoned)
            poisoned = [row for part in parts for row in part.poisoned]
            if poisoned:
                for row in poisoned:
                    log.warning("poison event at partition %d offset %d dead-lettered: %s", row.partition,
                                row.offset, row.error)
                await self.send_dead_letters(poison_letters(batch, poisoned))
        self._count(batch, WriteResult.of_parts([r for part in parts for r in part.results]), len(poisoned),
                    time.monotonic() - started)

    def _count(self, batch: Prepared, result: WriteResult, poisoned: int, seconds: float) -> None:
        health = self.health
        counters = health.counters
        counters.batches_written += 1
        counters.records_consumed += batch.read
        counters.events_accepted += batch.read - batch.rejected
        counters.events_stored += result.inserted
        counters.poison_dead_lettered += poisoned
        counters.events_rejected += batch.rejected
        counters.dead_letters_sent += batch.rejected + poisoned
        for reason, count in batch.reasons.items():
            health.rejected_by_reason[reason] = health.rejected_by_reason.get(reason, 0) + count
        self.metrics.batch_events.observe(batch.read)
        self.metrics.write_seconds.observe(seconds)
        self.metrics.storage_delay.observe((datetime.now(UTC) - batch.received_at).total_seconds(),
                                      batch.read - batch.rejected - poisoned)
        log.info("batch: %d events, %d stored, %d skipped as already stored, %d rejected, %d poison",
                 batch.read, result.inserted, result.skipped, batch.rejected, poisoned)


def _origin(msg: ConsumerRecord) -> str:
    return f"{msg.topic}/{msg.partition}/{msg.offset}"


def _verdicts(payloads: list[bytes], headers: list[Any], catalog: Catalog, now: datetime) -> list[Verdict]:
    """``validate_batch``; should it raise (a validator bug), each payload on its own, and one that
    still raises is rejected with the error: one record must not crash the worker, for ever."""
    try:
        return validate_batch(payloads, catalog, now=now, headers=headers)
    except Exception:
        log.exception("the validator raised on a batch; validating its events one by one")
    verdicts: list[Verdict] = []
    for payload, header in zip(payloads, headers, strict=True):
        try:
            verdicts += validate_batch([payload], catalog, now=now, headers=[header])
        except Exception as exc:
            verdicts.append(Rejected(Reason.SCHEMA_VIOLATION, f"the validator failed on it: {type(exc).__name__}: "
                                                              f"{exc}"[:500]))
    return verdicts


def _agency_checked(verdict: Verdict, topic: str, owner: str | None) -> Verdict:
    """On an agency's own topic (only its Kafka principal may write it), the topic names the agency:
    an event in another agency's name is ``forbidden_agency`` (CONTRACT §1.1, "Identity"), and a
    reject is that agency's dead letter whatever its payload claims."""
    if owner is None:
        return verdict
    if isinstance(verdict, Accepted):
        if verdict.agency == owner:
            return verdict
        return Rejected(Reason.FORBIDDEN_AGENCY, f"event is in the name of {verdict.agency!r}, written to "
                                                 f"{topic!r}, which only {owner!r} may write", owner)
    return Rejected(verdict.reason, verdict.detail, owner)


def split(records: list[ConsumerRecord], catalog: Catalog, now: datetime,
          accepted: BatchShares, owner_of: Callable[[str], str | None] = lambda topic: None) -> list[DeadLetter]:
    """Validate ``records``: the accepted go into ``accepted``, the rejected come back as dead letters.
    ``owner_of``: the agency whose own topic a record was read from (None: the shared events topic)."""
    rejected: list[DeadLetter] = []
    payloads = [msg.value if isinstance(msg.value, bytes) else (msg.value or b"") for msg in records]
    headers = [msg.headers for msg in records]  # a foreign ``schema`` header: rejected unread
    for msg, raw, verdict in zip(records, payloads, _verdicts(payloads, headers, catalog, now), strict=True):
        verdict = _agency_checked(verdict, msg.topic, owner_of(msg.topic))
        if isinstance(verdict, Accepted):
            accepted.add(verdict, msg.partition, msg.offset)
        else:
            rejected.append(dead_letter(verdict, raw, "worker", _origin(msg), now))
    return rejected


def poison_letters(batch: Prepared, poisoned: list[PoisonRow]) -> list[DeadLetter]:
    """Dead letters (``out_of_range``: CONTRACT §1.1, what every store can hold) for the accepted
    events the store refused for their content, with their payloads as read."""
    read = {(msg.partition, msg.offset): msg for msg in batch.records}
    letters = []
    for row in poisoned:
        msg = read[(row.partition, row.offset)]
        detail = f"accepted, but the store can't hold it ({row.failure}): {row.error}"
        letters.append(dead_letter(Rejected(Reason.OUT_OF_RANGE, detail, row.agency), msg.value or b"", "worker",
                                   _origin(msg), batch.received_at))
    return letters


def _nothing_poisoned(parts: list[IsolatedPart]) -> bool:
    """A batch whose write left poisoned events is done only once their dead letters are sent."""
    return not any(part.poisoned for part in parts)


def read_dead_letter(msg: Any, now: datetime) -> tuple[int, int, DeadLetter, bool]:
    """A record of the dead-letter topic as (partition, offset, dead letter, readable)."""
    try:
        return msg.partition, msg.offset, DeadLetter.model_validate_json(msg.value), True
    except (ValueError, TypeError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("unreadable dead letter at %s/%s/%s stored as one of its own: %s", msg.topic, msg.partition,
                    msg.offset, why)
        return msg.partition, msg.offset, unreadable(msg.value or b"", why, _origin(msg), now), False


class _Worker(faust.Worker):
    """Faust's worker, but a crashed app ends the process with a non-zero status: mode marks the
    app crashed and logs it, yet the worker would keep running and no supervisor restart it."""

    @Service.task
    async def _leave_when_crashed(self) -> None:
        while not self.should_stop:
            if self.app.crashed:
                log.critical("the worker crashed (%r); stopping, exit status non-zero", self.app.crash_reason)
                self.crash_reason = self.app.crash_reason  # what execute_from_commandline re-raises
                # Not awaited here: stopping cancels this very task.
                self._stopping = asyncio.ensure_future(self.stop())
                return
            await self.sleep(CRASH_CHECK_S)


def _credentials(settings: Settings) -> faust.SASLCredentials | None:
    """Faust's form of ``Settings.kafka_security`` (its producer sends the dead letters, its consumer reads them)."""
    found = settings.kafka_security()
    if not found:
        return None
    return faust.SASLCredentials(username=found["sasl_plain_username"], password=found["sasl_plain_password"],
                                 mechanism=found["sasl_mechanism"], ssl_context=found.get("ssl_context"))


def create_app(settings: Settings, catalog: Catalog | None = None) -> faust.App:
    catalog = catalog or catalog_at(settings.catalog_dir)
    app = faust.App(
        settings.consumer_group + FAUST_GROUP_SUFFIX,
        broker=[f"kafka://{s}" for s in settings.bootstrap_servers],
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        # The events topics are created by `stack up` / operations, never by a worker.
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Safe with manual acks (only acked offsets are committed), and it keeps SIGTERM from
        # waiting forever on a stream whose agent died.
        stream_wait_empty=False,
        web_enabled=settings.worker_web_enabled,
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_host,
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(settings.worker_data_dir or settings.state_dir / "faust"),
    )
    dlq_topic = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw", allow_empty=True)
    health = Health(settings.worker_stuck_after_s)
    app.health = health  # type: ignore[attr-defined]
    # One connection per concurrent user: a clickhouse-driver connection runs one query at a time.
    sink = ProcessSink(settings, health)
    dlq_sink = ClickHouseSink(settings, health)
    evaluator = AlertEvaluator(settings, catalog, ClickHouseSink(settings))
    dead_letters_watch = health.watch("dead_letters")

    async def send_dead_letters(records: list[DeadLetter]) -> None:
        futures = [await wire.send_with_faust(app.producer, wire.dead_letter_record(settings, r)) for r in records]
        await asyncio.gather(*futures)

    # self_check is read when /metrics is rendered, once the app is built.
    metrics = WorkerMetrics(health, lambda: self_check.stats.as_dict())
    steps = EventSteps(settings, catalog, sink, health, metrics, send_dead_letters)
    events = BatchConsumer(settings, settings.topic_events, steps, on_error=app.crash,
                           also=wire.events_topics(settings, (a.code for a in catalog.agencies))[1:])
    app.boot_strategy = _EventsEarly(app, events)

    async def store_dead_letter_batch(events: list[EventT]) -> None:
        with dead_letters_watch.running():
            now = datetime.now(UTC)
            read = [read_dead_letter(event.message, now) for event in events]
            report = await dlq_sink.call("dead-letter insert", dead_letter_sink.store_isolated,
                                         [(p, o, letter) for p, o, letter, _ in read], now)
        unreadable_count = sum(not readable for *_, readable in read)
        health.counters.dead_letters_stored += report.stored + report.sanitized
        health.counters.dead_letters_sanitized += report.sanitized + unreadable_count
        health.counters.dead_letters_skipped += report.skipped

    @app.agent(dlq_topic)
    async def store_dead_letters(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(1000, within=1.0):
            try:
                await store_dead_letter_batch(events)
            except Unisolated as exc:  # see sinks/poison.py: restart from the last commit
                log.error("storing dead letters failed with nothing to blame; crashing the worker", exc_info=exc)
                await app.crash(exc)
                return
            for event in events:
                await stream.ack(event)

    @app.timer(interval=STUCK_CHECK_S)
    async def report_stuck_batches() -> None:
        health.check_stuck()

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({**health.report(), "self_check": self_check.stats.as_dict()})

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = metrics.render()
        return web.bytes(body, content_type=content_type)

    @app.task
    async def start_writer() -> None:
        sink.pool.start()  # from the main thread (see WriterProcess.start)

    def leads_the_group() -> bool:
        # One evaluator and one self-check per group: whoever reads partition 0 of the events topic.
        return any(tp.topic == settings.topic_events and tp.partition == 0 for tp in events.assignment())

    @app.timer(interval=settings.alert_check_seconds)
    async def evaluate_alerts() -> None:
        if leads_the_group():
            await evaluator.run(app, datetime.now(UTC))

    self_check = SelfCheck(settings, catalog, ClickHouseSink(settings))
    app.self_check = self_check  # type: ignore[attr-defined]

    @app.timer(interval=settings.audit_seconds)
    async def check_the_numbers() -> None:
        if leads_the_group():
            await self_check.run(app, datetime.now(UTC))

    return app


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    app = create_app(settings)
    worker = _Worker(app, loglevel=loglevel)
    # What exists now (modules, the catalog, Faust's services) is never garbage: out of the
    # collector's sight. Then collect young objects 140x less often than Python's default.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    worker.execute_from_commandline()
