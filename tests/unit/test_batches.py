"""The events consumer's ownership rule, on an in-memory broker (tests/support/local_broker.py): a
worker whose partitions are revoked never starts another write for them, waits for the one already
sent, and commits only what landed; and a batch's steps run in order, commit last."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from highland.streams.app import ClickHouseSink
from highland.streams.batches import BatchConsumer, Lease, LeaseLost

from highland.settings import Settings
from tests.support.local_broker import LocalBroker, LocalConsumer

TOPIC = "t.events"
TP = TopicPartition(TOPIC, 0)

Write = Callable[[list[int], Lease], Awaitable[None]]


class Steps:
    """A batch's steps for these tests: its records' offsets, no rejects, ``write`` as given."""

    def __init__(self, write: Write, log: list[str] | None = None) -> None:
        self._write = write
        self.log = log if log is not None else []

    async def validate(self, records: list[ConsumerRecord]) -> list[int]:
        self.log.append(f"validate {records[0].offset}")
        return [r.offset for r in records]

    async def dead_letter(self, batch: list[int]) -> None:
        await asyncio.sleep(0.01)  # the rejects' delivery takes a while: the write must wait for it
        self.log.append(f"dead-letter {batch[0]}")

    async def write(self, batch: list[int], lease: Lease) -> None:
        await self._write(batch, lease)


@asynccontextmanager
async def running(write: Write, records: int, log: list[str] | None = None,
                  **settings: Any) -> AsyncIterator[tuple[LocalBroker, LocalConsumer, list[BaseException]]]:
    """A batch consumer reading ``records`` records of one partition from a local broker."""
    broker = LocalBroker()
    for n in range(records):
        broker.produce(TOPIC, b"%d" % n)
    kafka = broker.consumer()
    crashes: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        crashes.append(exc)

    batches = BatchConsumer(Settings(**{"worker_revoke_wait_s": 5.0, **settings}), TOPIC, Steps(write, log),
                            on_error, consumer=lambda: kafka)
    await batches.start()
    try:
        yield broker, kafka, crashes
    finally:
        await batches.stop()


def through_sink(insert: Any) -> Write:
    """The worker's write stage: ``insert`` run by the ClickHouse sink, retried under the lease."""
    sink = ClickHouseSink(Settings())

    async def store(rows: list[int], lease: Lease) -> None:
        await sink.call("insert", insert, rows, lease=lease)

    return store


