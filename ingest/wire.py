"""The wire format, once: what each kind of record is on Kafka (topic, key, value, timestamp, headers).

Every producer -- `highland push` (kafka-python), the gateway (aiokafka) and the worker (Faust) --
maps what it sends through these functions and only hands the result to its client, so the
contract's key, timestamp and ``schema`` header (CONTRACT §1) are written in one place:
- a metric event: topic ``highland.events``, key ``indicator|region``, timestamp = ``observed_at``
  in epoch ms, header ``schema=metric-event/1``, value the event's JSON as the agency sent it;
- a dead letter: topic ``highland.events.dlq``, key the agency (``-`` if unknown), the broker's
  timestamp, header ``schema=dead-letter/1``, value the dead-letter JSON;
- an alert: topic ``highland.alerts``, key the indicator, the broker's timestamp, header
  ``schema=alert/1``, value the alert as strict JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from highland.catalog.domain import Alert
from highland.ingest.dead_letters import DLQ_SCHEMA_HEADER, DeadLetter
from highland.ingest.events import SCHEMA_HEADER, Accepted

from highland import strict_json
from highland.settings import Settings

ALERT_SCHEMA_HEADER = ("schema", b"alert/1")
# Agencies with Kafka clients of their own write <topic_events>.in.<agency> (docs/agencies.md,
# "Your own Kafka client"): only that agency's principal may write it (Kafka ACLs, docs/security.md),
# so the topic names the agency a record comes from, whatever its payload says.
AGENCY_TOPIC_INFIX = ".in."


def agency_topic(settings: Settings, agency: str) -> str:
    """The topic only ``agency``'s Kafka principal may write."""
    return f"{settings.topic_events}{AGENCY_TOPIC_INFIX}{agency}"


def agency_of_topic(settings: Settings, topic: str) -> str | None:
    """The agency whose topic ``topic`` is; None for the shared events topic (trusted producers only)."""
    prefix = settings.topic_events + AGENCY_TOPIC_INFIX
    if not topic.startswith(prefix):
        return None
    return topic[len(prefix):] or None


def events_topics(settings: Settings, agencies: Iterable[str]) -> list[str]:
    """What the worker reads: the shared events topic, and each agency's topic when agency_topics is on."""
    own = [agency_topic(settings, code) for code in sorted(agencies)] if settings.agency_topics else []
    return [settings.topic_events, *own]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, as every client takes it apart."""

    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int | None
    headers: list[tuple[str, bytes]]

    @property
    def timestamp_s(self) -> float | None:
        """The timestamp in seconds, as Faust's producer takes it."""
        return None if self.timestamp_ms is None else self.timestamp_ms / 1000


def event_record(settings: Settings, event: Accepted, payload: bytes) -> Record:
    """The event's original JSON (validated once, serialized once) under the contract's key."""
    return Record(settings.topic_events, event.key, payload, event.timestamp_ms, [SCHEMA_HEADER])


def dead_letter_record(settings: Settings, letter: DeadLetter) -> Record:
    return Record(settings.topic_dlq, letter.key, letter.to_bytes(), None, [DLQ_SCHEMA_HEADER])


def alert_json(alert: Alert) -> bytes:
    return strict_json.dumps(asdict(alert), default=str, ensure_ascii=False).encode()


def alert_record(settings: Settings, alert: Alert) -> Record:
    return Record(settings.topic_alerts, alert.indicator.encode(), alert_json(alert), None, [ALERT_SCHEMA_HEADER])


async def send_with_faust(producer: Any, record: Record) -> Any:
    """Send ``record`` with a Faust producer (positional: topic, key, value, partition, timestamp in
    seconds, headers); returns the delivery future."""
    return await producer.send(record.topic, record.key, record.value, None, record.timestamp_s, record.headers)
