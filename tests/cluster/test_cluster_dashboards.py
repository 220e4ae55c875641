"""Every panel's, variable's and alert rule's SQL as the read-only dashboards user, through the
Distributed tables of the cluster: tests/integration/test_dashboards_sql.py run again with its
``server`` engine replaced by the cluster (the same known feed, the same hand-computed answers, the
same comparison with current ClickHouse in chdb)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from highland.catalog.models import Catalog

from highland.settings import Settings
from highland.stack import cluster
from tests.integration.test_dashboards_sql import *  # noqa: F403  (the tests and fixtures, rerun here)
from tests.integration.test_dashboards_sql import Engine, served

pytestmark = [pytest.mark.integration, pytest.mark.cluster_ci]


@pytest.fixture(scope="module")
def server(cluster_stack: Settings, catalog: Catalog) -> Iterator[Engine]:
    """The cluster: a database of this module migrated ON CLUSTER, plan synced, feed inserted through
    the Distributed tables; panels run as the read-only user on the clients' entry server."""
    yield from served(cluster_stack, catalog, "clickhouse-18.16-cluster", on_cluster=f" ON CLUSTER {cluster.NAME}")


@pytest.fixture(scope="module")
def engine(server: Engine) -> Engine:
    """The tests of every panel run on the cluster only (current ClickHouse's runs are the single-node
    module's; test_both_engines_give_the_same_answers still compares the cluster with chdb)."""
    return server