async def until(check: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_a_write_retrying_when_the_partitions_are_revoked_stops_and_commits_nothing():
    attempts: list[int] = []

    def failing_insert(client: Any, db: str, rows: list[int]) -> None:
        attempts.append(len(rows))
        raise OSError("ClickHouse is away")

    async def scenario() -> None:
        async with running(through_sink(failing_insert), 3) as (broker, kafka, crashes):
            await until(lambda: len(attempts) >= 2)  # retrying with back-off
            await kafka.revoke()
            tried = len(attempts)
            await asyncio.sleep(1.0)  # longer than the back-off: no attempt after the revocation
            assert len(attempts) == tried
            assert broker.commits == []
            assert crashes == []  # dropped, the worker goes on

    asyncio.run(scenario())


def test_a_write_in_flight_at_revocation_is_awaited_and_its_batch_committed_before_release():
    sent, finish = threading.Event(), threading.Event()

    def slow_insert(rows: list[int]) -> None:
        sent.set()
        assert finish.wait(5)

    async def store(rows: list[int], lease: Lease) -> None:
        await lease.attempt(slow_insert, rows)

    async def scenario() -> None:
        async with running(store, 3) as (broker, kafka, crashes):
            await until(sent.is_set)
            releasing = asyncio.ensure_future(kafka.revoke())
            await asyncio.sleep(0.2)
            assert not releasing.done(), "released the partitions with a write in flight"
            finish.set()
            await asyncio.wait_for(releasing, 5)
            assert broker.commits == [{TP: 3}]  # committed while the partitions were still ours
            await asyncio.sleep(0.2)
            assert broker.commits == [{TP: 3}]  # and not a second time by the loop
            assert crashes == []

    asyncio.run(scenario())


def test_a_write_that_left_poison_records_is_not_committed_by_a_revocation_before_their_dead_letters_are_sent():
    """The write succeeded, but the dead letters of its poison records are still to be sent: a
    revocation now must leave the batch to the next owner (who isolates them again), not commit it."""
    sent, finish = threading.Event(), threading.Event()

    def insert_with_poison(rows: list[int]) -> list[int]:
        sent.set()
        assert finish.wait(5)
        return [2]  # the poisoned rows

    async def store(rows: list[int], lease: Lease) -> None:
        await lease.attempt(insert_with_poison, rows, done=lambda poisoned: not poisoned)
        await asyncio.sleep(0.5)  # sending their dead letters

    async def scenario() -> None:
        async with running(store, 3) as (broker, kafka, crashes):
            await until(sent.is_set)
            releasing = asyncio.ensure_future(kafka.revoke())
            finish.set()
            await asyncio.wait_for(releasing, 5)
            await asyncio.sleep(0.7)  # the dead letters sent, the write step returned
            assert broker.commits == []
            assert crashes == []

    asyncio.run(scenario())


def test_a_failed_write_in_flight_at_revocation_is_not_committed():
    sent, finish = threading.Event(), threading.Event()
    attempts: list[int] = []

    def failing_insert(client: Any, db: str, rows: list[int]) -> None:
        attempts.append(len(rows))
        sent.set()
        assert finish.wait(5)
        raise OSError("connection reset")

    async def scenario() -> None:
        async with running(through_sink(failing_insert), 1) as (broker, kafka, crashes):
            await until(sent.is_set)
            releasing = asyncio.ensure_future(kafka.revoke())
            finish.set()
            await asyncio.wait_for(releasing, 5)
            await asyncio.sleep(0.5)  # longer than the first back-off
            assert attempts == [1]  # dropped after the failure, not retried
            assert broker.commits == []
            assert crashes == []

    asyncio.run(scenario())


def test_a_batch_read_before_a_rebalance_is_never_written():
    calls: list[int] = []

    async def never(rows: list[int], lease: Lease) -> None:
        raise AssertionError("no batch was to be written")

    async def scenario() -> None:
        batches = BatchConsumer(Settings(), TOPIC, Steps(never), on_error=never,  # type: ignore[arg-type]
                                consumer=LocalBroker().consumer)
        lease = Lease(batches, {TP: 500})
        await batches.release("partitions revoked")
        assert not lease.valid
        try:
            await lease.attempt(calls.append, 1)
        except LeaseLost:
            pass
        else:
            raise AssertionError("a stale batch was written")
        assert calls == []

    asyncio.run(scenario())


def test_the_next_batch_is_validated_while_one_is_written_but_writes_and_commits_stay_one_at_a_time_in_order():
    log: list[str] = []
    first_written = asyncio.Event()

    async def write(offsets: list[int], lease: Lease) -> None:
        log.append(f"write {offsets[0]} starts")
        if offsets[0] == 0:
            await first_written.wait()  # held until the test saw the next batch validated
        log.append(f"write {offsets[0]} ends")

    async def scenario() -> None:
        async with running(write, 6, log, worker_batch_size=2, worker_batch_seconds=0.05) as (broker, _, crashes):
            await until(lambda: "dead-letter 2" in log)
            assert "write 0 starts" in log and "write 0 ends" not in log  # validated during write 0
            assert "write 2 starts" not in log and "validate 4" not in log  # and no further
            assert broker.commits == []
            first_written.set()
            await until(lambda: len(broker.commits) == 3)
            assert crashes == []
        for n in (0, 2, 4):  # each batch's steps in order: validate, dead-letter, write
            assert log.index(f"validate {n}") < log.index(f"dead-letter {n}") < log.index(f"write {n} starts")
        writes = [line for line in log if line.startswith("write")]
        assert writes == ["write 0 starts", "write 0 ends", "write 2 starts", "write 2 ends",
                          "write 4 starts", "write 4 ends"]
        assert broker.commits == [{TP: 2}, {TP: 4}, {TP: 6}]

    asyncio.run(scenario())
