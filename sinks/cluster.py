"""ClickHouse cluster mode: the same tables, rendered for a sharded and replicated cluster.

Set ``HIGHLAND_CLICKHOUSE_CLUSTER=<name>`` (a cluster of the servers' ``remote_servers`` config, with
``{shard}`` and ``{replica}`` macros and ClickHouse Keeper) and ``sinks.migrate`` renders every
operation of ``sinks/migrations`` with the functions here instead of the single-server DDL. Nothing
else changes: every query the project runs keeps using the original table names.

Each table's layout is part of its description (sinks/tables.py; :data:`LAYOUTS` lists them), a
decision made once per table:

- **sharded**: ``<name>_local`` is the data, a ``Replicated*MergeTree`` per shard, and ``<name>`` is a
  ``Distributed`` table over it with a sharding key. The key decides which rows meet on one shard,
  so it is chosen for exactness: all copies and revisions of one (agency, event_id) land on one
  shard. ``GROUP BY agency, event_id`` over the Distributed table is exact anyway (the initiator
  merges the shards' partial argMax states); co-location is what keeps it exact when the initiator's
  merge is skipped (``optimize_distributed_group_by_sharding_key`` with
  ``optimize_skip_unused_shards``) and lets ReplacingMergeTree collapse copies. Tables filled by a
  materialized view hold rows placed by their *source's* key, so their Distributed key is
  ``rand()``: a deterministic key there would let that optimization trust a co-location that does
  not exist (docs/production.md).
- **everywhere**: one full copy on every node (a ``Replicated*MergeTree`` whose replication group is
  the whole cluster), under the original name. For the small plan tables: their views read them with
  ``FINAL`` and ``IN (subquery)``, ``sinks/plan_tables.py`` prunes them with ``ALTER TABLE … DELETE``
  (a Distributed table takes no mutations), and a full local copy keeps such sub-queries from
  becoming "double-distributed" inside distributed queries over ``events``.

Materialized views are created ON CLUSTER on the local tables: each shard turns the rows it receives
into window rows on the same shard. Plain views are created ON CLUSTER over the original names.
"""

from __future__ import annotations

from highland.sinks.tables import TABLES, Column, Everywhere, Layout, MaterializedView, Sharded, Table, View

LOCAL_SUFFIX = "_local"
# Keeper paths. {shard} and {replica} are server macros (deploy/compose/clickhouse/macros/*.xml),
# expanded by each server; the database and table are literal, so a path names one table for good.
SHARDED_PATH = "/clickhouse/tables/{{shard}}/{db}/{table}"
EVERYWHERE_PATH = "/clickhouse/tables/all/{db}/{table}"
REPLICA = "{replica}"
RANDOM_KEY = "rand()"

# The layout of every table, as its description states it: its sharding key is a decision about
# exactness, never a default.
LAYOUTS: dict[str, Layout] = {name: table.layout for name, table in TABLES.items()}


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def check_identifier(value: str, what: str) -> None:
    """Cluster and database names are spliced into DDL: plain identifiers only."""
    if not (value and (value[0].isascii() and (value[0].isalpha() or value[0] == "_"))
            and all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in value)):
        raise ValueError(f"{what} name {value!r} must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")


def _checked(db: str, cluster: str) -> None:
    check_identifier(db, "database")
    check_identifier(cluster, "cluster")


def replicated_engine(table: Table, path: str) -> str:
    """``XMergeTree(args)`` -> ``ReplicatedXMergeTree('<path>', '{replica}'[, args])``."""
    return "Replicated" + table.engine.render(f"'{path}'", f"'{REPLICA}'")


def data_table(table: Table) -> str:
    """The name of the table holding ``table``'s rows on a node: its local table when sharded."""
    return local_name(table.name) if isinstance(table.layout, Sharded) else table.name


