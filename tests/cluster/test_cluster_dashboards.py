"""Every panel's, variable's and alert rule's SQL as the read-only dashboards user, through the
Distributed tables of the cluster: tests/integration/test_dashboards_sql.py run again with its
``server`` engine replaced by the cluster (the same known feed, the same hand-computed answers, the
same comparison with current ClickHouse in chdb)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from highland.catalog.models import Catalog
from highland.sinks.client import connect
from highland.sinks.migrate import migrate
from highland.sinks.plan_tables import sync_plan_tables

from highland.settings import Settings
from highland.stack import cluster
from tests.integration.test_dashboards_sql import *  # noqa: F403  (the tests and fixtures, rerun here)
from tests.integration.test_dashboards_sql import Engine, insert_known_feed

pytestmark = [pytest.mark.integration, pytest.mark.cluster_ci]


@pytest.fixture(scope="module")
def server(cluster_stack: Settings, catalog: Catalog) -> Iterator[Engine]:
    """The cluster: a database of this module migrated ON CLUSTER, plan synced, feed inserted through
    the Distributed tables; panels run as the read-only user on the clients' entry server."""
    settings = cluster_stack.model_copy(update={"clickhouse_database": f"t_dash_{uuid.uuid4().hex[:8]}"})
    migrate(settings)
    writer = connect(settings)
    insert_known_feed(writer, settings.clickhouse_database, catalog)
    sync_plan_tables(writer, settings.clickhouse_database, catalog)  # after the feed: baselines taken from it
    reader = connect(settings, reader=True)

    def run(sql: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
        rows, meta = reader.execute(sql, with_column_types=True)
        return meta, rows

    engine = Engine("clickhouse-18.16-cluster", settings.clickhouse_database, run)
    engine.writer = writer  # type: ignore[attr-defined]  # for the reference `progress()`
    yield engine
    connect(settings, database="default").execute(
        f"DROP DATABASE IF EXISTS {settings.clickhouse_database} ON CLUSTER {cluster.NAME}")


@pytest.fixture(scope="module")
def engine(server: Engine) -> Engine:
    """The tests of every panel run on the cluster only (current ClickHouse's runs are the single-node
    module's; test_both_engines_give_the_same_answers still compares the cluster with chdb)."""
    return server
