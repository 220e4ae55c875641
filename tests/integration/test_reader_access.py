"""The read-only user (Grafana, the board) is refused the token tables on the local 18.16 server too
(issue 15, "a read side that can't be steered"; docs/security.md, "The local stack"): 18.16 has no
grants, so the token tables live in a database of their own (sinks/tables.py, ``auth_database``)
that the reader's ``allow_databases`` never names, while every database ``migrate`` serves is named."""

from __future__ import annotations

import pytest
from clickhouse_driver.errors import ServerException
from highland.sinks.client import connect
from highland.sinks.tokens import issue, list_tokens

from highland.settings import Settings

pytestmark = pytest.mark.integration

ACCESS_DENIED = 291  # 18.16: "Access denied to database ... for user ..."


def token_tables(settings: Settings) -> list[str]:
    """Every table of the server holding token hashes, as the writer sees them: found by column, so a
    token table anywhere (the served database included) is tried."""
    rows = connect(settings).execute(
        "SELECT DISTINCT database, table FROM system.columns WHERE name = 'token_sha256' "
        "AND database LIKE %(db)s", {"db": settings.clickhouse_database + "%"})
    return [f"{database}.{table}" for database, table in rows]


def test_the_reader_is_refused_every_token_table_and_reads_its_database(isolated: Settings):
    issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    tables = token_tables(isolated)
    assert len(tables) >= 3, tables  # issued, expiry, uses
    reader = connect(isolated, reader=True)
    for table in tables:
        with pytest.raises(ServerException) as refused:
            reader.execute(f"SELECT token_sha256 FROM {table}")
        assert refused.value.code == ACCESS_DENIED, (table, refused.value)
    # What the dashboards read stays readable; the token itself still works for the gateway's user.
    assert reader.execute("SELECT count() FROM events") == [(0,)]
    assert [t.agency for t in list_tokens(connect(isolated), isolated.clickhouse_database)] == ["cq_commerce"]


def test_a_database_migrated_later_is_readable_at_once(isolated: Settings, unique: str):
    from highland.sinks.migrate import migrate

    other = isolated.model_copy(update={"clickhouse_database": f"t_{unique}_second"})
    try:
        migrate(other)
        assert connect(other, reader=True).execute("SELECT count() FROM dead_letters") == [(0,)]
    finally:
        connect(other, database="default").execute(f"DROP DATABASE IF EXISTS {other.clickhouse_database}")
        connect(other, database="default").execute(f"DROP DATABASE IF EXISTS {other.clickhouse_database}_auth")


def test_lists_written_within_one_second_are_each_read_by_the_server(isolated: Settings, unique: str):
    """18.16 notices a changed users.d file by its modification time in whole seconds: a list written in
    the second of the one it last read was never read (seen in CI: a test database migrated right after
    another stayed closed to the reader). Every list written gets a second of its own."""
    from highland.sinks.reader_access import allow, wait_until_readable

    listing = isolated.clickhouse_reader_databases_file
    assert listing is not None
    admin = connect(isolated, database="default")
    names = [f"t_{unique}_a", f"t_{unique}_b"]
    try:
        seconds = []
        for name in names:  # back to back, well within one second
            admin.execute(f"CREATE DATABASE {name}")
            allow(isolated, admin, name)
            seconds.append(int(listing.stat().st_mtime))
        assert seconds[1] > seconds[0]
        for name in names:
            wait_until_readable(isolated, name)
    finally:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
