"""Cluster mode (sinks/cluster.py): every table description rendered ON CLUSTER with
Replicated*/Distributed tables, checked three ways:

1. structurally, against the descriptions they come from (sinks/tables.py) and the single-server DDL;
2. for syntax on current ClickHouse (chdb 26.x): ``formatQuery`` parses a statement without executing
   it, so ON CLUSTER and Replicated engines are accepted although chdb has neither a cluster nor Keeper;
3. for meaning, on a one-node image of the cluster's layout in chdb, rendered from the same
   descriptions (each sharded table's rows in its local table under its plain engine, the original
   name a Buffer table that passes every insert straight to it, as one shard's Distributed table
   would; materialized views on the local tables), by running the project's own writer, self-check
   and progress queries on it by the original table names.

No regular expression reads SQL here: what a statement must hold comes from the descriptions, and
what ClickHouse made of it from its own parser (``formatQuery``, ``EXPLAIN AST``) and system tables.

What today's rendering must equal, statement for statement, is tests/unit/test_schema_golden.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.catalog.models import Kind
from highland.sinks import tables
from highland.sinks.cluster import (
    LAYOUTS,
    add_column,
    bootstrap_statements,
    create_materialized_view,
    create_table,
    local_name,
)
from highland.sinks.daily_series import rebuild
from highland.sinks.migrate import load_migrations, migrate, schema_statements
from highland.sinks.migrations import fill_observations_by_series
from highland.sinks.migrations.operations import CreateMaterializedView, CreateTable, CreateView, RecreateDistributed
from highland.sinks.progress import latest_events_sql, query_actuals, reference_actuals
from highland.sinks.tables import Column, Engine, Everywhere, MaterializedView, Sharded, Table
from highland.sinks.topology import Topology

from highland.settings import Settings

CLUSTER = "highland_cluster"
DB = "hl"
ON_CLUSTER = Topology(CLUSTER)

OPERATIONS = [(m, op) for m in load_migrations() for op in m.operations]
OPERATION_IDS = [f"{m.name}:{i}" for i, (m, _) in enumerate(OPERATIONS)]
CREATED = [op.table for _, op in OPERATIONS if isinstance(op, CreateTable)]


def all_cluster_statements(database: str = DB) -> list[str]:
    return bootstrap_statements(database, CLUSTER) + schema_statements(database, Topology(CLUSTER))


def squash(sql: str) -> str:
    return " ".join(sql.split())


# --- 1. structure -----------------------------------------------------------------------------------

def test_every_table_a_migration_creates_is_described_with_a_layout():
    assert {t.name for t in CREATED} | {"schema_migrations"} == set(tables.TABLES) == set(LAYOUTS)


@pytest.mark.parametrize(("migration", "op"), OPERATIONS, ids=OPERATION_IDS)
def test_each_operation_is_rendered_for_the_cluster(migration: Any, op: Any):
    out = op.statements(DB, ON_CLUSTER, migration.version)
    assert all(f" ON CLUSTER {CLUSTER}" in s for s in out)
    single = op.statements(DB, Topology(), migration.version)
    assert not any("ON CLUSTER" in s or "Replicated" in s or "Distributed" in s for s in single)
    if isinstance(op, CreateTable):
        _check_table(op.table, out, single)
    elif isinstance(op, CreateMaterializedView):
        _check_materialized_view(op.view, out)
    elif isinstance(op, CreateView):
        [view] = single
        assert out == [view.replace(f"{DB}.{op.view.name} AS", f"{DB}.{op.view.name} ON CLUSTER {CLUSTER} AS", 1)]


def _check_table(table: Table, out: list[str], single: list[str]) -> None:
    layout = LAYOUTS[table.name]
    data = out[0]
    [plain] = single
    assert table.body() in data and table.body() in plain  # the columns, as described
    for clause in table.clauses():  # ORDER BY / PARTITION BY / SETTINGS kept
        assert f"\n{clause}" in data and f"\n{clause}" in plain
    db = table.database(DB)  # the token tables: the auth database
    extra = "".join(f", {a}" for a in table.engine.arguments())
    if isinstance(layout, Everywhere):
        assert len(out) == 1
        assert data.startswith(f"CREATE TABLE IF NOT EXISTS {db}.{table.name} ON CLUSTER {CLUSTER}\n")
        path = f"/clickhouse/tables/all/{db}/{table.name}"
        assert f"Replicated{table.engine.name}('{path}', '{{replica}}'{extra})" in data
        return
    local = local_name(table.name)
    assert len(out) == 2
    assert data.startswith(f"CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {CLUSTER}\n")
    assert f"Replicated{table.engine.name}('/clickhouse/tables/{{shard}}/{db}/{local}', '{{replica}}'{extra})" in data
    # The local table's shape; with MATERIALIZED columns, the columns with those as ALIAS (18.16's
    # Distributed INSERT would send them: docs/clickhouse-dialect.md, "distributed-materialized").
    computed = [c for c in table.columns if c.materialized is not None]
    shape = (f" AS {db}.{local}" if not computed else
             "\n" + table.body().replace(" MATERIALIZED ", " ALIAS "))
    assert out[1] == (f"CREATE TABLE IF NOT EXISTS {db}.{table.name} ON CLUSTER {CLUSTER}{shape}\n"
                      f"ENGINE = Distributed({CLUSTER}, {db}, {local}, {layout.key})")


def _check_materialized_view(view: MaterializedView, out: list[str]) -> None:
    [sql] = out
    assert sql.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {DB}.{view.name} ON CLUSTER {CLUSTER} "
                          f"TO {DB}.{local_name(view.target.name)} AS\n")
    assert f"FROM {DB}.{local_name(view.source.name)}\n" in sql
    assert f"{DB}.{view.source.name}\n" not in sql  # never the Distributed name
    # The target's rows are placed by the source's key, so its Distributed key must not claim one.
    assert LAYOUTS[view.target.name] == Sharded()


def test_events_are_sharded_by_observation_so_revisions_meet_on_one_shard():
    assert LAYOUTS["events"] == Sharded(("agency", "event_id"))
    assert LAYOUTS["events"].key == "cityHash64(agency, event_id)"
    # ... and that is the key of the deduplication every actual() query groups by.
    assert "GROUP BY agency, event_id" in squash(latest_events_sql(DB))


def test_sharding_keys_of_replacing_tables_are_within_their_order_by():
    """Rows a ReplacingMergeTree replaces (same ORDER BY key) must sit on the same shard."""
    replacing = [t for t in tables.TABLES.values() if t.engine.name == "ReplacingMergeTree"]
    assert replacing
    for table in replacing:
        if isinstance(table.layout, Sharded):
            assert table.layout.columns and set(table.layout.columns) <= set(table.order_by), table.name


def test_bootstrap_creates_the_database_and_a_replicated_schema_migrations_table():
    first, second = bootstrap_statements(DB, CLUSTER)
    assert first == f"CREATE DATABASE IF NOT EXISTS {DB} ON CLUSTER {CLUSTER}"
    assert second.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.schema_migrations ON CLUSTER {CLUSTER}\n")
    assert f"ReplicatedMergeTree('/clickhouse/tables/all/{DB}/schema_migrations', '{{replica}}')" in second


def test_a_column_added_later_is_left_out_of_the_create_and_added_in_its_place(chdb_session: Any):
    table = Table("t", (Column("a", "String"), Column("b", "UInt8", default="1", since=9), Column("c", "String")),
                  Engine("ReplacingMergeTree"), ("a",), Sharded(("a",)))
    assert "b UInt8" not in create_table(table, DB, CLUSTER, version=8)[0]
    assert "    b UInt8 DEFAULT 1,\n" in create_table(table, DB, CLUSTER, version=9)[0]
    assert add_column(table, table.column("b"), DB, CLUSTER) == [
        ("t_local", f"ALTER TABLE {DB}.t_local ON CLUSTER {CLUSTER} ADD COLUMN b UInt8 DEFAULT 1 AFTER a"),
        ("t", f"ALTER TABLE {DB}.t ON CLUSTER {CLUSTER} ADD COLUMN b UInt8 DEFAULT 1 AFTER a"),
    ]
    everywhere = Table("e", table.columns, table.engine, ("a",), Everywhere())
    assert add_column(everywhere, table.column("b"), DB, CLUSTER) == [
        ("e", f"ALTER TABLE {DB}.e ON CLUSTER {CLUSTER} ADD COLUMN b UInt8 DEFAULT 1 AFTER a")]
    for _, sql in add_column(table, table.column("b"), DB, CLUSTER):
        assert " ON CLUSTER " in format_query(chdb_session, sql)
    computed = Table("m", (*table.columns, Column("h", "UInt64", materialized="cityHash64(a)", since=9)),
                     table.engine, ("a",), Sharded(("a",)))
    with pytest.raises(ValueError, match="ALIAS"):
        add_column(computed, computed.column("h"), DB, CLUSTER)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Engine("Log"), "no Replicated"),
    (lambda: Engine("SummingMergeTree", version="v"), "no version column"),
    (lambda: Table("x", (Column("a", "String"),), Engine("ReplacingMergeTree", "v"), ("a",), Everywhere()),
     "version column"),
    (lambda: Table("x", (Column("a", "String"),), Engine("MergeTree"), ("a",), Sharded(("a", "b"))),
     "unknown columns"),
    (lambda: Table("x", (Column("a", "String"), Column("a", "UInt8")), Engine("MergeTree"), ("a",), Everywhere()),
     "duplicate"),
])
def test_descriptions_cluster_mode_cannot_render_safely_are_refused(make: Any, message: str):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("view", "message"), [
    (MaterializedView("mv", tables.EVENTS, tables.PLAN_VERSIONS, "SELECT 1 FROM {source}"), "must be sharded"),
    (MaterializedView("mv", tables.PLAN_VERSIONS, tables.EVENT_WINDOWS_1M, "SELECT 1 FROM {source}"),
     "sharded tables only"),
    (MaterializedView("mv", tables.EVENTS, tables.DAILY_SERIES, "SELECT 1 FROM {source}"), "must be rand"),
])
def test_materialized_views_cluster_mode_cannot_render_safely_are_refused(view: MaterializedView, message: str):
    with pytest.raises(ValueError, match=message):
        create_materialized_view(view, DB, CLUSTER)


@pytest.mark.parametrize("name", ["my-cluster", "a b", "x;DROP", "", "1x", "é"])
def test_cluster_and_database_names_must_be_identifiers(name: str):
    with pytest.raises(ValueError, match="plain identifier"):
        create_table(tables.EVENTS, DB, name)
    with pytest.raises(ValueError, match="plain identifier"):
        bootstrap_statements(name, CLUSTER)


class RecordingClient:
    def __init__(self) -> None:
        self.executed: list[str] = []

    def execute(self, sql: str, params: Any = None, **_: Any) -> list[Any]:
        self.executed.append(sql)
        # An empty database: no version applied, no table to copy, no event to rebuild from.
        return [(0,)] if sql.startswith(("EXISTS", "SELECT count()")) else []

    def disconnect(self) -> None:
        pass


@pytest.mark.parametrize("cluster_name", [None, CLUSTER])
def test_migrate_routes_statements_by_the_cluster_setting(monkeypatch: pytest.MonkeyPatch, cluster_name: str | None):
    import highland.sinks.client

    client = RecordingClient()
    monkeypatch.setattr(highland.sinks.client, "connect", lambda *a, **k: client)
    settings = Settings(clickhouse_cluster=cluster_name, clickhouse_database=DB)
    applied = migrate(settings)
    assert applied == [m.name for m in load_migrations()]
    ddl = [s for s in client.executed if s.startswith(("CREATE", "DROP"))]
    if cluster_name:
        assert ddl == all_cluster_statements()
    else:
        assert ddl[2:] == schema_statements(DB)
        assert not any("ON CLUSTER" in s or "Replicated" in s for s in client.executed)
    inserts = [s for s in client.executed if s.startswith("INSERT")]
    assert inserts == [f"INSERT INTO {DB}.schema_migrations (version, name) VALUES"] * len(load_migrations())


class InstallAtVersion6(RecordingClient):
    """A database whose observations are still in migration 0006's table, holding events."""

    def execute(self, sql: str, params: Any = None, **_: Any) -> list[Any]:
        self.executed.append(sql)
        return [(1,)] if sql.startswith(("EXISTS", "SELECT count()")) else []


