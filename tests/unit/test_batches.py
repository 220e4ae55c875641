"""The events consumer's ownership rule, without a broker: a worker whose partitions are revoked
never starts another write for them, waits for the one already sent, and commits only what landed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiokafka import TopicPartition
from highland.streams.app import ClickHouseSink
from highland.streams.batches import BatchConsumer, Lease, LeaseLost

from highland.settings import Settings

TP = TopicPartition("t.events", 0)
OFFSETS = {TP: 500}


class FakeKafka:
    """Stands in for the aiokafka consumer: records commits."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def consumer(store: Any, revoke_wait_s: float = 5.0) -> tuple[BatchConsumer, FakeKafka]:
    async def on_error(exc: BaseException) -> None:
        raise AssertionError(f"unexpected crash: {exc!r}")

    settings = Settings(worker_revoke_wait_s=revoke_wait_s)
    async def prepare(records: list[Any]) -> list[Any]:
        return records

    batches = BatchConsumer(settings, TP.topic, prepare, store, on_error)
    kafka = FakeKafka()
    batches._consumer = kafka  # type: ignore[assignment]
    return batches, kafka


def through_sink(insert: Any) -> Any:
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
        batches, kafka = consumer(through_sink(failing_insert))
        storing = asyncio.ensure_future(batches._handle([1, 2, 3], Lease(batches, dict(OFFSETS))))
        await until(lambda: len(attempts) >= 2)  # retrying with back-off
        await batches.release("partitions revoked")
        assert await asyncio.wait_for(storing, 10) is True  # dropped, the worker goes on
        tried = len(attempts)
        await asyncio.sleep(1.0)  # longer than the back-off: no attempt after the revocation
        assert len(attempts) == tried
        assert kafka.commits == []

    asyncio.run(scenario())


def test_a_write_in_flight_at_revocation_is_awaited_and_its_batch_committed_before_release():
    sent, finish = threading.Event(), threading.Event()

    def slow_insert(rows: list[int]) -> None:
        sent.set()
        assert finish.wait(5)

    async def scenario() -> None:
        async def store(rows: list[int], lease: Lease) -> None:
            await lease.attempt(slow_insert, rows)

        batches, kafka = consumer(store)
        storing = asyncio.ensure_future(batches._handle([1, 2, 3], Lease(batches, dict(OFFSETS))))
        await until(sent.is_set)
        releasing = asyncio.ensure_future(batches.release("partitions revoked"))
        await asyncio.sleep(0.2)
        assert not releasing.done(), "released the partitions with a write in flight"
        finish.set()
        await asyncio.wait_for(releasing, 5)
        assert kafka.commits == [OFFSETS]  # committed while the partitions were still ours
        assert await asyncio.wait_for(storing, 5) is True
        assert kafka.commits == [OFFSETS]  # and not a second time by the loop

    asyncio.run(scenario())


def test_a_write_that_left_poison_records_is_not_committed_by_a_revocation_before_their_dead_letters_are_sent():
    """The write succeeded, but the dead letters of its poison records are still to be sent: a
    revocation now must leave the batch to the next owner (who isolates them again), not commit it."""
    sent, finish = threading.Event(), threading.Event()

    def insert_with_poison(rows: list[int]) -> list[int]:
        sent.set()
        assert finish.wait(5)
        return [2]  # the poisoned rows

    async def scenario() -> None:
        async def store(rows: list[int], lease: Lease) -> None:
            await lease.attempt(insert_with_poison, rows, done=lambda poisoned: not poisoned)
            await asyncio.sleep(0.5)  # sending their dead letters

        batches, kafka = consumer(store)
        storing = asyncio.ensure_future(batches._handle([1, 2, 3], Lease(batches, dict(OFFSETS))))
        await until(sent.is_set)
        releasing = asyncio.ensure_future(batches.release("partitions revoked"))
        finish.set()
        await asyncio.wait_for(releasing, 5)
        assert await asyncio.wait_for(storing, 5) is True
        assert kafka.commits == []

    asyncio.run(scenario())


def test_a_failed_write_in_flight_at_revocation_is_not_committed():
    sent, finish = threading.Event(), threading.Event()

    def failing_insert(client: Any, db: str, rows: list[int]) -> None:
        sent.set()
        assert finish.wait(5)
        raise OSError("connection reset")

    async def scenario() -> None:
        batches, kafka = consumer(through_sink(failing_insert))
        storing = asyncio.ensure_future(batches._handle([1], Lease(batches, dict(OFFSETS))))
        await until(sent.is_set)
        releasing = asyncio.ensure_future(batches.release("partitions revoked"))
        finish.set()
        await asyncio.wait_for(releasing, 5)
        assert await asyncio.wait_for(storing, 5) is True  # dropped after the failure, not retried
        assert kafka.commits == []

    asyncio.run(scenario())


def test_a_batch_read_before_a_rebalance_is_never_written():
    calls: list[int] = []

    async def scenario() -> None:
        batches, _ = consumer(None)
        lease = Lease(batches, dict(OFFSETS))
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


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class QueuedKafka(FakeKafka):
    """Hands out prepared batches of records, one per getmany, then nothing."""

    def __init__(self, batches: list[list[int]]) -> None:
        super().__init__()
        self.batches = batches

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        if self.batches:
            return {TP: [Record(o) for o in self.batches.pop(0)]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}


def test_the_next_batch_is_prepared_while_one_is_written_but_writes_and_commits_stay_one_at_a_time_in_order():
    log: list[str] = []
    first_written = asyncio.Event()

    async def scenario() -> None:
        async def prepare(records: list[Record]) -> list[int]:
            log.append(f"prepare {records[0].offset}")
            return [r.offset for r in records]

        async def write(offsets: list[int], lease: Lease) -> None:
            log.append(f"write {offsets[0]} starts")
            if offsets[0] == 0:
                await first_written.wait()  # held until the test saw the next batch prepared
            log.append(f"write {offsets[0]} ends")

        async def on_error(exc: BaseException) -> None:
            raise AssertionError(f"unexpected crash: {exc!r}")

        batches = BatchConsumer(Settings(worker_batch_size=2, worker_batch_seconds=0.05), TP.topic, prepare, write,
                                on_error)
        kafka = QueuedKafka([[0, 1], [2, 3], [4, 5]])
        batches._consumer = kafka  # type: ignore[assignment]
        running = asyncio.ensure_future(batches._run())
        await until(lambda: "prepare 2" in log)
        assert "write 0 starts" in log and "write 0 ends" not in log  # prepared during write 0
        assert "write 2 starts" not in log and "prepare 4" not in log  # and no further
        assert kafka.commits == []
        first_written.set()
        await until(lambda: len(kafka.commits) == 3)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        writes = [line for line in log if line.startswith("write")]
        assert writes == ["write 0 starts", "write 0 ends", "write 2 starts", "write 2 ends",
                          "write 4 starts", "write 4 ends"]
        assert kafka.commits == [{TP: 2}, {TP: 4}, {TP: 6}]

    asyncio.run(scenario())
