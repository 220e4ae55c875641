"""What only a cluster run issues has a grant in deploy/ too (issue 17: a test fails if any statement
the code issues lacks one). tests/integration/test_privileges.py records every statement of each
role on one server; on a cluster the writer and the self-check also wait for the replicas
(``SYSTEM SYNC REPLICA``, sent to every server: sinks/replicas.py) and name the shard-local tables.
So the writer's user's statements are recorded here on every server of the cluster, from each one's
``system.query_log``, and mapped with the same privilege map (tests/integration/privileges.py)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from highland.sinks import audit
from highland.sinks.client import connect
from highland.sinks.tables import auth_database
from highland.sinks.topology import Topology
from highland.sinks.writer import write_events

from highland.settings import Settings
from highland.stack import cluster
from tests.cluster.test_read_your_writes import TZ, events
from tests.integration import privileges

pytestmark = pytest.mark.integration

WRITER = "highland"  # the deploy/ user the worker (writer and self-check) runs as


def server_now(client: Any) -> datetime:
    [(now,)] = client.execute("SELECT now()")
    return now


def issued_on(settings: Settings, srv: cluster.Server, since: datetime, until: datetime) -> list[str]:
    """The statements the writer's user itself sent to ``srv`` in [since, until] (not the sub-queries
    an initiator sends on: those run as the initial user on the tables the mapping adds) that touch the
    test's databases or none (session tables)."""
    on_server = connect(cluster.server_settings(settings, srv))
    on_server.execute("SYSTEM FLUSH LOGS")
    rows = on_server.execute(
        "SELECT query FROM system.query_log WHERE user = %(user)s AND is_initial_query = 1 AND type IN (1, 3) "
        "AND event_time >= %(since)s AND event_time <= %(until)s",
        {"user": settings.clickhouse_user, "since": since, "until": until})
    ours = {settings.clickhouse_database, auth_database(settings.clickhouse_database)}
    return [query for (query,) in rows
            if not set(re.findall(r"\b(t_\w+)\.", query)) - ours and "system.query_log" not in query]


def test_every_statement_the_writer_issues_on_a_cluster_has_a_grant_in_deploy(on_cluster: Settings):
    """Two batches (the second revises the first: -1 rows) and a self-check with its repair, as the
    worker runs them on a cluster; every statement its user sent to any server maps to privileges
    deploy/ grants the writer's user -- the replica waits' ``SYSTEM SYNC REPLICA`` among them, sent to
    every server."""
    db, topology = on_cluster.clickhouse_database, Topology.of(on_cluster)
    client = connect(on_cluster)
    since = server_now(client)
    time.sleep(1.1)  # nothing this test did before (its database's migration) shares the window's second
    write_events(connect(on_cluster), db, events(0, range(20)), datetime.now(UTC), TZ, topology)
    write_events(connect(on_cluster), db, events(1, range(10)), datetime.now(UTC), TZ, topology)
    audit.check(connect(on_cluster), db, TZ, f"SELECT DISTINCT agency, event_id FROM {db}.events", {},
                repair=True, topology=topology)
    time.sleep(1.1)
    until = server_now(client)

    grants = privileges.granted(privileges.USERS_XML)[WRITER]
    missing, waits = [], {}
    for srv in cluster.servers(on_cluster):
        statements = issued_on(on_cluster, srv, since, until)
        waits[srv.name] = sum(s.startswith("SYSTEM SYNC REPLICA") for s in statements)
        for sql in statements:
            for need in privileges.needs(sql, db):
                for wanted in privileges.on_a_cluster(need):
                    if not privileges.covers(grants, wanted):
                        missing.append(f"{WRITER} needs {wanted[0]} ON {wanted[1]} for: {' '.join(sql.split())[:160]}")
    assert all(waits.values()), waits  # the waits were recorded, on every server
    assert not missing, "\n".join(sorted(set(missing)))