def test_migration_0007_moves_the_observations_on_a_cluster_through_the_local_tables(chdb_session: Any):
    """On a cluster, 0007's data step empties the new table's shards, copies through the Distributed
    names, then drops 0006's Distributed table and its shards' tables -- each statement in a form
    current ClickHouse parses."""
    client = InstallAtVersion6()
    fill_observations_by_series(client, DB, ON_CLUSTER)
    changes = [sql for sql in client.executed if not sql.startswith(("EXISTS", "SELECT"))]
    assert changes == [
        f"TRUNCATE TABLE IF EXISTS {DB}.observations_by_series_local ON CLUSTER {CLUSTER}",
        f"INSERT INTO {DB}.observations_by_series (indicator, region, day, observed_at, agency, event_id, revision, "
        f"value, sign) SELECT indicator, region, day, observed_at, agency, event_id, revision, value, sign "
        f"FROM {DB}.observations",
        f"DROP TABLE IF EXISTS {DB}.observations ON CLUSTER {CLUSTER}",
        f"DROP TABLE IF EXISTS {DB}.observations_local ON CLUSTER {CLUSTER}",
    ]
    for sql in changes:
        format_query(chdb_session, sql)  # raises on a syntax error


# --- 2. syntax on current ClickHouse -------------------------------------------------------------------

