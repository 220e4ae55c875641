"""ClickHouse cluster mode: the same migrations, rendered for a sharded and replicated cluster.

Set ``HIGHLAND_CLICKHOUSE_CLUSTER=<name>`` (a cluster of the servers' ``remote_servers`` config, with
``{shard}`` and ``{replica}`` macros and ClickHouse Keeper) and ``sinks.migrate`` sends every statement
of ``sinks/migrations`` through :func:`render_cluster` instead of running it as written. Nothing else
changes: every query the project runs keeps using the original table names.

Each table has a layout (:data:`LAYOUTS`), decided here once:

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

The parser accepts exactly the shapes our migrations use (``CREATE TABLE IF NOT EXISTS {db}.x (…)
ENGINE = …MergeTree[(…)] …``, ``CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.x TO {db}.y AS SELECT …``,
``CREATE VIEW IF NOT EXISTS {db}.x AS SELECT …``) and refuses anything else, so a new kind of
statement, or a new table without a layout, fails loudly in tests instead of being half-clustered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOCAL_SUFFIX = "_local"
# Keeper paths. {shard} and {replica} are server macros (deploy/compose/clickhouse/macros/*.xml),
# expanded by each server; the database and table are literal, so a path names one table for good.
SHARDED_PATH = "/clickhouse/tables/{{shard}}/{db}/{table}"
EVERYWHERE_PATH = "/clickhouse/tables/all/{db}/{table}"
REPLICA = "{replica}"
RANDOM_KEY = "rand()"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENGINE = re.compile(r"^(?:Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing)?MergeTree$")


@dataclass(frozen=True)
class Sharded:
    """Rows spread over the shards by ``key`` (an integer expression over the table's columns)."""

    key: str


@dataclass(frozen=True)
class Everywhere:
    """A full copy on every node of the cluster (small tables only)."""


Layout = Sharded | Everywhere

# Every table of sinks/migrations and the schema_migrations bookkeeping table. A table missing here
# is an error in cluster mode: its sharding key is a decision about exactness, not a default.
LAYOUTS: dict[str, Layout] = {
    # All revisions and re-deliveries of one observation on one shard: the per-(agency, event_id)
    # deduplication of every query stays shard-local (docs/production.md).
    "events": Sharded("cityHash64(agency, event_id)"),
    # Filled by materialized views on events_local: rows sit where their events sit.
    "event_windows_1m": Sharded(RANDOM_KEY),
    "event_windows_1h": Sharded(RANDOM_KEY),
    # Re-reads of one DLQ position replace each other: keep them on one shard (LIMIT 1 BY).
    "dead_letters": Sharded("cityHash64(dlq_partition, dlq_offset)"),
    # The rows of one token (issue, revocation) on one shard: argMax(revoked, updated_at) per token.
    "agency_tokens": Sharded("cityHash64(agency, token_sha256)"),
    # Both writes of one alert (an evaluator fail-over) on one shard (LIMIT 1 BY alert_id).
    "alerts": Sharded("cityHash64(alert_id)"),
    # Written by the writer (not a view): one series-day on one shard, so its recomputation and the
    # rows it reads meet there.
    "observations": Sharded("cityHash64(indicator, region, day)"),  # 0006; copied into the next, dropped
    "observations_by_series": Sharded("cityHash64(indicator, region, day)"),
    "daily_series": Sharded("cityHash64(indicator, region, day)"),
    "plan_versions": Everywhere(),
    "plan_indicators": Everywhere(),
    "plan_trajectory": Everywhere(),
    "plan_districts": Everywhere(),
    "schema_migrations": Everywhere(),
}

# Same columns as the single-server table created by sinks.migrate.migrate().
SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
    "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
    "ENGINE = MergeTree ORDER BY version"
)

_TABLE = re.compile(
    r"""^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+\{db\}\.(?P<name>\w+)\s*
        \((?P<columns>.*)\)\s*
        ENGINE\s*=\s*(?P<engine>\w+)(?:\s*\((?P<args>[^()]*)\))?
        (?P<clauses>\s.*)?$""",
    re.S | re.X,
)
_MATERIALIZED_VIEW = re.compile(
    r"^CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+\{db\}\.(?P<name>\w+)\s+"
    r"TO\s+\{db\}\.(?P<target>\w+)\s+AS\s+(?P<select>SELECT\b.*)$",
    re.S,
)
_VIEW = re.compile(r"^CREATE\s+VIEW\s+IF\s+NOT\s+EXISTS\s+\{db\}\.(?P<name>\w+)\s+AS\s+(?P<select>SELECT\b.*)$", re.S)
_TABLE_REF = re.compile(r"\{db\}\.(\w+)\b")
_FROM = re.compile(r"\bFROM\s+\{db\}\.(\w+)\b")


@dataclass(frozen=True)
class CreateTable:
    name: str
    columns: str  # the text between the outer parentheses, as written
    engine: str
    engine_args: str  # "" when the engine has no arguments
    clauses: str  # ORDER BY / PARTITION BY / SETTINGS …, as written

    def column_names(self) -> list[str]:
        return [_first_word(c) for c in _split_top_level(self.columns) if c.strip()]


@dataclass(frozen=True)
class CreateMaterializedView:
    name: str
    target: str
    select: str

    def sources(self) -> list[str]:
        return _FROM.findall(self.select)


@dataclass(frozen=True)
class CreateView:
    name: str
    select: str


Statement = CreateTable | CreateMaterializedView | CreateView


