"""The events hot path: a batch consumer hosted by the Faust worker, with offsets under its control.

Faust hands a stream one message at a time (a callback and a queue hop per message), which capped
the worker near 9,000 events/s whatever the batch size. This service reads the events topic with
aiokafka's ``getmany`` instead, in the same consumer-group semantics, and hands whole batches to
``Steps``, one named step each, always in this order: ``validate`` (CPU in the event loop),
``dead_letter`` (the rejects sent), ``write`` (ClickHouse, in a thread); then the consumer itself
commits, always last. Validating and dead-lettering batch N+1 overlap the write of batch N, so the
Python work of one batch runs while ClickHouse works on the other. Writes stay one at a time and in
order. Offsets are committed explicitly, only after a batch's write returned: at least once, with
exactness left to the idempotent writer.

The Kafka consumer is injected (``KafkaConsumer``, which aiokafka's consumer satisfies), so the
unit tests run this very loop on an in-memory broker (tests/support/local_broker.py).

Ownership is the rule that keeps a partition written by one worker at a time: a batch may be
written and committed only under a ``Lease``, valid while the group has not rebalanced since the
batch was read. On revocation (or shutdown) every lease is invalidated first, so no new write
attempt starts; the one attempt already sent is waited for (it can't be recalled) and, if it
succeeded, the batch is committed before the partitions are released. A failed or unfinished
batch is dropped uncommitted and re-read by the next owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from highland.settings import Settings

log = logging.getLogger("highland.worker")
T = TypeVar("T")
B = TypeVar("B")


class KafkaConsumer(Protocol):
    """What the batch consumer needs of a Kafka consumer: aiokafka's ``AIOKafkaConsumer`` is one
    (``kafka_consumer``), the tests' in-memory broker hands out another."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: Sequence[str], *, listener: ConsumerRebalanceListener) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


def kafka_consumer(settings: Settings) -> KafkaConsumer:
    """The worker's events consumer: the batch consumer's group, offsets committed by hand only."""
    s = settings
    consumer: Any = AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap_servers, group_id=s.consumer_group, client_id=f"{s.consumer_group}-events",
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=int(s.session_timeout_s * 1000),
        heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
        max_poll_records=s.worker_batch_size, **s.kafka_security(),
    )
    return consumer  # type: ignore[no-any-return]


class LeaseLost(Exception):
    """The batch's partitions were revoked (or the worker is stopping): drop it uncommitted."""


class Lease:
    """The right to write one batch and commit its offsets.

    The write stage runs its one durable write through ``attempt``; that write is the batch's last
    step, so an attempt that succeeded means the batch is done (a revocation then commits it) --
    unless its result says otherwise (``done``): a write that left poison records behind is done
    only once their dead letters are sent, so a revocation in between leaves it uncommitted."""

    def __init__(self, owner: BatchConsumer, offsets: dict[TopicPartition, int]) -> None:
        self._owner = owner
        self._generation = owner.generation
        self.offsets = offsets  # next offset to read per partition, i.e. what to commit
        self.inflight: asyncio.Future[Any] | None = None
        self._done: Callable[[Any], bool] | None = None

    @property
    def valid(self) -> bool:
        return self._generation == self._owner.generation

    async def attempt(self, fn: Callable[..., T], *args: Any, done: Callable[[T], bool] | None = None) -> T:
        """One try of ``fn(*args)`` in a thread, tracked so a revocation can wait for it. ``done``:
        whether its result completes the batch (by default any result does)."""
        if not self.valid:
            raise LeaseLost()
        self._done = done
        self.inflight = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        # Shielded: cancelling the caller can't stop the thread, and the attempt must stay
        # visible to the revocation that waits for it.
        return await asyncio.shield(self.inflight)

    @property
    def written(self) -> bool:
        fut = self.inflight
        if fut is None or not fut.done() or fut.cancelled() or fut.exception() is not None:
            return False
        return self._done is None or self._done(fut.result())


class Steps(Protocol[B]):
    """One batch's processing as named steps, run by ``BatchConsumer`` in this order, each awaited
    before the next: ``validate`` the records read into a batch ``B``; ``dead_letter`` its rejects
    (their delivery awaited); ``write`` it under its ``Lease``. The consumer commits the batch's
    offsets after ``write`` returned: commit is always last, and never part of a step. An exception
    from a step (other than ``LeaseLost`` from ``write``) crashes the worker, which restarts from
    the last commit."""

    async def validate(self, records: list[ConsumerRecord]) -> B: ...

    async def dead_letter(self, batch: B) -> None: ...

    async def write(self, batch: B, lease: Lease) -> None: ...