def sql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_query(session: Any, sql: str) -> str:
    """ClickHouse's own parser and formatter; parses without executing (no cluster, no Keeper needed)."""
    return session.query(f"SELECT formatQuery({sql_literal(sql)})", "TabSeparatedRaw").data().rstrip("\n")


def test_every_cluster_statement_parses_on_current_clickhouse(chdb_session: Any):
    for sql in all_cluster_statements():
        formatted = format_query(chdb_session, sql)
        assert f" ON CLUSTER {CLUSTER}" in formatted, sql
        assert format_query(chdb_session, formatted) == formatted  # the parse is stable


@pytest.mark.parametrize(("migration", "op"), OPERATIONS, ids=OPERATION_IDS)
def test_the_parser_reads_each_part_where_the_description_put_it(chdb_session: Any, migration: Any, op: Any):
    """The engine, a Distributed table's shape and local table, a materialized view's target: where
    the description says, in the statement as current ClickHouse parsed and formatted it."""
    formatted = [format_query(chdb_session, sql) for sql in op.statements(DB, ON_CLUSTER, migration.version)]
    if isinstance(op, CreateTable):
        assert f"ENGINE = Replicated{op.table.engine.name}(" in formatted[0]
        if isinstance(op.table.layout, Sharded):
            _check_distributed(op.table, formatted[1])
    elif isinstance(op, RecreateDistributed):
        _check_distributed(op.table, formatted[1])
    elif isinstance(op, CreateMaterializedView):
        [view] = formatted
        assert f" TO {DB}.{local_name(op.view.target.name)}\n" in view


