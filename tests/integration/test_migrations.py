"""Every migration runs on ClickHouse 18.16 (the local server) and on current ClickHouse (chdb), and a
database migrated by an earlier main upgrades in place."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.events import Accepted
from highland.sinks.client import connect
from highland.sinks.migrate import bootstrap_statements, load_migrations, migrate, schema_statements
from highland.sinks.migrations.operations import AddColumn, CreateTable, Migration
from highland.sinks.progress import query_actuals, reference_actuals
from highland.sinks.tables import TABLES, Column, Engine, Sharded, Table, auth_database
from highland.sinks.topology import SINGLE_NODE
from highland.sinks.writer import write_events

from highland.settings import Settings
from tests.integration.support import Positioned, as_batch

pytestmark = pytest.mark.integration


def test_migrations_apply_once_and_record_their_versions(isolated: Settings):
    assert migrate(isolated) == []  # the fixture already applied them all
    client = connect(isolated)
    versions = [v for (v,) in client.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in load_migrations()]
    assert client.execute("SELECT count() FROM events") == [(0,)]


def test_every_migration_statement_runs_on_current_clickhouse(chdb_session):
    for statement in bootstrap_statements("mig") + schema_statements("mig"):
        chdb_session.query(statement)
    assert "events" in chdb_session.query("SHOW TABLES FROM mig", "CSV").data()


FIXTURES = Path(__file__).parent.parent / "fixtures"


def tables_of(client: Any, db: str) -> dict[str, str]:
    """Every table and view of ``db`` as the server itself writes its CREATE (database name left out)."""
    rows = client.execute("SELECT name, create_table_query FROM system.tables WHERE database = %(db)s", {"db": db})
    return {name: query.replace(f" {db}.", " DB.") for name, query in rows}


def contents(client: Any, db: str, tables: dict[str, list[str]],
             migrated: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's rows; ``migrated``: read where it lives now (the token tables: in the auth database
    since 0010)."""
    def where(table: str) -> str:
        return TABLES[table].qualified(db) if migrated and table in TABLES else f"{db}.{table}"

    return {table: client.execute(f"SELECT {', '.join(columns)} FROM {where(table)} ORDER BY {', '.join(columns)}")
            for table, columns in tables.items()}


def insert_values(settings: Settings, sql: str) -> None:
    """An INSERT with its rows inline, as ClickHouse's own text format (``FORMAT Values``): over HTTP,
    where the server parses them (the native protocol expects the rows as blocks)."""
    request = urllib.request.Request(
        f"http://{settings.clickhouse_host}:{settings.clickhouse_http_port}/", data=sql.encode(),
        headers={"X-ClickHouse-User": settings.clickhouse_user,
                 "X-ClickHouse-Key": settings.clickhouse_password.get_secret_value()
                 if settings.clickhouse_password else ""})
    with urllib.request.urlopen(request, timeout=60) as answer:
        answer.read()


def restore_aa7b72c(client: Any, settings: Settings, db: str) -> None:
    """``db`` as aa7b72c's ``highland stack up`` left it, with the rows its own write paths stored:
    its DDL as it ran it (tests/fixtures/ddl_aa7b72c.json), its recorded versions, its rows (dumped
    from a database it migrated and filled: tests/fixtures/database_aa7b72c.json)."""
    ddl = json.loads((FIXTURES / "ddl_aa7b72c.json").read_text())
    dump = json.loads((FIXTURES / "database_aa7b72c.json").read_text())
    old = ddl["database"]
    client.execute(f"CREATE DATABASE {db}")
    for sql in ddl["migrate_single_node"]:
        if sql.startswith(("CREATE TABLE", "CREATE VIEW", "CREATE MATERIALIZED VIEW")):
            client.execute(sql.replace(f" {old}.", f" {db}."))
    # Recorded on an empty database, where 0007's data step was told 0006's table was absent; on the
    # server it found it, empty, and dropped it.
    client.execute(f"DROP TABLE {db}.observations")
    client.execute(f"INSERT INTO {db}.schema_migrations (version, name) VALUES",
                   [tuple(row) for row in dump["schema_migrations"]])
    rows = dump["tables"]
    stored = {n for (n,) in client.execute(f"SELECT name FROM system.tables WHERE database = '{db}' "
                                            "AND engine LIKE '%MergeTree'")}
    assert stored == {*rows, "schema_migrations"}  # the tables aa7b72c's database had
    insert_values(settings, f"INSERT INTO {db}.events VALUES {rows['events']}")
    for table, values in rows.items():
        if table.startswith("event_windows_"):  # filled by the events' views just now: as dumped instead
            client.execute(f"TRUNCATE TABLE {db}.{table}")
        if table != "events":
            insert_values(settings, f"INSERT INTO {db}.{table} VALUES {values}")


