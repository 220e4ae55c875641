"""Reading back what a real broker stored, record by record (integration tests)."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from highland.settings import Settings


async def stored_values(settings: Settings, topic: str, within_s: float) -> list[bytes]:
    """The values of partition 0 of ``topic``, in offset order, from its first record to the end
    offset it had when asked; what is not read within ``within_s`` is left out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        values: list[bytes] = []
        deadline = time.monotonic() + within_s
        while await consumer.position(tp) < end and time.monotonic() < deadline:
            for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                values += [r.value for r in records]
        return values
    finally:
        await consumer.stop()