def _check_distributed(table: Table, formatted: str) -> None:
    db, local = table.database(DB), local_name(table.name)
    computed = any(c.materialized is not None for c in table.columns)  # named, as ALIAS (part 1)
    assert (f" ON CLUSTER {CLUSTER}\n(\n" if computed else f" ON CLUSTER {CLUSTER} AS {db}.{local}\n") in formatted
    assert f"ENGINE = Distributed({CLUSTER}, {db}, {local}, " in formatted


@pytest.mark.parametrize("broken", [
    "CREATE TABLE IF NOT EXISTS hl.x_local ON CLUSTER c (a String ENGINE = ReplicatedMergeTree('/p', '{replica}') "
    "ORDER BY a",
    "CREATE TABLE IF NOT EXISTS hl.x ON CLUSTER my-cluster AS hl.x_local ENGINE = Distributed(c, hl, x_local, rand())",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS hl.mv TO ON CLUSTER c hl.t AS SELECT 1",
])
def test_the_syntax_check_rejects_broken_statements(chdb_session: Any, broken: str):
    with pytest.raises(Exception, match="SYNTAX_ERROR"):
        format_query(chdb_session, broken)


# --- 3. meaning: the rendered schema on one node, and the project's queries on it --------------------------

LOCAL_DB = "cluster_single_node"


