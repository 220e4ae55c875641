"""Create Highland's Kafka topics (idempotent; works on any Kafka-protocol broker)."""

from __future__ import annotations

import contextlib
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from highland.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    return [settings.topic_events, settings.topic_dlq, settings.topic_alerts]


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Per-topic settings Highland needs from any Kafka broker.

    The events topic keeps no time-based retention: its record timestamps are ``observed_at``
    (CONTRACT §1), and a broker's ``retention.ms`` counts from a record's timestamp, so a backfill of
    events observed years ago would be deleted at the broker's next retention check -- before a worker
    has read it (docs/local-stack.md, "The replay hang"). Bound it by size (``retention.bytes``) instead."""
    return {"retention.ms": "-1"} if name == settings.topic_events else {}


def admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="highland-admin",
        request_timeout_ms=15000,
    )


def ensure_topics(settings: Settings, names: list[str] | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics; return the names created. Retries while the broker warms up."""
    wanted = names or topic_names(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = admin(settings)
            try:
                existing = set(client.list_topics())
                missing = [n for n in wanted if n not in existing]
                for name in missing:
                    # Another worker or `stack up` may have created it meanwhile.
                    with contextlib.suppress(TopicAlreadyExistsError):
                        client.create_topics([NewTopic(name, settings.topic_partitions,
                                                       settings.topic_replication,
                                                       topic_configs=topic_configs(settings, name))])
                return missing
            finally:
                client.close()
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
