"""`highland setup --print-sql`: what a database administrator reviews before the first `setup` -- the
configured database's DDL, on one server or ON CLUSTER as the settings say, each migration named and
its data steps said in comments -- connecting to nothing; the DDL runs, in order, on current
ClickHouse (chdb)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from highland.sinks.migrate import load_migrations
from highland.sinks.migrations.operations import RunData

UNREACHABLE = {"HIGHLAND_CLICKHOUSE_HOST": "127.0.0.1", "HIGHLAND_CLICKHOUSE_PORT": "1",
               "HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:1", "HIGHLAND_CLICKHOUSE_DATABASE": "review"}


def printed(**env: str) -> tuple[list[str], list[str]]:
    """(statements, comment lines) of the printed script."""
    done = subprocess.run([sys.executable, "-m", "highland", "setup", "--print-sql"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **UNREACHABLE, **env})
    assert done.returncode == 0, done.stderr
    comments = [line for line in done.stdout.splitlines() if line.startswith("--")]
    code = "\n".join(line for line in done.stdout.splitlines() if not line.startswith("--"))
    return [s.strip() for s in code.split(";\n") if s.strip()], comments


def names_in(session: Any, db: str) -> set[str]:
    listed = session.query(f"SELECT name FROM system.tables WHERE database = '{db}'", "TabSeparatedRaw")
    return set(listed.data().split())


def test_the_printed_ddl_runs_on_current_clickhouse_and_names_every_migration_and_data_step(chdb_session: Any):
    statements, comments = printed(HIGHLAND_CLICKHOUSE_CLUSTER="")
    for statement in statements:
        assert "ON CLUSTER" not in statement and not statement.endswith(";")
        chdb_session.query(statement)
    assert {"events", "daily_series", "observations_by_series", "alerts", "dead_letters",
            "schema_migrations"} <= names_in(chdb_session, "review")
    assert "agency_tokens" in names_in(chdb_session, "review_auth")
    assert [c for c in comments if not c.startswith("-- data step")] == [f"-- {m.name}" for m in load_migrations()]
    steps = [c for c in comments if c.startswith("-- data step")]
    data_steps = [op for m in load_migrations() for op in m.operations if isinstance(op, RunData)]
    assert [s.split(":")[0] for s in steps] == [f"-- data step {op.step.__name__}" for op in data_steps]


def test_on_a_cluster_every_statement_names_the_cluster():
    statements, _ = printed(HIGHLAND_CLICKHOUSE_CLUSTER="highland")
    assert all(" ON CLUSTER highland" in s for s in statements if s.startswith(("CREATE", "ALTER", "DROP")))
    assert any("Distributed(" in s for s in statements) and any("Replicated" in s for s in statements)