def parse(statement: str) -> Statement:
    """One statement of a migration file (``{db}`` not yet substituted)."""
    text = statement.strip()
    if m := _TABLE.match(text):
        return CreateTable(m["name"], m["columns"], m["engine"], (m["args"] or "").strip(),
                           (m["clauses"] or "").strip())
    if m := _MATERIALIZED_VIEW.match(text):
        return CreateMaterializedView(m["name"], m["target"], m["select"].strip())
    if m := _VIEW.match(text):
        return CreateView(m["name"], m["select"].strip())
    head = " ".join(text.split()[:6])
    raise ValueError(f"cluster mode cannot render this statement (not one of the supported CREATE shapes): {head} …")


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def layout_of(table: str) -> Layout:
    try:
        return LAYOUTS[table]
    except KeyError:
        raise ValueError(f"table {table!r} has no cluster layout: add it to sinks.cluster.LAYOUTS "
                         "(sharded with a key that keeps its deduplication exact, or everywhere)") from None


def render_cluster(statement: str, database: str, cluster: str) -> list[str]:
    """The statement(s) that replace ``statement`` on ``cluster``, in execution order."""
    _check_identifier(database, "database")
    _check_identifier(cluster, "cluster")
    parsed = parse(statement)
    if isinstance(parsed, CreateTable):
        sql = _render_table(parsed, cluster)
    elif isinstance(parsed, CreateMaterializedView):
        sql = [_render_materialized_view(parsed, cluster)]
    else:
        sql = [f"CREATE VIEW IF NOT EXISTS {{db}}.{parsed.name} ON CLUSTER {cluster} AS\n{parsed.select}"]
    return [s.replace("{db}", database) for s in sql]


def bootstrap_statements(database: str, cluster: str) -> list[str]:
    """What ``migrate`` runs before the migrations: the database and its schema_migrations table."""
    _check_identifier(database, "database")
    _check_identifier(cluster, "cluster")
    return [f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}",
            *render_cluster(SCHEMA_MIGRATIONS, database, cluster)]


def replicated_engine(table: CreateTable, path: str) -> str:
    """``XMergeTree(args)`` -> ``ReplicatedXMergeTree('<path>', '{replica}'[, args])``."""
    if not _ENGINE.match(table.engine):
        raise ValueError(f"{table.name}: engine {table.engine} has no Replicated* form here "
                         "(a MergeTree-family engine without replication is expected in migrations)")
    args = [f"'{path}'", f"'{REPLICA}'"] + ([table.engine_args] if table.engine_args else [])
    return f"Replicated{table.engine}({', '.join(args)})"


def _render_table(table: CreateTable, cluster: str) -> list[str]:
    layout = layout_of(table.name)
    clauses = f"\n{table.clauses}" if table.clauses else ""
    if isinstance(layout, Everywhere):
        path = EVERYWHERE_PATH.format(db="{db}", table=table.name)
        return [f"CREATE TABLE IF NOT EXISTS {{db}}.{table.name} ON CLUSTER {cluster}\n({table.columns})\n"
                f"ENGINE = {replicated_engine(table, path)}{clauses}"]
    local = local_name(table.name)
    engine = replicated_engine(table, SHARDED_PATH.format(db="{db}", table=local))
    _check_key(table, layout.key)
    return [
        f"CREATE TABLE IF NOT EXISTS {{db}}.{local} ON CLUSTER {cluster}\n({table.columns})\n"
        f"ENGINE = {engine}{clauses}",
        f"CREATE TABLE IF NOT EXISTS {{db}}.{table.name} ON CLUSTER {cluster} AS {{db}}.{local}\n"
        f"ENGINE = Distributed({cluster}, {{db}}, {local}, {layout.key})",
    ]


def _render_materialized_view(view: CreateMaterializedView, cluster: str) -> str:
    target = layout_of(view.target)
    sources = view.sources()
    if not sources:
        raise ValueError(f"{view.name}: a materialized view must read FROM a {{db}} table")
    for source in sources:
        if not isinstance(layout_of(source), Sharded):
            raise ValueError(f"{view.name}: cluster mode supports materialized views over sharded tables only")
    if not isinstance(target, Sharded):
        raise ValueError(f"{view.name}: the target {view.target} must be sharded (it receives shard-local rows)")
    if target.key != RANDOM_KEY:
        raise ValueError(f"{view.name}: {view.target} is filled shard-locally by a materialized view, so its "
                         f"Distributed key must be {RANDOM_KEY} (rows are not placed by {target.key})")

    def to_local(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{{db}}.{local_name(name)}" if isinstance(layout_of(name), Sharded) else match.group(0)

    select = _TABLE_REF.sub(to_local, view.select)
    return (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.{view.name} ON CLUSTER {cluster} "
            f"TO {{db}}.{local_name(view.target)} AS\n{select}")


def _check_key(table: CreateTable, key: str) -> None:
    """Every column the sharding key names must be a column of the table."""
    names = set(table.column_names())
    used = set(re.findall(r"\b([A-Za-z_]\w*)\b(?!\s*\()", key))
    missing = sorted(used - names)
    if missing:
        raise ValueError(f"{table.name}: sharding key {key} names unknown columns {missing}")


def _check_identifier(value: str, what: str) -> None:
    if not _IDENT.match(value):
        raise ValueError(f"{what} name {value!r} must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and quotes: the column definitions of a CREATE TABLE."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _first_word(definition: str) -> str:
    return definition.split()[0].strip("`\"")
