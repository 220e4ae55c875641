"""Create Highland's Kafka topics (idempotent; works on any Kafka-protocol broker)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    NewTopic,
    ResourcePattern,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError, TopicAlreadyExistsError

from highland.catalog.loader import catalog_at
from highland.ingest import wire
from highland.ingest.events import FUTURE_TOLERANCE
from highland.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    """Highland's topics: with agency_topics on, each catalog agency's own topic as well."""
    agencies = (a.code for a in catalog_at(settings.catalog_dir).agencies) if settings.agency_topics else ()
    return [*wire.events_topics(settings, agencies), settings.topic_dlq, settings.topic_alerts]


def agency_principal(agency: str) -> str:
    """The Kafka (SCRAM) user name of an agency's own Kafka client."""
    return f"agency-{agency}"


def agency_acls(settings: Settings, agency: str) -> list[ACL]:
    """What an agency's principal may do: write (and describe) its own topic, nothing else -- not the
    shared events topic, not another agency's (docs/security.md, "Direct Kafka")."""
    topic = ResourcePattern(ResourceType.TOPIC, wire.agency_topic(settings, agency), ACLResourcePatternType.LITERAL)
    principal = f"User:{agency_principal(agency)}"
    return [ACL(principal, "*", op, ACLPermissionType.ALLOW, topic)
            for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE)]


def producer_acls(settings: Settings, principal: str) -> list[ACL]:
    """A trusted internal producer (the gateway, `highland push` run by operators): write the shared
    events topic and the dead-letter topic. Its agency checks happen before it writes (a token)."""
    return [ACL(f"User:{principal}", "*", op, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL))
            for topic in (settings.topic_events, settings.topic_dlq)
            for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE)]


def _allow(principal: str, resource: ResourcePattern, *operations: ACLOperation) -> list[ACL]:
    return [ACL(f"User:{principal}", "*", op, ACLPermissionType.ALLOW, resource) for op in operations]


def _topic(name: str, pattern: ACLResourcePatternType = ACLResourcePatternType.LITERAL) -> ResourcePattern:
    return ResourcePattern(ResourceType.TOPIC, name, pattern)


def worker_acls(settings: Settings, principal: str) -> list[ACL]:
    """What a worker does on Kafka, and nothing more (found by running one against a broker that
    refuses everything else: tests/integration/test_kafka_identity.py): read the shared events topic
    and every agency's own (a prefix: an agency added to the catalog later is read too), read and
    write the dead-letter topic (it sends dead letters and stores them from there), write alerts,
    and commit offsets in its two consumer groups (the events consumer's and Faust's). It cannot
    write an events topic, so it cannot place an event in any agency's name."""
    from highland.streams.app import FAUST_GROUP_SUFFIX

    read, write, describe = ACLOperation.READ, ACLOperation.WRITE, ACLOperation.DESCRIBE
    agency_topics = _topic(wire.agency_topic(settings, ""), ACLResourcePatternType.PREFIXED)
    return [
        *_allow(principal, _topic(settings.topic_events), read, describe),
        *_allow(principal, agency_topics, read, describe),
        *_allow(principal, _topic(settings.topic_dlq), read, write, describe),
        *_allow(principal, _topic(settings.topic_alerts), write, describe),
        *(acl for group in (settings.consumer_group, settings.consumer_group + FAUST_GROUP_SUFFIX)
          for acl in _allow(principal, ResourcePattern(ResourceType.GROUP, group, ACLResourcePatternType.LITERAL),
                            read, describe)),
    ]


def grant(settings: Settings, agencies: Sequence[str], producers: Sequence[str], workers: Sequence[str] = ()) -> int:
    """Create the ACLs of ``agencies``, of the trusted ``producers`` and of the ``workers`` (idempotent:
    Kafka keeps one copy of an ACL created twice); the number of ACLs asked for."""
    acls = [acl for code in agencies for acl in agency_acls(settings, code)]
    acls += [acl for principal in producers for acl in producer_acls(settings, principal)]
    acls += [acl for principal in workers for acl in worker_acls(settings, principal)]
    client = admin(settings)
    try:
        result = client.create_acls(acls)
    finally:
        client.close()
    if result["failed"]:
        raise RuntimeError(f"Kafka refused {len(result['failed'])} ACLs: {result['failed'][0]}")
    return len(acls)


def set_producer_quota(settings: Settings, principals: Sequence[str], bytes_per_s: int) -> None:
    """Kafka's client quota ``producer_byte_rate`` of each principal (the broker delays its answers to
    a producer past it, and says so in each answer's throttle time): one agency flooding its topic
    cannot take the brokers from the others (docs/security.md, "Direct Kafka"). Idempotent.

    kafka-python has the AlterClientQuotas request but no admin method for it (3.0): sent through the
    admin client's connection manager, as its own methods send theirs."""
    from kafka.protocol.admin import AlterClientQuotasRequest

    entry = AlterClientQuotasRequest.EntryData
    request = AlterClientQuotasRequest(validate_only=False, entries=[
        entry(entity=[entry.EntityData(entity_type="user", entity_name=principal)],
              ops=[entry.OpData(key="producer_byte_rate", value=float(bytes_per_s), remove=False)])
        for principal in principals])
    client = admin(settings)
    manager: Any = client._manager  # a private attribute: see above

    async def send() -> Any:
        return await manager.send(request)

    try:
        response = manager.run(send)
    finally:
        client.close()
    refused = [(e.entity[0].entity_name, e.error_message) for e in response.entries if e.error_code]
    if refused:
        raise RuntimeError(f"Kafka refused the quota of {len(refused)} principal(s): {refused[0]}")


def set_credential(settings: Settings, user: str, password: str) -> None:
    """Create or replace ``user``'s SCRAM credential: SCRAM-SHA-256 if that is what clients here use
    (kafka_sasl_mechanism), else SCRAM-SHA-512 (also when the admin itself logs in with PLAIN)."""
    mechanism = ScramMechanism.SCRAM_SHA_256 if settings.kafka_sasl_mechanism == "SCRAM-SHA-256" \
        else ScramMechanism.SCRAM_SHA_512
    client = admin(settings)
    try:
        errors = client.alter_user_scram_credentials([UserScramCredentialUpsertion(user, mechanism, password)])
    finally:
        client.close()
    if errors.get(user):
        raise RuntimeError(f"Kafka refused the credential of {user!r}: {errors[user]}")


# What the broker must accept ahead of its clock: what validation accepts, and an hour for the
# clocks of the validating host and the broker to differ.
TIMESTAMP_AHEAD = FUTURE_TOLERANCE + timedelta(hours=1)


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Per-topic settings Highland needs from any Kafka broker, for the events topics (the shared one
    and each agency's own), whose record timestamps are ``observed_at`` (CONTRACT §1):

    - no time-based retention: a broker's ``retention.ms`` counts from a record's timestamp, so a
      backfill of events observed years ago would be deleted at the broker's next retention check --
      before a worker has read it (docs/local-stack.md, "The replay hang"). Bound it by size
      (``retention.bytes``) instead;
    - timestamps up to a day ahead, as validation allows: Kafka 4 refuses a record stamped more than
      an hour ahead by default (``message.timestamp.after.max.ms``)."""
    if name != settings.topic_events and wire.agency_of_topic(settings, name) is None:
        return {}
    ahead_ms = int(TIMESTAMP_AHEAD.total_seconds() * 1000)
    return {"retention.ms": "-1", "message.timestamp.after.max.ms": str(ahead_ms)}


def admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="highland-admin",
        request_timeout_ms=15000, **settings.kafka_security(),
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
