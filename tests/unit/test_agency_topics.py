"""Agencies' own Kafka topics (docs/agencies.md, "Your own Kafka client"): their names, what the worker
reads, and the worker's rule that the topic, not the payload, names the agency (CONTRACT §1.1). The
same rule on a real broker with SASL/SCRAM and ACLs: tests/integration/test_kafka_identity.py."""

from __future__ import annotations

import json

from aiokafka import ConsumerRecord
from highland.ingest.events import Reason
from highland.ingest.wire import agency_of_topic, agency_topic, events_topics
from highland.sinks.writer import BatchShares
from highland.streams.app import split

from highland.settings import Settings
from tests.unit.test_event_doors import CATALOG, GOOD, NOW

SETTINGS = Settings(topic_events="highland.events", topic_dlq="highland.events.dlq", agency_topics=True)


def test_each_agency_has_a_topic_of_its_own_named_after_it():
    assert agency_topic(SETTINGS, "cq_commerce") == "highland.events.in.cq_commerce"
    assert agency_of_topic(SETTINGS, "highland.events.in.cq_commerce") == "cq_commerce"
    for shared in ("highland.events", "highland.events.dlq", "highland.events.in.", "other.events.in.cq_commerce"):
        assert agency_of_topic(SETTINGS, shared) is None, shared


def test_the_worker_reads_the_agency_topics_only_when_asked():
    assert events_topics(SETTINGS, ["b", "a"]) == ["highland.events", "highland.events.in.a", "highland.events.in.b"]
    assert events_topics(SETTINGS.model_copy(update={"agency_topics": False}), ["a"]) == ["highland.events"]


def record(topic: str, offset: int, event: dict) -> ConsumerRecord:
    value = json.dumps(event, ensure_ascii=False).encode()
    return ConsumerRecord(topic, 0, offset, 0, 0, b"k", value, None, 1, len(value), ())


def owner(topic: str) -> str | None:
    return agency_of_topic(SETTINGS, topic)


def test_an_event_on_an_agencys_topic_in_another_agencys_name_is_forbidden():
    own, foreign = "highland.events.in.cq_commerce", "highland.events.in.cq_comms_admin"
    accepted = BatchShares(1)
    records = [record(own, 0, GOOD), record(foreign, 1, GOOD), record("highland.events", 2, GOOD)]
    letters = split(records, CATALOG, NOW, accepted, owner)
    assert [(letter.reason, letter.agency) for letter in letters] == [(Reason.FORBIDDEN_AGENCY, "cq_comms_admin")]
    assert "'cq_commerce'" in letters[0].detail and foreign in letters[0].detail
    assert sum(len(part) for part in accepted.columns()) == 2  # its own topic, and the shared one


def test_a_reject_on_an_agencys_topic_is_that_agencys_dead_letter_whatever_it_claims():
    letters = split([record("highland.events.in.cq_commerce", 0, {**GOOD, "agency": "cq_transport", "value": -1})],
                    CATALOG, NOW, BatchShares(1), owner)
    assert [letter.agency for letter in letters] == ["cq_commerce"]


def test_an_agencys_topic_keeps_its_events_as_the_shared_topic_does():
    """Its record timestamps are observed_at too: time retention would delete a backfill unread."""
    from highland.topics import topic_configs

    assert topic_configs(SETTINGS, "highland.events.in.cq_commerce")["retention.ms"] == "-1"
    assert "retention.ms" not in topic_configs(SETTINGS, "highland.events.dlq")
