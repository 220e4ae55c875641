"""Guarantees of a real Apache Kafka broker that Highland's producers and workers rely on, and that the
Tansu broker did not give (ENVIRONMENT.md): an idempotent producer's retried batch is stored once, end
offsets count exactly what was written (and a consumer group's first join is quick). And one that
Kafka takes away unless the events topic is created for it: events observed years ago stay on the
topic until a worker reads them. Run only when the session's broker is Apache Kafka
(HIGHLAND_BROKER=kafka)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.transaction import InitProducerIdRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from highland.settings import Settings
from highland.topics import ensure_topics
from tests.integration.support import event
from tests.integration.test_worker import known_feed, push
from tests.support.partition import stored_values

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(Settings().broker != "kafka", reason="holds on Apache Kafka only (HIGHLAND_BROKER=kafka)"),
]

NO_PRODUCER = (-1, -1)  # producer id and epoch of a producer without idempotence
# The local broker checks retention every second, the first time a second after its start
# (highland/stack/kafka.py): a few seconds see several checks.
RETENTION_CHECKS_S = 4.0


def _batch(first: int, count: int, producer: tuple[int, int]) -> bytes:
    """One record batch carrying values v<first>..v<first+count-1>, stamped with the producer's id,
    epoch and the sequence number of its first record (how the broker recognises a retry)."""
    producer_id, epoch = producer
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=producer_id, producer_epoch=epoch,
        base_sequence=first if producer_id >= 0 else -1, batch_size=1 << 20,
    )
    for i in range(count):
        builder.append(i, timestamp=None, key=None, value=f"v{first + i}".encode(), headers=[])
    return bytes(builder.build())


async def _send_twice_then_next(settings: Settings, topic: str, idempotent: bool) -> list[tuple[int, int]]:
    """A batch sent twice -- the retry a producer makes when the first acknowledgement is lost -- then
    the next batch. Returns (error code, base offset) of each acknowledgement."""
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        producer = NO_PRODUCER
        if idempotent:
            deadline = time.monotonic() + 30
            while True:  # the first producer id waits for the transaction state log to load
                init = await client.send(node, InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=0))
                if init.error_code == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert init.error_code == 0, init
            producer = (init.producer_id, init.producer_epoch)
        first = _batch(0, 10, producer)
        acks = []
        for records in (first, first, _batch(10, 5, producer)):
            response = await client.send(node, ProduceRequest(
                transactional_id=None, required_acks=-1, timeout=10_000, topics=[(topic, [(0, records)])]))
            [(_, [partition])] = response.topics
            acks.append((partition[1], partition[2]))
        return acks
    finally:
        await client.close()


def _one_partition_topic(settings: Settings, name: str) -> str:
    ensure_topics(settings.model_copy(update={"topic_partitions": 1}), [name])
    return name


def test_an_idempotent_producers_retried_batch_is_stored_once(stack: Settings, unique: str):
    topic = _one_partition_topic(stack, f"k.{unique}.idempotent")
    acks = asyncio.run(_send_twice_then_next(stack, topic, idempotent=True))
    # The retry is acknowledged with the first copy's offset, and nothing is appended for it.
    assert acks == [(0, 0), (0, 0), (0, 10)]
    assert [v.decode() for v in asyncio.run(stored_values(stack, topic, 30))] == [f"v{i}" for i in range(15)]


def test_without_idempotence_the_same_retry_is_stored_twice(stack: Settings, unique: str):
    """The control: the check above would pass for nothing if the broker never duplicated a retry."""
    topic = _one_partition_topic(stack, f"k.{unique}.plain")
    acks = asyncio.run(_send_twice_then_next(stack, topic, idempotent=False))
    assert acks == [(0, 0), (0, 10), (0, 20)]
    values = [v.decode() for v in asyncio.run(stored_values(stack, topic, 30))]
    assert len(values) == 25 and values[:10] == values[10:20]


async def _produce_concurrently(settings: Settings, topic: str, producers: int, each: int) -> None:
    async def one(n: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            sends = [await producer.send(topic, f"{n}-{i}".encode(), key=str(i).encode()) for i in range(each)]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

    await asyncio.gather(*(one(n) for n in range(producers)))


async def _drain_and_commit(settings: Settings, topic: str, group: str, total: int) -> tuple[float, int]:
    """Join ``group``, read ``total`` records and commit; returns (seconds to the first assignment, read)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
    )
    started = time.monotonic()
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.01)
        joined = time.monotonic() - started
        read, deadline = 0, time.monotonic() + 60
        while read < total and time.monotonic() < deadline:
            read += sum(len(r) for r in (await consumer.getmany(timeout_ms=500)).values())
        await consumer.commit()
        return joined, read
    finally:
        await consumer.stop()


async def _offsets(settings: Settings, topic: str, group: str) -> tuple[dict[int, int], dict[int, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        return {tp.partition: ends[tp] for tp in tps}, committed  # type: ignore[return-value]
    finally:
        await consumer.stop()


def test_end_offsets_count_what_concurrent_producers_wrote_and_a_drained_group_has_no_lag(
        stack: Settings, unique: str):
    """On Tansu, end offsets were seen at 1 for every partition (s3) or below the committed offsets
    (memory, concurrent producers): Highland's tests count what was sent instead. Kafka's are exact."""
    topic, group = f"k.{unique}.offsets", f"k-{unique}"
    ensure_topics(stack, [topic])
    producers, each = 4, 5000
    asyncio.run(_produce_concurrently(stack, topic, producers, each))
    joined, read = asyncio.run(_drain_and_commit(stack, topic, group, producers * each))
    ends, committed = asyncio.run(_offsets(stack, topic, group))
    assert sum(ends.values()) == read == producers * each
    assert committed == ends  # lag 0 on every partition
    # group.initial.rebalance.delay.ms=0 and a real coordinator: the first join does not wait out half
    # the session timeout as on Tansu. A figure for docs/local-stack.md (-s), not an assertion: timings
    # on a loaded machine are no specification.
    print(f"\nfirst join of a new group: {joined:.2f} s")


async def _count_from_start(settings: Settings, topic: str) -> int:
    """Records a reader starting at the beginning of every partition finds there now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        read, deadline = 0, time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            read += sum(len(r) for r in (await consumer.getmany(timeout_ms=500)).values())
        return read
    finally:
        await consumer.stop()


def test_events_observed_years_ago_stay_on_the_topic_until_read(isolated: Settings):
    """An event's record timestamp is its observed_at (CONTRACT §1), and Kafka's time-based retention
    counts from record timestamps: a backfill of 2016-2019 was deleted at the broker's next retention
    check, before a worker had read it (the replay test's 90 s hang, docs/local-stack.md). The events
    topic Highland creates keeps no time-based retention."""
    feed = known_feed(seed=11, flows=50)
    push(isolated, feed)
    time.sleep(RETENTION_CHECKS_S)
    assert asyncio.run(_count_from_start(isolated, isolated.topic_events)) == len(feed)


def test_an_event_observed_up_to_a_day_ahead_is_accepted_by_the_broker_too(isolated: Settings):
    """Validation accepts observed_at up to a day in the future (CONTRACT §1); Kafka 4 refuses a
    record stamped more than an hour ahead unless the topic allows more, and the push failed."""
    ahead = datetime.now(UTC) + timedelta(hours=23)
    feed = [event("ahead-1", "cq_economy_it", "internet_plus_index", 4.6, "index", ahead.isoformat())]
    push(isolated, feed)  # fails unless every event is acknowledged
    assert asyncio.run(_count_from_start(isolated, isolated.topic_events)) == 1
