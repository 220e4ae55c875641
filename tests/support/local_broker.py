"""An in-memory Kafka for unit tests of the batch consumer (after arroyo's LocalBroker).

It keeps the rules the batch consumer relies on, no more: records of a partition in offset order;
a consumer reads from its group's committed offset (from the start when there is none) what its
assignment holds; a revocation is announced to the consumer's rebalance listener while the
partitions are still its own (so it may still commit them there), after which a commit of them is
refused, as Kafka refuses a commit from an earlier generation. It is a stand-in for the consumer
the worker is given (``highland.streams.batches.KafkaConsumer``), not for Kafka in general: the
integration tests run the worker against a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError


class LocalBroker:
    """Topics of partitions held in memory, and one consumer group's committed offsets."""

    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []  # every accepted commit, in order
        self.arrived = asyncio.Event()

    def produce(self, topic: str, value: bytes, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
        tp = TopicPartition(topic, partition)
        log = self.logs.setdefault(tp, [])
        record = ConsumerRecord(topic=topic, partition=partition, offset=len(log), timestamp=0, timestamp_type=0,
                                key=None, value=value, checksum=None, serialized_key_size=-1,
                                serialized_value_size=len(value), headers=())
        log.append(record)
        self.arrived.set()
        return record

    def consumer(self) -> LocalConsumer:
        return LocalConsumer(self)


class LocalConsumer:
    """One member of the group; it is assigned every partition of its topics until ``revoke``."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker
        self.listener: ConsumerRebalanceListener | None = None
        self.topics: list[str] = []
        self.revoked: set[TopicPartition] = set()  # handed to another member of the group
        self.positions: dict[TopicPartition, int] = {}
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topics: Sequence[str], *, listener: ConsumerRebalanceListener) -> None:
        self.topics, self.listener = list(topics), listener

    def assignment(self) -> set[TopicPartition]:
        return {tp for tp in self.broker.logs if tp.topic in self.topics and tp not in self.revoked}

    async def revoke(self) -> None:
        """Another member takes every partition: the listener hears it first, while they are still ours."""
        assert self.listener is not None
        taken = self.assignment()
        await self.listener.on_partitions_revoked(taken)
        self.revoked |= taken
        await self.listener.on_partitions_assigned(set())

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        while True:
            got = self._fetch(max_records)
            remaining = deadline - asyncio.get_running_loop().time()
            if got or remaining <= 0:
                return got
            self.broker.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.broker.arrived.wait(), remaining)

    def _fetch(self, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        got: dict[TopicPartition, list[ConsumerRecord]] = {}
        for tp in sorted(self.assignment()):
            start = self.positions.get(tp, self.broker.committed.get(tp, 0))
            records = self.broker.logs[tp][start:start + max_records - sum(map(len, got.values()))]
            if records:
                got[tp] = records
                self.positions[tp] = records[-1].offset + 1
        return got

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not set(offsets) <= self.assignment():
            raise CommitFailedError("the group rebalanced: these partitions are another member's now")
        self.broker.committed.update(offsets)
        self.broker.commits.append(dict(offsets))
