"""Versioned ClickHouse migrations: ``sinks/migrations/NNNN_name.sql``, applied in order, once.

Each file holds statements separated by ``;`` at the end of a line, with ``{db}`` for the database.
Every statement must run on ClickHouse 18.16 (the local server) and on current ClickHouse
(production); tests run all of them on both (chdb for the current dialect). What 18.16 allows, and
what current ClickHouse does differently, is in docs/clickhouse-dialect.md. Applied versions are
recorded in ``{db}.schema_migrations``; statements use IF NOT EXISTS so a half-applied file can be
re-run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from highland.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


# Data steps that SQL alone can't do within the server's memory, or that move rows between tables,
# run right after their migration's statements (and before its version is recorded, so a crash
# re-runs them; they are idempotent). Run with no worker writing, as every migration is.
def _fill_observations_by_series(client: Any, db: str, cluster: str | None) -> None:
    """Migration 0007: copy 0006's ``observations`` into ``observations_by_series`` and drop it; or,
    on an install that had events before 0006 ever ran, build the per-day series from the events."""
    from highland.catalog.loader import default_catalog
    from highland.sinks.cluster import local_name
    from highland.sinks.daily_series import OBSERVATION_COLUMNS, OBSERVATIONS, rebuild

    on_cluster = f" ON CLUSTER {cluster}" if cluster else ""

    def rows_of(table: str) -> str:  # on a cluster, a sharded table's rows are in <name>_local
        return f"{db}.{local_name(table) if cluster else table}"

    [(old_exists,)] = client.execute(f"EXISTS TABLE {db}.observations")
    if old_exists:
        # A copy cut short by a crash is started again from an empty table, never appended to.
        client.execute(f"TRUNCATE TABLE IF EXISTS {rows_of(OBSERVATIONS)}{on_cluster}")
        columns = ", ".join(OBSERVATION_COLUMNS)
        client.execute(f"INSERT INTO {db}.{OBSERVATIONS} ({columns}) SELECT {columns} FROM {db}.observations")
        # The Distributed table first, then its shards' tables.
        for table in dict.fromkeys([f"{db}.observations", rows_of("observations")]):
            client.execute(f"DROP TABLE IF EXISTS {table}{on_cluster}")
    [(events,)] = client.execute(f"SELECT count() FROM {db}.events")
    [(rows,)] = client.execute(f"SELECT count() FROM {db}.{OBSERVATIONS}")
    if events and not rows:
        rebuild(client, db, default_catalog().plan.timezone)


DATA_STEPS: dict[int, Callable[[Any, str, str | None], None]] = {7: _fill_observations_by_series}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path.stem, split_statements(path.read_text())))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


def split_statements(sql: str) -> tuple[str, ...]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return tuple(s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip())


def render(statement: str, database: str) -> str:
    return statement.replace("{db}", database)


def render_for(statement: str, database: str, cluster: str | None = None) -> list[str]:
    """What runs for ``statement``: itself on one server; its ON CLUSTER form (Replicated*/Distributed
    tables, see sinks/cluster.py) when ``HIGHLAND_CLICKHOUSE_CLUSTER`` names a cluster."""
    if not cluster:
        return [render(statement, database)]
    from highland.sinks.cluster import render_cluster

    return render_cluster(statement, database, cluster)


def migrate(settings: Settings, database: str | None = None) -> list[str]:
    """Apply the pending migrations to ``database`` (default: the configured one)."""
    from highland.sinks.client import connect

    db = database or settings.clickhouse_database
    client = connect(settings, database="default")
    try:
        if settings.clickhouse_cluster:
            from highland.sinks.cluster import bootstrap_statements

            for statement in bootstrap_statements(db, settings.clickhouse_cluster):
                client.execute(statement)
        else:
            client.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
            client.execute(
                f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
                "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
                "ENGINE = MergeTree ORDER BY version"
            )
        done = {v for (v,) in client.execute(f"SELECT version FROM {db}.schema_migrations")}
        applied = []
        for migration in load_migrations():
            if migration.version in done:
                continue
            for statement in migration.statements:
                for sql in render_for(statement, db, settings.clickhouse_cluster):
                    client.execute(sql)
            if migration.version in DATA_STEPS:
                DATA_STEPS[migration.version](client, db, settings.clickhouse_cluster)
            client.execute(f"INSERT INTO {db}.schema_migrations (version, name) VALUES",
                           [(migration.version, migration.name)])
            applied.append(migration.name)
        return applied
    finally:
        client.disconnect()