def as_local(table: Table) -> Table:
    """A sharded table as its local table (its rows on one shard); a table everywhere as itself."""
    return replace(table, name=local_name(table.name)) if isinstance(table.layout, Sharded) else table


def one_node_image(db: str) -> list[str]:
    """The cluster's layout on one node, rendered from the descriptions the cluster DDL is rendered
    from. A sharded table's rows are in its local table, under the plain engine of its Replicated
    one; its original name is a Buffer table that keeps nothing (every limit 0: each insert goes
    straight through) and reads the local table -- one shard's Distributed table, which a Merge table
    cannot stand for, as it takes no insert. A table everywhere is itself; materialized views read
    and fill the local tables; views read the original names."""
    databases = sorted({table.database(db) for table in tables.TABLES.values()})
    statements = [f"CREATE DATABASE IF NOT EXISTS {name}" for name in databases]
    for table in tables.TABLES.values():
        statements.append(as_local(table).create(db))
        if isinstance(table.layout, Sharded):
            home, local = table.database(db), local_name(table.name)
            statements.append(f"CREATE TABLE IF NOT EXISTS {home}.{table.name} AS {home}.{local}\n"
                              f"ENGINE = Buffer({home}, {local}, 1, 0, 0, 0, 0, 0, 0)")
    for _, op in OPERATIONS:
        if isinstance(op, CreateMaterializedView):
            view = op.view
            statements.append(replace(view, source=as_local(view.source), target=as_local(view.target)).create(db))
        elif isinstance(op, CreateView):
            statements.append(op.view.create(db))
    return statements


class OneNodeCluster(Topology):
    """The cluster's topology as the one-node image takes it: sets sent with GLOBAL IN, mutations on
    the local tables, and no ON CLUSTER (the one node is the whole cluster, and chdb has no Keeper)."""

    def mutable(self, db: str, table: str) -> str:
        return f"{db}.{local_name(table)}"


ONE_NODE_CLUSTER = OneNodeCluster(CLUSTER)


class ChdbClient:
    """Just enough of clickhouse-driver's ``execute`` for sinks.progress, on chdb; ``ran`` is every
    statement as it ran."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.ran: list[str] = []

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if params:
            sql = sql % {k: self._literal(v) for k, v in params.items()}
        self.ran.append(sql)
        result = self.session.query(sql, "JSONCompact").data()
        if not result.strip():
            return []
        answer = json.loads(result)
        types = [column["type"] for column in answer["meta"]]
        return [tuple(map(self._value, types, row)) for row in answer["data"]]

    @staticmethod
    def _value(kind: str, value: Any) -> Any:
        """As the driver hands it out: DateTime('UTC') an aware datetime, DateTime a naive one."""
        if isinstance(value, str) and kind.startswith("DateTime"):
            moment = datetime.fromisoformat(value)
            return moment.replace(tzinfo=UTC) if kind == "DateTime('UTC')" else moment
        return value

    @staticmethod
    def _literal(value: Any) -> str:
        if isinstance(value, bool | int | float):
            return str(value)
        if isinstance(value, date | datetime):
            return f"'{value.isoformat()}'"
        return sql_literal(str(value))


@pytest.fixture(scope="module")
def single_node_schema(chdb_session: Any) -> None:
    """The one-node image of the cluster's layout, in LOCAL_DB."""
    for database in sorted({table.database(LOCAL_DB) for table in tables.TABLES.values()}):
        chdb_session.query(f"DROP DATABASE IF EXISTS {database}")
    for sql in one_node_image(LOCAL_DB):
        chdb_session.query(sql)


