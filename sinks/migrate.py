"""Versioned ClickHouse migrations (sinks/migrations), applied in order, once.

Every statement must run on ClickHouse 18.16 (the local server) and on current ClickHouse
(production); tests run all of them on both (chdb for the current dialect). What 18.16 allows, and
what current ClickHouse does differently, is in docs/clickhouse-dialect.md. Applied versions are
recorded in ``{db}.schema_migrations``; statements use IF NOT EXISTS and data steps are idempotent,
so a half-applied migration can be re-run. With ``HIGHLAND_CLICKHOUSE_CLUSTER`` set, every operation
is rendered ON CLUSTER with Replicated*/Distributed tables (sinks/cluster.py).
"""

from __future__ import annotations

from highland.sinks.migrations import MIGRATIONS
from highland.sinks.migrations.operations import CreateTable, Migration
from highland.sinks.tables import SCHEMA_MIGRATIONS
from highland.sinks.topology import SINGLE_NODE, Topology

from highland.settings import Settings


def load_migrations() -> list[Migration]:
    versions = [m.version for m in MIGRATIONS]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must increase: {versions}")
    return list(MIGRATIONS)


def bootstrap_statements(db: str, topology: Topology = SINGLE_NODE) -> list[str]:
    """What runs before the migrations: the database and its schema_migrations table."""
    if topology.cluster:
        from highland.sinks.cluster import bootstrap_statements as on_cluster

        return on_cluster(db, topology.cluster)
    return [f"CREATE DATABASE IF NOT EXISTS {db}", *CreateTable(SCHEMA_MIGRATIONS).statements(db, topology, 0)]


def schema_statements(db: str, topology: Topology = SINGLE_NODE) -> list[str]:
    """Every DDL statement of every migration, in order (data steps left out): the whole schema."""
    return [sql for m in load_migrations() for sql in m.statements(db, topology)]


def review_script(db: str, topology: Topology = SINGLE_NODE) -> str:
    """What `highland setup` runs on an empty database, for a database administrator to read: each
    migration's DDL, ``;``-terminated, under its name, and its data steps named in comments (they run
    code: on an empty database they only drop the tables an earlier version used). Not a script to
    apply by hand: `setup` records each migration and runs the data steps in between."""
    from highland.sinks.migrations.operations import RunData

    lines = [f"{sql.strip()};\n" for sql in bootstrap_statements(db, topology)]
    for migration in load_migrations():
        lines.append(f"-- {migration.name}")
        for op in migration.operations:
            if isinstance(op, RunData):
                summary = (op.step.__doc__ or "").strip().split(".")[0].replace("\n", " ")
                lines.append(f"-- data step {op.step.__name__}: {' '.join(summary.split())}\n")
            lines.extend(f"{sql.strip()};\n" for sql in op.statements(db, topology, migration.version))
    return "\n".join(lines)


def migrate(settings: Settings, database: str | None = None) -> list[str]:
    """Apply the pending migrations to ``database`` (default: the configured one). On the local stack,
    the read-only user is allowed the database first, and it can read it on return (sinks/reader_access.py)."""
    from highland.sinks.client import connect
    from highland.sinks.reader_access import allow, wait_until_readable

    db = database or settings.clickhouse_database
    topology = Topology.of(settings)
    client = connect(settings, database="default")
    try:
        listed = allow(settings, client, db)
        for statement in bootstrap_statements(db, topology):
            client.execute(statement)
        done = {v for (v,) in client.execute(f"SELECT version FROM {db}.{SCHEMA_MIGRATIONS.name}")}
        applied = []
        for migration in load_migrations():
            if migration.version in done:
                continue
            migration.apply(client, db, topology)
            client.execute(f"INSERT INTO {db}.{SCHEMA_MIGRATIONS.name} (version, name) VALUES",
                           [(migration.version, migration.name)])
            applied.append(migration.name)
        if listed:
            wait_until_readable(settings, db)
        return applied
    finally:
        client.disconnect()
