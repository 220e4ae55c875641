"""The Faust worker: events topic -> validate -> ClickHouse, at least once, exact by construction.

The process is a Faust app (web, timers, the dead-letter agent, the alert evaluator), but the
events topic is read by a batch consumer it hosts (``streams/batches.py``): Faust's per-message
stream loop capped the worker near 9,000 events/s. Per batch (steps 1-2 of one batch overlap
steps 3-4 of the one before):
1. every message is re-validated with the shared validator (a producer can't be trusted);
2. rejects are sent to the dead-letter topic and their delivery awaited;
3. accepted events are written to ClickHouse by the worker's writer processes, each its share of
   the partitions (idempotent: each (agency, event_id, revision) once), retried until ClickHouse
   answers, but only while this worker still owns the partitions;
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
from datetime import UTC, datetime
from typing import Any, NamedTuple

import faust
from aiokafka import ConsumerRecord
from clickhouse_driver.errors import Error as ClickHouseError
from faust.app.base import BootStrategy
from mode import ServiceT

from catalog.loader import default_catalog
from catalog.models import Catalog
from highland.settings import Settings
from ingest.dead_letters import DLQ_SCHEMA_HEADER, DeadLetter, dead_letter
from ingest.events import Accepted, validate_batch
from sinks import dead_letters as dead_letter_sink
from sinks.client import connect
from sinks.writer import BatchColumns, BatchShares, WriteResult, write_events
from sinks.writer_process import WriterPool
from streams.batches import BatchConsumer, Lease
from streams.evaluator import AlertEvaluator

log = logging.getLogger("highland.worker")
# The Faust app's own group (dead letters only). The events consumer keeps ``consumer_group``: it
# owns the events offsets, and one group can't mix Faust's assignor with the client's.
FAUST_GROUP_SUFFIX = "-faust"
PREPARE_SLICE = 1000  # events validated between two yields to the event loop (~5 ms)
# The threads that hand a batch to the writer processes and collect their answers need the GIL for
# a moment while the event loop validates the next batch; at Python's default 5 ms switch interval
# each hand-over can wait that long. 0.2 ms: ~70,000 against ~60,000 events/s in alternating runs
# with the writer processes (docs/streams.md, Throughput).
GIL_SWITCH_INTERVAL_S = 0.0002
# A batch allocates ~5 tracked objects per event (records, dicts, tuples), none of them in a cycle,
# but Python's default thresholds (700, 10, 10) then ran a collection every ~140 events and a full
# one, over the whole heap and the batch read ahead, every ~100,000: ~45 % of the worker's CPU
# (measured: 12.1 -> 5.8 us an event, docs/streams.md). The few cycles (futures, tracebacks) are
# still collected: young ones every 100,000 allocations, all every 20 million.
GC_THRESHOLDS = (100_000, 20, 10)


class ClickHouseSink:
    """One ClickHouse connection per worker, used from a worker thread so the event loop (and
    with it the group heartbeat) never blocks on a slow or restarting server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = settings.clickhouse_database
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def _target(self, fn: Any, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        return fn, (self.client, self.db, *args)

    def _failed(self) -> None:
        self._client = None  # reconnect: the server may have restarted

    async def call(self, what: str, fn: Any, *args: Any, lease: Lease | None = None) -> Any:
        """Run ``fn(client, db, *args)`` in a thread, retrying until ClickHouse answers; under a
        ``lease``, only while it holds (``LeaseLost`` once the partitions are gone)."""
        delay = 0.2
        while True:
            target, full = self._target(fn, args)
            try:
                if lease is not None:
                    return await lease.attempt(target, *full)
                return await asyncio.to_thread(target, *full)
            except (ClickHouseError, OSError, EOFError) as exc:
                log.warning("ClickHouse %s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__,
                            exc, delay)
                self._failed()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class ProcessSink(ClickHouseSink):
    """The same retries, with the connections in the writer processes (sinks/writer_process.py):
    ``call(what, fn, parts, *args)`` runs ``fn(client, db, part, *args)`` for each part, each in a
    process of its own, at the same time."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pool = WriterPool(settings, settings.worker_writers)

    def _target(self, fn: Any, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        return self.pool.write, (fn, *args)

    def _failed(self) -> None:
        pass  # the process reconnects by itself, and the next call replaces a dead one


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
    """A batch after validation (its rejects already sent to the dead-letter topic)."""

    parts: list[BatchColumns]  # the accepted events, one part per writer process
    read: int
    rejected: int
    received_at: datetime


def split(records: list[ConsumerRecord], catalog: Catalog, now: datetime,
          accepted: BatchShares) -> list[DeadLetter]:
    """Validate ``records``: the accepted go into ``accepted``, the rejected come back as dead letters."""
    rejected: list[DeadLetter] = []
    payloads = [msg.value if isinstance(msg.value, bytes) else (msg.value or b"") for msg in records]
    for msg, raw, verdict in zip(records, payloads, validate_batch(payloads, catalog, now=now), strict=True):
        if isinstance(verdict, Accepted):
            accepted.add(verdict, msg.partition, msg.offset)
        else:
            origin = f"{msg.topic}/{msg.partition}/{msg.offset}"
            rejected.append(dead_letter(verdict, raw, "worker", origin, now))
    return rejected


def create_app(settings: Settings, catalog: Catalog | None = None) -> faust.App:
    catalog = catalog or default_catalog()
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
        store="memory://",
        datadir=str(settings.worker_data_dir or settings.state_dir / "faust"),
    )
    dlq_topic = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw", allow_empty=True)
    # One connection per concurrent user: a clickhouse-driver connection runs one query at a time.
    sink = ProcessSink(settings)
    dlq_sink = ClickHouseSink(settings)
    evaluator = AlertEvaluator(settings, catalog, ClickHouseSink(settings))

    async def send_dead_letters(records: list[DeadLetter]) -> None:
        futures = [await app.producer.send(settings.topic_dlq, r.key, r.to_bytes(), None, None,
                                           [DLQ_SCHEMA_HEADER]) for r in records]
        await asyncio.gather(*futures)

    async def prepare_events(records: list[ConsumerRecord]) -> Prepared:
        now = datetime.now(UTC)
        accepted = BatchShares(settings.worker_writers)
        rejected: list[DeadLetter] = []
        for start in range(0, len(records), PREPARE_SLICE):
            # Validation is CPU work in the event loop: yield between slices, so the previous
            # batch's write gets going in its thread and heartbeats and fetches keep flowing.
            await asyncio.sleep(0)
            rejected += split(records[start:start + PREPARE_SLICE], catalog, now, accepted)
        if rejected:
            await send_dead_letters(rejected)
        return Prepared(accepted.columns(), len(records), len(rejected), now)

    async def write_prepared(batch: Prepared, lease: Lease) -> None:
        parts = await sink.call("insert", write_events, batch.parts, batch.received_at, catalog.plan.timezone,
                                settings.clickhouse_cluster is not None, lease=lease)
        result = WriteResult.of_parts(parts)
        log.info("batch: %d events, %d stored, %d skipped as already stored, %d rejected",
                 batch.read, result.inserted, result.skipped, batch.rejected)

    events = BatchConsumer(settings, settings.topic_events, prepare_events, write_prepared, on_error=app.crash)
    app.boot_strategy = _EventsEarly(app, events)

    @app.agent(dlq_topic)
    async def store_dead_letters(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(1000, within=1.0):
            records = []
            for event in events:
                msg = event.message
                try:
                    records.append((msg.partition, msg.offset, DeadLetter.model_validate_json(msg.value)))
                except ValueError:
                    log.error("unreadable dead letter at %s/%s/%s skipped", msg.topic, msg.partition, msg.offset)
            await dlq_sink.call("dead-letter insert", dead_letter_sink.store, records)
            for event in events:
                await stream.ack(event)

    @app.task
    async def start_writer() -> None:
        sink.pool.start()  # from the main thread (see WriterProcess.start)

    @app.timer(interval=settings.alert_check_seconds)
    async def evaluate_alerts() -> None:
        # One evaluator per group: whoever reads partition 0 of the events topic.
        assigned = events.assignment()
        if any(tp.topic == settings.topic_events and tp.partition == 0 for tp in assigned):
            await evaluator.run(app, datetime.now(UTC))

    return app


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    # What exists now (modules, the catalog, Faust's services) is never garbage: out of the
    # collector's sight. Then collect young objects 140x less often than Python's default.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    worker.execute_from_commandline()