def test_single_node_image_has_every_table_and_view(chdb_session: Any, single_node_schema: None):
    present = set(ChdbClient(chdb_session).execute(
        f"SELECT database, name FROM system.tables WHERE database LIKE '{LOCAL_DB}%'"))
    for table in tables.TABLES.values():
        db = table.database(LOCAL_DB)
        assert (db, table.name) in present
        assert ((db, local_name(table.name)) in present) == isinstance(table.layout, Sharded)
    views = {op.view.name for _, op in OPERATIONS if isinstance(op, CreateView | CreateMaterializedView)}
    assert {(LOCAL_DB, view) for view in views} <= present


INTEGERS = {"UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16", "Int32", "Int64"}


def test_sharding_keys_are_integers_over_the_local_tables(chdb_session: Any, single_node_schema: None):
    """Each sharded table's key, as its Distributed table names it (part 1), over its local table."""
    sharded = [t for t in tables.TABLES.values() if isinstance(t.layout, Sharded)]
    assert sharded
    for table in sharded:
        local = f"{table.database(LOCAL_DB)}.{local_name(table.name)}"
        [(name, kind, *_)] = ChdbClient(chdb_session).execute(f"DESCRIBE (SELECT {table.layout.key} AS k FROM {local})")
        assert (name, kind in INTEGERS) == ("k", True), (table.name, kind)


def test_progress_queries_run_by_the_original_names_and_stay_exact(chdb_session: Any,
                                                                   single_node_schema: None):
    catalog = default_catalog()
    flow = next(i for i in catalog.indicators if i.kind is Kind.FLOW and not i.regional)
    # Two observations; the first sent twice (a re-delivery) and then revised: 10 -> 25; the second 5.
    rows = [("e1", 0, 10.0), ("e1", 0, 10.0), ("e1", 1, 25.0), ("e2", 0, 5.0)]
    values = ", ".join(
        f"('{flow.agency}', '{eid}', {rev}, '{flow.code}', 'chongqing', {val}, '{flow.unit}', {val}, "
        f"'2020-03-01 00:00:00', '2020-03-01 00:00:00', 0, {n})" for n, (eid, rev, val) in enumerate(rows))
    # Rows straight into a shard's local table; the windows' views fire there.
    chdb_session.query(f"INSERT INTO {LOCAL_DB}.events_local VALUES {values}")
    # The per-day series, built from those events (written by the original names).
    rebuild(ChdbClient(chdb_session), LOCAL_DB, catalog.plan.timezone, chunks=2)
    for read in (query_actuals, reference_actuals):
        actuals = read(ChdbClient(chdb_session), LOCAL_DB, catalog, date(2020, 6, 30))
        assert actuals[flow.code].value == pytest.approx(25.0 + 5.0)
    # The live windows count arrivals (every row inserted), read through the Distributed name.
    [(events, value_sum)] = ChdbClient(chdb_session).execute(
        f"SELECT sum(events), sum(value_sum) FROM {LOCAL_DB}.event_windows_1m WHERE indicator = '{flow.code}'")
    assert int(events) == len(rows)
    assert float(value_sum) == pytest.approx(sum(v for _, _, v in rows))


class WriterClient(ChdbClient):
    """Also takes the writer's columnar INSERTs (rendered as VALUES): enough of the driver for
    sinks.writer, whose session tables live in the chdb session."""

    def execute(self, sql: str, params: Any = None, *, columnar: bool = False,
                external_tables: Any = None) -> list[tuple[Any, ...]]:
        if external_tables:
            raise AssertionError("the writer sends its batch once, as a session table")
        if isinstance(params, list):
            assert columnar, sql
            rows = zip(*params, strict=True)
            return super().execute(sql + " " + ", ".join(
                "(" + ", ".join(self._literal(v) for v in row) + ")" for row in rows))
        return super().execute(sql, params)


MEMBERSHIPS = {"in", "notIn", "globalIn", "globalNotIn"}


