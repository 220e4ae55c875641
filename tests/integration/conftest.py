"""One real stack (the broker HIGHLAND_BROKER names + ClickHouse 18.16) for the whole test session.

Each test gets its own ClickHouse database and its own topics, so tests never see each other's
data. The stack is started by the same code as `highland stack up` and stopped at the end.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest
from highland.sinks.client import connect
from highland.sinks.migrate import migrate
from highland.sinks.tables import auth_database

from highland.settings import Settings
from highland.stack import kafka, local
from highland.topics import ensure_topics


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    settings = local.with_secrets(Settings())
    if settings.broker == "kafka" and kafka.service(settings).pid() is None:
        # Apache Kafka keeps its log across restarts; each session starts from an empty one (as Tansu's
        # memory storage does), so the per-test topics of earlier sessions do not pile up.
        shutil.rmtree(kafka.home(settings) / "data", ignore_errors=True)
    started = local.up(settings, as_cluster=False).started  # tests/cluster has a cluster stack of its own
    settings = local.with_secrets(settings)  # as local.env now says (a folder once used by a cluster stack)
    yield settings
    if started:  # leave a stack alone that someone else started
        local.down(settings)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def isolated(stack: Settings, unique: str) -> Iterator[Settings]:
    """Settings pointing at a fresh, migrated database and fresh topics of this test only."""
    settings = stack.model_copy(update={
        "clickhouse_database": f"t_{unique}",
        "topic_events": f"t.{unique}.events",
        "topic_dlq": f"t.{unique}.dlq",
        "topic_alerts": f"t.{unique}.alerts",
        "consumer_group": f"t-{unique}",
    })
    ensure_topics(settings)
    migrate(settings)
    yield settings
    admin = connect(settings, database="default")
    for database in (settings.clickhouse_database, auth_database(settings.clickhouse_database)):
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
