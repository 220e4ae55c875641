"""Sending events and dead letters to Kafka with kafka-python.

- key ``indicator|region`` (one series, one partition, in order), timestamp = ``observed_at``,
  header ``schema=metric-event/1``;
- ``acks=all`` and idempotent retries (``producer_idempotence``), so a retry never writes twice;
- bounded waits everywhere: a broker that is down gives ``BrokerUnavailable`` within
  ``producer_max_block_s``, never a hang.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from highland.ingest import wire
from highland.ingest.dead_letters import DeadLetter
from highland.ingest.events import Accepted
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from highland.settings import Settings


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached or did not acknowledge in time."""


@dataclass
class DeliveryReport:
    """Sends and failures (failures are counted from the producer's I/O thread). Only failures
    get a callback: after ``flush()`` every future is resolved, so delivered = sent - failed."""

    sent: int = 0
    failed: int = 0
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def delivered(self) -> int:
        return self.sent - self.failed

    def error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"


class EventProducer:
    def __init__(self, settings: Settings, *, client_id: str = "highland-push") -> None:
        self.settings = settings
        max_block_ms = int(settings.producer_max_block_s * 1000)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=settings.bootstrap_servers,
                client_id=client_id,
                acks="all",
                enable_idempotence=settings.producer_idempotence,
                linger_ms=settings.producer_linger_ms,
                batch_size=512 * 1024,
                compression_type=settings.producer_compression,
                max_block_ms=max_block_ms,
                request_timeout_ms=max_block_ms,
                delivery_timeout_ms=max_block_ms * 3,
                bootstrap_timeout_ms=max_block_ms,
                **settings.kafka_security(),
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {settings.kafka_bootstrap} within "
                f"{settings.producer_max_block_s:.0f} s ({type(exc).__name__})") from exc
        self.events = DeliveryReport()
        self.dead_letters = DeliveryReport()

    def send_event(self, event: Accepted, payload: bytes) -> None:
        """Send the event's original JSON (validated once, serialized once) under its key."""
        self._send(wire.event_record(self.settings, event, payload), self.events)

    def send_dead_letter(self, record: DeadLetter) -> None:
        self._send(wire.dead_letter_record(self.settings, record), self.dead_letters)

    def _send(self, record: wire.Record, report: DeliveryReport) -> None:
        try:
            future = self._producer.send(record.topic, key=record.key, value=record.value,
                                         timestamp_ms=record.timestamp_ms, headers=record.headers)
        except KafkaTimeoutError as exc:
            raise BrokerUnavailable(f"the broker did not take the message within "
                                    f"{self.settings.producer_max_block_s:.0f} s") from exc
        report.sent += 1
        future.add_errback(report.error)

    def flush(self) -> None:
        """Wait for every send to be acknowledged or failed, within a bounded time."""
        try:
            self._producer.flush(timeout=self.settings.producer_max_block_s * 3)
        except KafkaError as exc:
            raise BrokerUnavailable(f"not every message was acknowledged: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=self.settings.producer_max_block_s)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