def set_lookups(session: Any, sql: str) -> list[tuple[str, set[str]]]:
    """Each IN of ``sql`` that tests against a subquery, as ClickHouse's own parser reads it
    (``EXPLAIN AST``, one space of indent a level): its function (``in``, ``globalNotIn``, ...) and
    the tables that the query it filters reads."""
    text = session.query(f"EXPLAIN AST {sql}", "TabSeparatedRaw").data().splitlines()
    lines, depth = [line.split() for line in text], [len(line) - len(line.lstrip(" ")) for line in text]

    def below(i: int) -> range:
        return range(i + 1, next((j for j in range(i + 1, len(lines)) if depth[j] <= depth[i]), len(lines)))

    def enclosing_select(i: int) -> int:
        level = depth[i]
        for j in range(i - 1, -1, -1):
            if depth[j] < level:
                if lines[j][0] == "SelectQuery":
                    return j
                level = depth[j]
        raise AssertionError(f"no query around line {i} of the AST of {sql}")

    found = []
    for i, words in enumerate(lines):
        if words[0] != "Function" or words[1] not in MEMBERSHIPS:
            continue
        if [lines[j][0] for j in below(i) if depth[j] == depth[i] + 2][1:] != ["Subquery"]:
            continue  # a set of literals
        select = enclosing_select(i)  # its FROM: SelectQuery > TablesInSelectQuery > element > expression
        reads = {lines[j][1] for j in below(select)
                 if depth[j] == depth[select] + 4 and lines[j][0] == "TableIdentifier"}
        found.append((words[1], reads))
    return found


def test_the_writer_runs_by_the_original_names_and_stays_exact(chdb_session: Any,
                                                              single_node_schema: None):
    """The writer's SQL (session tables, GLOBAL IN over the Distributed names, a re-delivered batch,
    a revision) on current ClickHouse, with the cluster's table layout."""
    from highland.ingest.events import Accepted
    from highland.sinks.writer import write_events

    from tests.integration.support import Positioned, as_batch

    catalog = default_catalog()
    flow = next(i for i in catalog.indicators if i.kind is Kind.FLOW and not i.regional)
    for table in ("events_local", "observations_by_series_local", "daily_series_local"):
        chdb_session.query(f"TRUNCATE TABLE {LOCAL_DB}.{table}")

    def positioned(event_id: str, revision: int, value: float, offset: int) -> Positioned:
        moment = datetime(2020, 3, 1, 4, offset % 60, tzinfo=UTC)
        return Positioned(Accepted(flow.agency, event_id, revision, flow.code, "chongqing", value, flow.unit,
                                   value, flow.unit, moment), 0, offset)

    client = WriterClient(chdb_session)
    first = [positioned("e1", 0, 10.0, 0), positioned("e2", 0, 5.0, 1), positioned("e1", 0, 10.0, 2)]
    tz = catalog.plan.timezone
    on_cluster = Topology(CLUSTER)
    assert write_events(client, LOCAL_DB, as_batch(first), datetime.now(UTC), tz, on_cluster).inserted == 2
    assert write_events(client, LOCAL_DB, as_batch(first), datetime.now(UTC), tz, on_cluster).inserted == 0
    revised = write_events(client, LOCAL_DB, as_batch([positioned("e1", 1, 25.0, 3)]), datetime.now(UTC), tz,
                           topology=Topology(CLUSTER))
    assert revised.inserted == 1
    # Every lookup of the Distributed tables over a session table sends its set to the shards.
    lookups = [(function, reads) for sql in client.ran for function, reads in set_lookups(chdb_session, sql)
               if any(table.startswith(f"{LOCAL_DB}.") for table in reads)]
    assert lookups and {function for function, _ in lookups} <= {"globalIn", "globalNotIn"}, lookups
    for read in (query_actuals, reference_actuals):
        actuals = read(ChdbClient(chdb_session), LOCAL_DB, catalog, date(2020, 6, 30))
        assert actuals[flow.code].value == pytest.approx(25.0 + 5.0)


