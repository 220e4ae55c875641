"""Every migration runs on ClickHouse 18.16 (the local server) and on current ClickHouse (chdb)."""

from __future__ import annotations

import pytest
from highland.sinks.client import connect
from highland.sinks.migrate import bootstrap_statements, load_migrations, migrate, schema_statements

from highland.settings import Settings

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