def test_a_database_migrated_by_aa7b72c_upgrades_in_place_and_keeps_its_data(isolated: Settings, unique: str):
    """What today's main (aa7b72c) left: recognised as migrated (only later migrations run), every row
    kept, the schema then the same as a fresh install's, and the writer keeps the numbers exact on it."""
    client = connect(isolated, database="default")
    db = f"t_{unique}_old"
    settings = isolated.model_copy(update={"clickhouse_database": db})
    try:
        restore_aa7b72c(client, settings, db)
        columns = {}
        for table, column in client.execute(
                "SELECT table, name FROM system.columns WHERE database = %(db)s AND default_kind != 'MATERIALIZED' "
                "AND table IN (SELECT name FROM system.tables WHERE database = %(db)s AND engine LIKE '%%MergeTree')",
                {"db": db}):  # in each table's column order (18.16's system.columns has no position)
            columns.setdefault(table, []).append(column)
        before = contents(client, db, columns)
        assert all(before.values()), [t for t, rows in before.items() if not rows]  # every table holds rows

        applied = migrate(settings)

        assert applied == [m.name for m in load_migrations() if m.version > 7]
        after = contents(client, db, columns, migrated=True)
        recorded = before.pop("schema_migrations")
        assert after.pop("schema_migrations")[:len(recorded)] == recorded  # later versions recorded after
        assert after == before
        assert tables_of(client, db) == tables_of(client, isolated.clickhouse_database)
        assert tables_of(client, auth_database(db)) == tables_of(client, auth_database(isolated.clickhouse_database))
        assert not {"agency_tokens", "agency_token_expiry", "agency_token_uses"} & set(tables_of(client, db))
        assert migrate(settings) == []
        _write_and_check_exact(client, db)
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {db}")
        client.execute(f"DROP DATABASE IF EXISTS {auth_database(db)}")


def _write_and_check_exact(client: Any, db: str) -> None:
    """A revision of a stored event and a new one, written by today's writer into the old rows."""
    catalog = default_catalog()
    [(agency, event_id, indicator, region, observed_at, unit)] = client.execute(
        f"SELECT agency, event_id, indicator, region, observed_at, unit FROM {db}.events "
        "ORDER BY agency, event_id, revision DESC LIMIT 1")
    moment = observed_at.replace(tzinfo=UTC)
    items = [Positioned(Accepted(agency, event_id, 7, indicator, region, 123.0, unit, 123.0, unit, moment), 1, 0),
             Positioned(Accepted(agency, "upgrade-new", 0, indicator, region, 5.0, unit, 5.0, unit, moment), 1, 1)]
    result = write_events(client, db, as_batch(items), datetime.now(UTC), catalog.plan.timezone)
    assert result.inserted == 2
    as_of = date(moment.year, 12, 31)
    assert query_actuals(client, db, catalog, as_of) == reference_actuals(client, db, catalog, as_of)


def test_a_column_added_by_a_later_migration_lands_in_its_place_with_its_default(isolated: Settings, chdb_session):
    """AddColumn on 18.16 and on current ClickHouse: the create leaves the column out, the ALTER adds
    it after its predecessor, old rows read its DEFAULT, and running the migration again changes nothing."""
    table = Table("added_later", (Column("k", "String"), Column("flag", "UInt8", default="7", since=2),
                                  Column("v", "Float64")), Engine("ReplacingMergeTree"), ("k",), Sharded(("k",)))
    first, second = Migration(1, "0001_t", (CreateTable(table),)), Migration(2, "0002_t", (AddColumn(table, "flag"),))
    client, db = connect(isolated), isolated.clickhouse_database
    first.apply(client, db, SINGLE_NODE)
    client.execute(f"INSERT INTO {db}.added_later (k, v) VALUES", [("a", 1.5)])
    for _ in range(2):
        second.apply(client, db, SINGLE_NODE)
    assert client.execute(f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'added_later'") == [
        ("k",), ("flag",), ("v",)]
    assert client.execute(f"SELECT k, flag, v FROM {db}.added_later") == [("a", 7, 1.5)]
    chdb_session.query("DROP TABLE IF EXISTS mig.added_later")
    for migration in (first, second):
        for sql in migration.statements("mig", SINGLE_NODE):
            chdb_session.query(sql)
    assert chdb_session.query("SELECT name FROM system.columns WHERE database = 'mig' AND table = 'added_later' "
                              "ORDER BY position", "CSV").data().split() == ['"k"', '"flag"', '"v"']
