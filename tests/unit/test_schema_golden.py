"""The schema rendered from the table descriptions is the schema today's databases have.

tests/fixtures/ddl_aa7b72c.json holds every statement ``sinks.migrate.migrate`` ran at commit aa7b72c
(when migrations were SQL files and sinks/cluster.py rendered the cluster form from their text), on
an empty database, for one server and for a cluster; and what migration 0007's data step ran on an
install that 0006 had left with rows. The rendering from sinks/tables.py must run the same
statements, in the same order. Two differences are intended:
- ``schema_migrations`` was written on one line and is now rendered like every other table; current
  ClickHouse's own formatter shows it is the same statement;
- 0007's data step counts the rows already copied and empties the new table only if a copy was cut
  short: on a cluster, 18.16 forwards a TRUNCATE to the leader replica as ``default`` without a
  password (docs/clickhouse-dialect.md, "leader-forwarding"), so it is not sent needlessly;
- on a cluster, the Distributed ``observations_by_series`` names its columns, its MATERIALIZED ones
  as ALIAS: 18.16's Distributed INSERT sends MATERIALIZED columns, which the shards refuse
  (docs/clickhouse-dialect.md, "distributed-materialized"); ``AS <local>`` never worked there.
Migrations after 0007 only add statements at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import highland.sinks.client
import pytest
from highland.sinks.migrate import load_migrations, migrate
from highland.sinks.migrations import fill_observations_by_series
from highland.sinks.topology import Topology

from highland.settings import Settings

GOLDEN = json.loads((Path(__file__).parent.parent / "fixtures" / "ddl_aa7b72c.json").read_text())
DB, CLUSTER = GOLDEN["database"], GOLDEN["cluster"]
LAST_GOLDEN_VERSION = 7
MODES = {"single_node": None, "cluster": CLUSTER}


def intended_difference(sql: str) -> bool:
    return sql.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.schema_migrations") or distributed_with_computed(sql)


def distributed_with_computed(sql: str) -> bool:
    return sql.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.observations_by_series ON CLUSTER")


class RecordingClient:
    """Records what runs; answers ``EXISTS`` and ``count()`` with ``answer`` (0: an empty database)."""

    def __init__(self, answer: int = 0) -> None:
        self.executed: list[str] = []
        self.answer = answer

    def execute(self, sql: str, params: Any = None, **_: Any) -> list[Any]:
        self.executed.append(sql)
        return [(self.answer,)] if sql.startswith(("EXISTS", "SELECT count()")) else []

    def disconnect(self) -> None:
        pass


def format_query(session: Any, sql: str) -> str:
    literal = "'" + sql.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return session.query(f"SELECT formatQuery({literal})", "TabSeparatedRaw").data()


@pytest.mark.parametrize("mode", MODES)
def test_migrate_runs_what_aa7b72c_ran(mode: str, monkeypatch: pytest.MonkeyPatch, chdb_session: Any):
    client = RecordingClient()
    monkeypatch.setattr(highland.sinks.client, "connect", lambda *a, **k: client)
    migrate(Settings(clickhouse_cluster=MODES[mode], clickhouse_database=DB, clickhouse_reader_databases_file=None))
    golden = GOLDEN[f"migrate_{mode}"]
    ran, later = client.executed[:len(golden)], client.executed[len(golden):]
    assert len(ran) == len(golden)
    differences = [(old, new) for old, new in zip(golden, ran, strict=True) if old != new]
    assert differences, "the fixture no longer shows the intended difference: update the docstring"
    for old, new in differences:
        assert intended_difference(old) and intended_difference(new), f"\n{old}\n---\n{new}"
        if distributed_with_computed(new):
            assert " AS hl.observations_by_series_local\n" in old.replace(DB, "hl")
            assert " ALIAS cityHash64(" in new and " MATERIALIZED " not in new
            continue
        assert format_query(chdb_session, old) == format_query(chdb_session, new)
    # Whatever runs after 0007 belongs to later migrations only; their data steps only look (0010: no
    # token table in the served database to move on an empty one).
    newer = [m for m in load_migrations() if m.version > LAST_GOLDEN_VERSION]
    topology = Topology(MODES[mode])
    assert [sql for sql in later if not sql.startswith("EXISTS TABLE")] == [sql for m in newer for sql in
                     [*m.statements(DB, topology), f"INSERT INTO {DB}.schema_migrations (version, name) VALUES"]]


@pytest.mark.parametrize("mode", MODES)
def test_migration_0007_data_step_runs_what_aa7b72c_ran_on_an_install_0006_left(mode: str):
    client = RecordingClient(answer=1)
    fill_observations_by_series(client, DB, Topology(MODES[mode]))
    counted_first = f"SELECT count() FROM {DB}.observations_by_series"
    assert client.executed[1] == counted_first
    assert client.executed[:1] + client.executed[2:] == GOLDEN[f"data_step_0007_{mode}"]


def test_versions_and_names_are_those_aa7b72c_recorded():
    """A database migrated by aa7b72c records these; a renamed or renumbered one would run again."""
    recorded = [tuple(row) for row in json.loads(
        (Path(__file__).parent.parent / "fixtures" / "database_aa7b72c.json").read_text())["schema_migrations"]]
    assert [(m.version, m.name) for m in load_migrations()][:len(recorded)] == recorded
    assert len(recorded) == LAST_GOLDEN_VERSION


def test_no_migration_is_left_as_a_sql_file():
    """Migrations are Python now: a .sql file in sinks/migrations would be ignored, silently."""
    folder = Path(highland.sinks.migrate.__file__).parent / "migrations"
    assert not sorted(p.name for p in folder.glob("*.sql"))
