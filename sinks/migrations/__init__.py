"""Every migration, in order: typed operations over the table descriptions of sinks/tables.py.

Versions and names are what ``schema_migrations`` records, so a database migrated before these were
written in Python (when they were ``NNNN_name.sql`` files) is recognised: never renumber or rename a
shipped migration. How to add one: docs/schema.md.
"""

from __future__ import annotations

from typing import Any

from highland.sinks import tables as t
from highland.sinks.migrations.operations import (
    CreateAuthDatabase,
    CreateMaterializedView,
    CreateTable,
    CreateView,
    DropTable,
    Migration,
    RecreateDistributed,
    RunData,
)
from highland.sinks.topology import Topology


def fill_observations_by_series(client: Any, db: str, topology: Topology) -> None:
    """Migration 0007's data step: copy 0006's ``observations`` into ``observations_by_series`` and
    drop it; or, on an install that had events before 0006 ever ran, build the per-day series from
    the events (their memory use is what SQL alone cannot bound: ``rebuild`` goes in chunks)."""
    from highland.catalog.loader import default_catalog
    from highland.sinks.daily_series import rebuild

    new, old = t.OBSERVATIONS_BY_SERIES, t.OBSERVATIONS_0006
    [(old_exists,)] = client.execute(f"EXISTS TABLE {db}.{old.name}")
    if old_exists:
        # A copy cut short by a crash is started again from an empty table, never appended to. Only
        # then: on a cluster, 18.16 forwards a TRUNCATE to the leader replica as `default` without a
        # password, which the local stack refuses (docs/clickhouse-dialect.md, "leader-forwarding").
        [(copied,)] = client.execute(f"SELECT count() FROM {db}.{new.name}")
        if copied:
            client.execute(f"TRUNCATE TABLE IF EXISTS {topology.mutable(db, new.name)}")
        columns = ", ".join(old.names)
        client.execute(f"INSERT INTO {db}.{new.name} ({columns}) SELECT {columns} FROM {db}.{old.name}")
        DropTable(old).apply(client, db, topology, 7)
    [(events,)] = client.execute(f"SELECT count() FROM {db}.{t.EVENTS.name}")
    [(rows,)] = client.execute(f"SELECT count() FROM {db}.{new.name}")
    if events and not rows:
        rebuild(client, db, default_catalog().plan.timezone)


TOKEN_TABLES = (t.AGENCY_TOKENS, t.AGENCY_TOKEN_EXPIRY, t.AGENCY_TOKEN_USES)


def move_token_tables(client: Any, db: str, topology: Topology) -> None:
    """Migration 0010's data step: each token table's rows copied from the served database into the
    auth database, then the old table dropped. A copy cut short by a crash is made again whole: a
    token's rows are read by argMax, min and max (sinks/tokens.py), so a row stored twice changes
    nothing, while a copy skipped because some rows were there would lose the rest."""
    for table in TOKEN_TABLES:
        old = table.in_served_database()
        [(exists,)] = client.execute(f"EXISTS TABLE {old.qualified(db)}")
        if exists:
            columns = ", ".join(table.names)
            client.execute(f"INSERT INTO {table.qualified(db)} ({columns}) SELECT {columns} FROM {old.qualified(db)}")
            DropTable(old).apply(client, db, topology, 10)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "0001_events", (CreateTable(t.EVENTS),)),
    Migration(2, "0002_dead_letters_tokens", (
        CreateTable(t.DEAD_LETTERS), CreateTable(t.AGENCY_TOKENS.in_served_database()))),
    Migration(3, "0003_live_windows", (
        CreateTable(t.EVENT_WINDOWS_1M), CreateMaterializedView(t.EVENT_WINDOWS_1M_MV),
        CreateTable(t.EVENT_WINDOWS_1H), CreateMaterializedView(t.EVENT_WINDOWS_1H_MV))),
    Migration(4, "0004_alerts", (CreateTable(t.ALERTS),)),
    Migration(5, "0005_plan_tables", (
        CreateTable(t.PLAN_VERSIONS), CreateTable(t.PLAN_INDICATORS), CreateTable(t.PLAN_TRAJECTORY),
        CreateTable(t.PLAN_DISTRICTS), CreateView(t.PLAN_INDICATORS_CURRENT), CreateView(t.PLAN_TRAJECTORY_CURRENT),
        CreateView(t.PLAN_DISTRICTS_CURRENT))),
    Migration(6, "0006_daily_series", (CreateTable(t.OBSERVATIONS_0006), CreateTable(t.DAILY_SERIES))),
    # The observations again, ordered by numbers; the rows of 0006's table moved over, which is dropped.
    Migration(7, "0007_observations_by_series", (
        CreateTable(t.OBSERVATIONS_BY_SERIES), RunData(fill_observations_by_series))),
    Migration(8, "0008_token_lifecycle", (
        CreateTable(t.AGENCY_TOKEN_EXPIRY.in_served_database()),
        CreateTable(t.AGENCY_TOKEN_USES.in_served_database()))),
    # On a cluster, the Distributed observations_by_series with its MATERIALIZED columns as ALIAS: 18.16's
    # Distributed INSERT sends MATERIALIZED columns, which the shards refuse (docs/clickhouse-dialect.md,
    # "distributed-materialized"); databases created before c377acb have the form that cannot be written.
    Migration(9, "0009_distributed_computed_columns", (RecreateDistributed(t.OBSERVATIONS_BY_SERIES),)),
    # The token tables in a database of their own, which the read side is never allowed: on 18.16 a
    # database is the only thing a user can be kept from (docs/security.md, "The local stack").
    Migration(10, "0010_token_database", (
        CreateAuthDatabase(), *(CreateTable(table) for table in TOKEN_TABLES), RunData(move_token_tables))),
)