def test_every_superseded_revision_is_withdrawn_on_current_clickhouse(chdb_session: Any,
                                                                      single_node_schema: None):
    """Three revisions of each key stored (as writers that died before deriving their rows leave
    them), then the newest re-delivered: the write withdraws both lower ones. (Current ClickHouse's
    ANY INNER JOIN keeps one left row per key, 18.16's kept them all: with it, one stays live.)"""
    from highland.ingest.events import Accepted
    from highland.sinks.writer import write_events

    from tests.integration.support import Positioned, as_batch

    catalog = default_catalog()
    flow = next(i for i in catalog.indicators if i.kind is Kind.FLOW and not i.regional)
    for table in ("events_local", "observations_by_series_local", "daily_series_local"):
        chdb_session.query(f"TRUNCATE TABLE {LOCAL_DB}.{table}")
    keys = [f"k{i}" for i in range(5)]
    chdb_session.query(f"INSERT INTO {LOCAL_DB}.events_local VALUES " + ", ".join(
        f"('{flow.agency}', '{key}', {rev}, '{flow.code}', 'chongqing', {rev + 1}, '{flow.unit}', {rev + 1}, "
        f"'2020-03-01 04:0{i}:00', '2020-03-01 05:00:00', 0, {i * 3 + rev})"
        for i, key in enumerate(keys) for rev in range(3)))
    newest = [Positioned(Accepted(flow.agency, key, 2, flow.code, "chongqing", 3.0, flow.unit, 3.0, flow.unit,
                                  datetime(2020, 3, 1, 4, i, tzinfo=UTC)), 0, i * 3 + 2) for i, key in enumerate(keys)]
    result = write_events(WriterClient(chdb_session), LOCAL_DB, as_batch(newest), datetime.now(UTC),
                          catalog.plan.timezone,
                          topology=Topology(CLUSTER))
    assert result.inserted == 0
    actuals = query_actuals(ChdbClient(chdb_session), LOCAL_DB, catalog, date(2020, 6, 30))
    assert actuals[flow.code].value == pytest.approx(3.0 * len(keys))


def test_the_self_check_runs_by_the_original_names_and_mends_a_forged_state(chdb_session: Any,
                                                                            single_node_schema: None):
    """The self-check's SQL (sinks/audit.py: the sweep's slice, GLOBAL IN over the Distributed names,
    the recomputation, the deletion of a state that claims too many rows) on current ClickHouse,
    with the cluster's table layout."""
    import time

    from highland.sinks.audit import check, sweep_keys_sql, sweep_slice_end

    test_the_writer_runs_by_the_original_names_and_stays_exact(chdb_session, single_node_schema)
    catalog = default_catalog()
    flow = next(i for i in catalog.indicators if i.kind is Kind.FLOW and not i.regional)
    client, tz = WriterClient(chdb_session), catalog.plan.timezone
    everything = {"agency": "", "event_id": "", "limit": 1000}
    assert sweep_slice_end(client, LOCAL_DB, everything) is None  # two keys: the slice reaches the end
    assert sweep_slice_end(client, LOCAL_DB, {**everything, "limit": 1}) == (flow.agency, "e1")
    keys = sweep_keys_sql(LOCAL_DB, bounded=False)
    assert check(client, LOCAL_DB, tz, keys, everything, repair=False, topology=ONE_NODE_CLUSTER).clean
    chdb_session.query(f"INSERT INTO {LOCAL_DB}.daily_series_local (indicator, region, day, version, events, "
                       f"value_sum) VALUES ('{flow.code}', 'chongqing', '2020-03-01', 99, 1, 1e6)")
    found = check(client, LOCAL_DB, tz, keys, everything, repair=True, topology=ONE_NODE_CLUSTER)
    assert [d.indicator for d in found.wrong_days] == [flow.code]
    deadline = time.monotonic() + 20
    while not check(client, LOCAL_DB, tz, keys, everything, repair=False, topology=ONE_NODE_CLUSTER).clean:
        assert time.monotonic() < deadline, "the forged state was not deleted"
        time.sleep(0.2)
    actuals = query_actuals(ChdbClient(chdb_session), LOCAL_DB, catalog, date(2020, 6, 30))
    assert actuals[flow.code].value == pytest.approx(25.0 + 5.0)