def create_table(table: Table, db: str, cluster: str, version: int | None = None) -> list[str]:
    """The statements that create ``table`` on ``cluster`` (as of migration ``version``), in order."""
    db = table.database(db)
    _checked(db, cluster)
    clauses = "".join(f"\n{line}" for line in table.clauses())
    if isinstance(table.layout, Everywhere):
        path = EVERYWHERE_PATH.format(db=db, table=table.name)
        return [f"CREATE TABLE IF NOT EXISTS {db}.{table.name} ON CLUSTER {cluster}\n{table.body(version)}\n"
                f"ENGINE = {replicated_engine(table, path)}{clauses}"]
    local = local_name(table.name)
    engine = replicated_engine(table, SHARDED_PATH.format(db=db, table=local))
    return [
        f"CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {cluster}\n{table.body(version)}\n"
        f"ENGINE = {engine}{clauses}",
        f"CREATE TABLE IF NOT EXISTS {db}.{table.name} ON CLUSTER {cluster}{_distributed_columns(table, db, version)}\n"
        f"ENGINE = Distributed({cluster}, {db}, {local}, {table.layout.key})",
    ]


def _distributed_columns(table: Table, db: str, version: int | None) -> str:
    """`` AS <local>``; with MATERIALIZED columns, the columns, those as ALIAS: 18.16's Distributed
    INSERT computes MATERIALIZED columns and sends them, which the shard refuses
    (docs/clickhouse-dialect.md, "distributed-materialized")."""
    columns = table.columns_at(version)
    if all(c.materialized is None for c in columns):
        return f" AS {db}.{local_name(table.name)}"
    return "\n(\n" + ",\n".join(
        f"    {c.name} {c.type} ALIAS {c.materialized}" if c.materialized is not None else f"    {c.definition()}"
        for c in columns) + "\n)"


def create_materialized_view(view: MaterializedView, db: str, cluster: str) -> list[str]:
    """On every shard, over the shard's own rows, into the shard's own target table."""
    _checked(db, cluster)
    if not isinstance(view.source.layout, Sharded):
        raise ValueError(f"{view.name}: cluster mode supports materialized views over sharded tables only")
    if not isinstance(view.target.layout, Sharded):
        raise ValueError(f"{view.name}: the target {view.target.name} must be sharded (it receives shard-local rows)")
    if view.target.layout.key != RANDOM_KEY:
        raise ValueError(f"{view.name}: {view.target.name} is filled shard-locally by a materialized view, so its "
                         f"Distributed key must be {RANDOM_KEY} (rows are not placed by {view.target.layout.key})")
    select = view.select.format(source=f"{db}.{local_name(view.source.name)}")
    return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view.name} ON CLUSTER {cluster} "
            f"TO {db}.{local_name(view.target.name)} AS\n{select}"]


def create_view(view: View, db: str, cluster: str) -> list[str]:
    _checked(db, cluster)
    return [f"CREATE VIEW IF NOT EXISTS {db}.{view.name} ON CLUSTER {cluster} AS\n{view.rendered_select(db)}"]


def drop_table(table: Table, db: str, cluster: str) -> list[str]:
    """The Distributed table first, then its shards' tables."""
    db = table.database(db)
    _checked(db, cluster)
    names = dict.fromkeys([table.name, data_table(table)])
    return [f"DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {cluster}" for name in names]


def add_column(table: Table, column: Column, db: str, cluster: str) -> list[tuple[str, str]]:
    """(the table altered, the ALTER), in order: the data table first (on a sharded table, each
    shard's), then the Distributed table over it."""
    _checked(db, cluster)
    if column.materialized is not None and isinstance(table.layout, Sharded):
        raise ValueError(f"{table.name}.{column.name}: a MATERIALIZED column added to a sharded table would have "
                         "to be an ALIAS in its Distributed table (docs/clickhouse-dialect.md, "
                         "\"distributed-materialized\"): not rendered yet")
    names = dict.fromkeys([data_table(table), table.name])
    return [(name, table.add_column(db, column, name, f" ON CLUSTER {cluster}")) for name in names]


def create_database(database: str, cluster: str) -> list[str]:
    _checked(database, cluster)
    return [f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}"]


def bootstrap_statements(database: str, cluster: str) -> list[str]:
    """What ``migrate`` runs before the migrations: the database and its schema_migrations table."""
    _checked(database, cluster)
    return [f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}",
            *create_table(TABLES["schema_migrations"], database, cluster)]