OnError = Callable[[BaseException], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner.release("partitions revoked")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # The shape of Faust's own assignment table, so operators (and tests) read one format.
        for topic in self._owner.topics:
            parts = sorted(tp.partition for tp in assigned if tp.topic == topic)
            if parts or topic == self._owner.topic:
                log.info("events consumer assigned: | %s | {%s} |", topic, ", ".join(map(str, parts)))


class BatchConsumer(Service):
    """Reads ``topic`` in batches of up to ``worker_batch_size`` records (waiting at most
    ``worker_batch_seconds`` after the first), runs the ``steps`` on each, and commits after its
    write returns. Any other exception from a step goes to ``on_error`` (the app crashes and
    restarts from the last commit) and ends the loop. ``consumer``: makes the Kafka consumer, when
    the service starts (by default ``kafka_consumer(settings)``)."""

    def __init__(self, settings: Settings, topic: str, steps: Steps[Any], on_error: OnError,
                 also: Sequence[str] = (), consumer: Callable[[], KafkaConsumer] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topic = topic
        self.topics = [topic, *also]  # ``also``: the agencies' own topics (docs/agencies.md), same group
        self.steps = steps
        self.on_error = on_error
        self.generation = 0  # bumped on every revocation: leases of earlier batches become invalid
        self._make_consumer = consumer or (lambda: kafka_consumer(settings))
        self._lease: Lease | None = None  # of the batch being written (one at a time)
        self._consumer: KafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[bool] | None = None

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer else set()

    async def on_start(self) -> None:
        self._consumer = self._make_consumer()
        await self._consumer.start()
        # Subscribing after start() lets the group join run in the background (subscribed before,
        # start() waits for the first assignment and holds up the rest of the worker's start).
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        self._loop_task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        # Same rule as a revocation: finish or drop the batch before leaving the group.
        await self.release("stopping")
        for task in (self._loop_task, self._writing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def release(self, why: str) -> None:
        """Invalidate every lease; wait for the attempt already sent; commit its batch if it landed."""
        self.generation += 1
        lease = self._lease
        if lease is None or lease.inflight is None:
            return
        if not lease.inflight.done():
            log.info("%s: waiting for the write in flight before releasing the partitions", why)
            await asyncio.wait({lease.inflight}, timeout=self.settings.worker_revoke_wait_s)
        if lease.written:
            await self._commit(lease.offsets)
        elif not lease.inflight.done():
            # Can't be recalled: it may still land. The next owner's check-before-insert then sees
            # it or not depending on timing (see docs/streams.md, "Ownership": its limits).
            log.error("%s: a ClickHouse write still in flight after %.0f s; releasing anyway", why,
                      self.settings.worker_revoke_wait_s)

    async def _run(self) -> None:
        read_ahead: asyncio.Queue[tuple[list[ConsumerRecord], Lease] | Exception] = asyncio.Queue(
            maxsize=self.settings.worker_read_ahead_batches)
        reader = asyncio.ensure_future(self._read(read_ahead))
        try:
            while True:
                batch = await read_ahead.get()
                if isinstance(batch, Exception):
                    await self._crash("events consumer failed", batch)
                    return
                records, lease = batch
                if not lease.valid:
                    continue  # read before a rebalance: the new owner reads it again
                # Validate and dead-letter this batch while the previous one is being written.
                try:
                    prepared = await self.steps.validate(records)
                    await self.steps.dead_letter(prepared)
                except Exception as exc:
                    await self._crash("preparing a batch failed", exc)
                    return
                if self._writing is not None and not await self._writing:
                    return
                self._writing = asyncio.ensure_future(self._handle(prepared, lease))
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, read_ahead: asyncio.Queue[tuple[list[ConsumerRecord], Lease] | Exception]) -> None:
        """Keeps batches read ahead: aiokafka fetches a partition again only once its buffer is
        drained, so without this every batch would wait for a fetch round trip."""
        while True:
            try:
                records, lease = await self._next_batch()
            except Exception as exc:  # a consumer that can't fetch must not idle silently
                await read_ahead.put(exc)
                return
            if records:
                await read_ahead.put((records, lease))

    async def _crash(self, what: str, exc: BaseException) -> None:
        log.error("%s; crashing the worker so it restarts from the last commit", what, exc_info=exc)
        await self.on_error(exc)

    async def _handle(self, prepared: Any, lease: Lease) -> bool:
        """Write one validated batch and commit it (last); False if the worker must stop."""
        self._lease = lease
        try:
            await self.steps.write(prepared, lease)
        except LeaseLost:
            log.info("a batch was dropped uncommitted: its partitions were revoked")
            return True
        except Exception as exc:
            log.exception("batch failed; crashing the worker so it restarts from the last commit")
            await self.on_error(exc)
            return False
        finally:
            self._lease = None
        if lease.valid:  # else release() has committed it, or it was dropped
            await self._commit(lease.offsets)
        return True

    async def _next_batch(self) -> tuple[list[ConsumerRecord], Lease]:
        """Up to batch_size records, waiting at most batch_seconds after the first one arrived."""
        assert self._consumer is not None
        s = self.settings
        records: list[ConsumerRecord] = []
        offsets: dict[TopicPartition, int] = {}
        lease = Lease(self, offsets)
        deadline = time.monotonic() + s.worker_batch_seconds
        while len(records) < s.worker_batch_size:
            timeout = deadline - time.monotonic() if records else s.worker_batch_seconds
            if timeout <= 0:
                break
            got = await self._consumer.getmany(timeout_ms=int(timeout * 1000),
                                               max_records=s.worker_batch_size - len(records))
            if not lease.valid:  # a rebalance in between: what was read belongs to the new owner
                records.clear()
                offsets.clear()
                lease = Lease(self, offsets)
            if not got:
                break
            if not records:
                deadline = time.monotonic() + s.worker_batch_seconds
            for tp, msgs in got.items():
                records.extend(msgs)
                offsets[tp] = msgs[-1].offset + 1
        return records, lease

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless for exactness: the next owner re-reads the batch and the writer skips it.
            log.warning("offset commit failed (%s: %s); the batch will be re-read", type(exc).__name__, exc)
