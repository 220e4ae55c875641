"""Every ClickHouse table and view of Highland, described once.

A :class:`Table` holds its columns with their types, its engine (with the version column a
``ReplacingMergeTree`` keeps the latest row by), partition, order key, settings, and its cluster
layout: sharded by a key, or a full copy everywhere. From that one description are rendered
- the single-server ``CREATE`` (:meth:`Table.create`, here),
- the ``ON CLUSTER`` form with ``Replicated*`` engines and ``Distributed`` tables (sinks/cluster.py),
- the column lists the code inserts and selects (:attr:`Table.names`, :meth:`Table.structure`).

Migrations (sinks/migrations) refer to these descriptions; nothing parses SQL. A column added by a
later migration says so (``since``): the migration that creates its table leaves it out and the
one that adds it renders ``ALTER TABLE … ADD COLUMN`` (docs/schema.md).

The layouts are decisions about exactness, stated where each table is (the reasons are in
sinks/cluster.py and docs/production.md): a sharded table's key decides which rows meet on one
shard, so it is chosen for the deduplication its readers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

# Engines with a replicated form (``Replicated`` + name): the only ones migrations may use.
MERGE_TREES = frozenset({"MergeTree", "ReplacingMergeTree", "SummingMergeTree"})


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    default: str | None = None  # DEFAULT expression: filled when an INSERT leaves the column out
    materialized: str | None = None  # MATERIALIZED expression: always computed by the server, never inserted
    since: int | None = None  # the migration that added it to an existing table (None: created with it)

    def definition(self) -> str:
        text = f"{self.name} {self.type}"
        if self.default is not None:
            text += f" DEFAULT {self.default}"
        if self.materialized is not None:
            text += f" MATERIALIZED {self.materialized}"
        return text


@dataclass(frozen=True)
class Engine:
    name: str  # one of MERGE_TREES
    version: str | None = None  # ReplacingMergeTree's version column: the row with the highest wins

    def __post_init__(self) -> None:
        if self.name not in MERGE_TREES:
            raise ValueError(f"engine {self.name} has no Replicated* form (one of {sorted(MERGE_TREES)} is expected)")
        if self.version is not None and self.name != "ReplacingMergeTree":
            raise ValueError(f"{self.name} takes no version column")

    def arguments(self) -> tuple[str, ...]:
        return (self.version,) if self.version else ()

    def render(self, *leading: str) -> str:
        """``ReplacingMergeTree(updated_at)``; ``leading`` arguments (a replication path) go first."""
        args = (*leading, *self.arguments())
        return f"{self.name}({', '.join(args)})" if args else self.name


@dataclass(frozen=True)
class Sharded:
    """Rows spread over the shards by ``cityHash64(columns)``, or at random when ``columns`` is empty
    (tables filled by a materialized view: their rows sit where their source rows sit)."""

    columns: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"cityHash64({', '.join(self.columns)})" if self.columns else "rand()"


@dataclass(frozen=True)
class Everywhere:
    """A full copy on every node of the cluster (small tables only)."""


Layout = Sharded | Everywhere
RANDOM = Sharded()

# The database of the tables the read side must never see (the token tables): the served database's
# name and this suffix, e.g. ``highland_auth`` next to ``highland``. On ClickHouse 18.16, which has no
# grants, only a database can be kept from a user (``allow_databases``): the local stack's reader is
# allowed the served databases and never these (docs/security.md, "The local stack").
AUTH_SUFFIX = "_auth"


def auth_database(db: str) -> str:
    """The database holding ``db``'s token tables."""
    return db + AUTH_SUFFIX


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    engine: Engine
    order_by: tuple[str, ...]  # column names or expressions, as ClickHouse takes them
    layout: Layout
    partition_by: str | None = None
    settings: tuple[tuple[str, int], ...] = ()
    auth: bool = False  # lives in the served database's auth_database (the token tables)
    _by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {c.name: c for c in self.columns}
        if len(by_name) != len(self.columns):
            raise ValueError(f"{self.name}: duplicate column names")
        object.__setattr__(self, "_by_name", by_name)
        known = set(by_name)
        if self.engine.version is not None and self.engine.version not in known:
            raise ValueError(f"{self.name}: version column {self.engine.version} is not a column")
        if isinstance(self.layout, Sharded) and not set(self.layout.columns) <= known:
            raise ValueError(f"{self.name}: sharding key {self.layout.key} names unknown columns "
                             f"{sorted(set(self.layout.columns) - known)}")

    # --- where it lives ------------------------------------------------------------------------------

    def database(self, db: str) -> str:
        """The database this table lives in when ``db`` is the one served."""
        return auth_database(db) if self.auth else db

    def qualified(self, db: str) -> str:
        """``database.table`` when ``db`` is the database served."""
        return f"{self.database(db)}.{self.name}"

    def in_served_database(self) -> Table:
        """This table in the served database itself, where the migrations before 0010 created the
        token tables (0010 moves them to the auth database)."""
        return replace(self, auth=False)

    # --- the column lists the code uses -------------------------------------------------------------

    @property
    def version_column(self) -> str:
        """The column a ReplacingMergeTree keeps the highest row of."""
        if self.engine.version is None:
            raise ValueError(f"{self.name} has no version column")
        return self.engine.version

    @property
    def names(self) -> tuple[str, ...]:
        """The columns an INSERT writes and ``SELECT *`` returns, in table order (MATERIALIZED ones are
        computed by the server)."""
        return tuple(c.name for c in self.columns if c.materialized is None)

    def insert(self, db: str) -> str:
        """``INSERT INTO db.table (every insertable column) VALUES``, for rows in :attr:`names` order."""
        return f"INSERT INTO {self.qualified(db)} ({', '.join(self.names)}) VALUES"

    def without(self, *names: str) -> tuple[str, ...]:
        """:attr:`names` without ``names`` (each must be a column)."""
        self._check(names)
        return tuple(n for n in self.names if n not in names)

    def structure(self, names: Sequence[str] | None = None) -> tuple[tuple[str, str], ...]:
        """(name, type) of ``names`` (default: every insertable column), e.g. for a session table."""
        chosen = self.names if names is None else tuple(names)
        self._check(chosen)
        return tuple((n, self._by_name[n].type) for n in chosen)

    def column(self, name: str) -> Column:
        self._check((name,))
        return self._by_name[name]

    def _check(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self._by_name]
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {unknown}")

    # --- single-server DDL --------------------------------------------------------------------------

    def columns_at(self, version: int | None) -> tuple[Column, ...]:
        """The columns the table had once migration ``version`` was applied (None: all of them)."""
        return tuple(c for c in self.columns if version is None or c.since is None or c.since <= version)

    def body(self, version: int | None = None) -> str:
        """The parenthesised column definitions, one per line."""
        return "(\n" + ",\n".join(f"    {c.definition()}" for c in self.columns_at(version)) + "\n)"

    def clauses(self) -> list[str]:
        """PARTITION BY / ORDER BY / SETTINGS, one per line."""
        lines = [f"PARTITION BY {self.partition_by}"] if self.partition_by else []
        order = self.order_by[0] if len(self.order_by) == 1 else f"({', '.join(self.order_by)})"
        lines.append(f"ORDER BY {order}")
        if self.settings:
            lines.append("SETTINGS " + ", ".join(f"{k} = {v}" for k, v in self.settings))
        return lines

    def create(self, db: str, version: int | None = None) -> str:
        return "\n".join([f"CREATE TABLE IF NOT EXISTS {self.qualified(db)}", self.body(version),
                          f"ENGINE = {self.engine.render()}", *self.clauses()])

    def after(self, column: Column) -> str:
        """`` AFTER <the column before it>``: an added column takes the place its description gives it."""
        position = self.columns.index(column)
        if position == 0:  # 18.16 has no ADD COLUMN ... FIRST (docs/clickhouse-dialect.md, "add-column")
            raise ValueError(f"{self.name}: an added column cannot be the first one")
        return f" AFTER {self.columns[position - 1].name}"

    def add_column(self, db: str, column: Column, target: str | None = None, on_cluster: str = "") -> str:
        """``ALTER TABLE … ADD COLUMN`` on this table (or ``target``, a table of its on a cluster), without
        IF NOT EXISTS (docs/clickhouse-dialect.md, "add-column"): the AddColumn operation looks first."""
        return (f"ALTER TABLE {self.database(db)}.{target or self.name}{on_cluster} "
                f"ADD COLUMN {column.definition()}{self.after(column)}")


@dataclass(frozen=True)
class MaterializedView:
    """``name`` turns every block inserted into ``source`` into rows of ``target``. ``select`` names
    its source as ``{source}``: rendered as the source table (its shard-local table on a cluster)."""

    name: str
    source: Table
    target: Table
    select: str

    def create(self, db: str) -> str:
        return (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{self.name} TO {db}.{self.target.name} AS\n"
                + self.select.format(source=f"{db}.{self.source.name}"))


@dataclass(frozen=True)
class View:
    """A plain view; ``select`` names the tables it reads as ``{table_name}``."""

    name: str
    reads: tuple[Table, ...]
    select: str

    def rendered_select(self, db: str) -> str:
        return self.select.format(**{t.name: f"{db}.{t.name}" for t in self.reads})

    def create(self, db: str) -> str:
        return f"CREATE VIEW IF NOT EXISTS {db}.{self.name} AS\n{self.rendered_select(db)}"


def _columns(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(n, t) for n, t in pairs)


# --- the tables ------------------------------------------------------------------------------------

# Bookkeeping of sinks.migrate: one row per applied migration.
SCHEMA_MIGRATIONS = Table(
    "schema_migrations",
    (Column("version", "UInt32"), Column("name", "String"), Column("applied_at", "DateTime", default="now()")),
    Engine("MergeTree"), ("version",), Everywhere())

# Every accepted event, one row per delivery. Re-deliveries and replays may add copies; every query
# deduplicates by (agency, event_id) itself (argMax over revision), so numbers are exact whether or
# not background merges have run. ReplacingMergeTree only saves space. Sharded by observation: all
# revisions and re-deliveries of one (agency, event_id) on one shard, so the deduplication of every
# query stays shard-local (docs/production.md).
EVENTS = Table(
    "events",
    _columns(("agency", "String"), ("event_id", "String"), ("revision", "UInt32"), ("indicator", "String"),
             ("region", "String"), ("value", "Float64"), ("unit", "String"), ("raw_value", "Float64"),
             ("observed_at", "DateTime"), ("received_at", "DateTime"), ("kafka_partition", "UInt16"),
             ("kafka_offset", "UInt64")),
    Engine("ReplacingMergeTree"), ("agency", "event_id", "revision"), Sharded(("agency", "event_id")))

# Rejected events, as read back from the dead-letter topic by the worker. Keyed by their position in
# that topic, so re-reading it after a restart replaces instead of duplicating; re-reads of one
# position on one shard (LIMIT 1 BY).
DEAD_LETTERS = Table(
    "dead_letters",
    _columns(("dlq_partition", "UInt16"), ("dlq_offset", "UInt64"), ("reason", "String"), ("detail", "String"),
             ("agency", "String"), ("source", "String"), ("origin", "String"), ("received_at", "DateTime"),
             ("payload", "String"), ("payload_encoding", "String")),
    Engine("ReplacingMergeTree"), ("dlq_partition", "dlq_offset"), Sharded(("dlq_partition", "dlq_offset")))

# The token tables live in the auth database (auth_database; migration 0010 moved them there), which
# the read side is never allowed.
#
# Agency bearer tokens for the HTTP gateway, stored as SHA-256 only (tokens are 256-bit random, so a
# fast hash is enough). The latest row per (agency, token) by updated_at decides revocation; the rows
# of one token (issue, revocation) on one shard.
AGENCY_TOKENS = Table(
    "agency_tokens",
    _columns(("agency", "String"), ("token_sha256", "String"), ("revoked", "UInt8"), ("updated_at", "DateTime")),
    Engine("ReplacingMergeTree", version="updated_at"), ("agency", "token_sha256"),
    Sharded(("agency", "token_sha256")), auth=True)

# When an agency token stops being valid (`highland tokens issue --expires`, `tokens rotate
# --keep-old`): the latest row per token by updated_at decides. A token without a row (issued before
# migration 0008, or without an expiry) never expires. Read by the gateway's token check next to
# agency_tokens; the rows of one token on one shard, as agency_tokens'.
AGENCY_TOKEN_EXPIRY = Table(
    "agency_token_expiry",
    _columns(("agency", "String"), ("token_sha256", "String"), ("expires_at", "DateTime"), ("updated_at", "DateTime")),
    Engine("ReplacingMergeTree", version="updated_at"), ("agency", "token_sha256"),
    Sharded(("agency", "token_sha256")), auth=True)

# When a token was last used, for `highland tokens list`: written by the gateway and by `push` at most
# once a minute per token and process (settings.token_use_record_seconds), never per request. The
# latest used_at per token is the answer; copies from several gateways change nothing.
AGENCY_TOKEN_USES = Table(
    "agency_token_uses",
    _columns(("agency", "String"), ("token_sha256", "String"), ("used_at", "DateTime")),
    Engine("ReplacingMergeTree", version="used_at"), ("agency", "token_sha256"), Sharded(("agency", "token_sha256")),
    auth=True)

# Live windows: what is ARRIVING now, per agency / indicator / region, in tumbling 1-minute and
# 1-hour windows of the worker's receive time. Fed by materialized views from `events`, in the same
# INSERT: the worker stores each (agency, event_id, revision) once, so a re-delivered batch is not
# counted twice. Revisions count as arrivals. SummingMergeTree merges lazily: always read with sum()
# ... GROUP BY. Plan totals never come from here; they come from `events`. On a cluster each shard
# fills its own windows from its own events, so their Distributed key is rand().
_WINDOW_COLUMNS = _columns(("window_start", "DateTime"), ("agency", "String"), ("indicator", "String"),
                           ("region", "String"), ("events", "UInt64"), ("value_sum", "Float64"))
_WINDOW_ORDER = ("window_start", "agency", "indicator", "region")
EVENT_WINDOWS_1M = Table("event_windows_1m", _WINDOW_COLUMNS, Engine("SummingMergeTree"), _WINDOW_ORDER, RANDOM)
EVENT_WINDOWS_1H = Table("event_windows_1h", _WINDOW_COLUMNS, Engine("SummingMergeTree"), _WINDOW_ORDER, RANDOM)


def _window_select(start: str) -> str:
    return (f"SELECT {start}(received_at) AS window_start, agency, indicator, region,\n"
            "       count() AS events, sum(value) AS value_sum\n"
            "FROM {source}\n"
            "GROUP BY window_start, agency, indicator, region")


EVENT_WINDOWS_1M_MV = MaterializedView("event_windows_1m_mv", EVENTS, EVENT_WINDOWS_1M,
                                       _window_select("toStartOfMinute"))
EVENT_WINDOWS_1H_MV = MaterializedView("event_windows_1h_mv", EVENTS, EVENT_WINDOWS_1H,
                                       _window_select("toStartOfHour"))

# Alerts: status changes and stale / fresh-again feeds. alert_id is derived from the indicator, the
# transition and the previous alert of the same indicator and kind, so two evaluators that see the
# same change (a leader fail-over) write the same id and the table keeps one row; both writes of one
# alert on one shard (LIMIT 1 BY alert_id).
ALERTS = Table(
    "alerts",
    _columns(("alert_id", "String"), ("kind", "String"), ("seq", "UInt64"), ("indicator", "String"),
             ("agency", "String"), ("old_status", "String"), ("new_status", "String"),
             ("actual", "Nullable(Float64)"), ("expected", "Nullable(Float64)"), ("as_of", "Date"),
             ("detail", "String"), ("created_at", "DateTime")),
    Engine("ReplacingMergeTree"), ("alert_id",), Sharded(("alert_id",)))

# The plan catalog in SQL, so dashboards and Grafana alert rules can compute expected, target and
# status next to the events. Written by sinks/plan_tables.py from catalog/data and
# catalog/trajectory.py; never edited by hand. Versioned, so a rewrite is exact without relying on
# merges: every sync writes all rows under a `version` (the SHA-256 of their content) and only THEN
# records that version in plan_versions. Readers use the *_current views: the rows of the newest
# recorded version, read with FINAL so a sync repeated after a crash still counts once. seq orders
# the syncs (the previous maximum + 1): wall-clock seconds could tie. On a cluster: a full copy on
# every node -- the views read them with FINAL and IN (subquery), plan_tables prunes them with
# ALTER TABLE ... DELETE (a Distributed table takes no mutations), and a local copy keeps such
# sub-queries from becoming "double-distributed" inside distributed queries over events.
PLAN_VERSIONS = Table(
    "plan_versions",
    _columns(("version", "String"), ("seq", "UInt64"), ("synced_at", "DateTime"), ("indicators", "UInt32"),
             ("trajectory_rows", "UInt64")),
    Engine("MergeTree"), ("seq", "version"), Everywhere())

# One row per indicator and version. Absent numbers are 0 with a has_* flag (plain Float64 keeps the
# arithmetic identical on 18.16 and current ClickHouse: docs/clickhouse-dialect.md, "plain-float64").
# path_base / path_base_year: where the plan's path starts (the baseline, or 0 at the end of the
# plan's baseline year). on_track / at_risk: the thresholds in force (the indicator's own, else the
# plan's).
PLAN_INDICATORS = Table(
    "plan_indicators",
    _columns(("version", "String"), ("indicator", "String"), ("name_zh", "String"), ("name_en", "String"),
             ("section", "String"), ("unit", "String"), ("kind", "String"), ("direction", "String"),
             ("trajectory", "String"), ("baseline", "Float64"), ("has_baseline", "UInt8"), ("path_base", "Float64"),
             ("path_base_year", "UInt16"), ("target", "Float64"), ("has_target", "UInt8"), ("target_year", "UInt16"),
             ("annual_growth", "Float64"), ("on_track", "Float64"), ("at_risk", "Float64"), ("agency", "String"),
             ("cadence_days", "UInt32"), ("regional", "UInt8")),
    Engine("ReplacingMergeTree"), ("version", "indicator"), Everywhere())

# expected(D) for every plan day, as catalog/trajectory.py computes it (has_expected = 0 for growth
# targets, whose plan number depends on the previous year's actual and is computed in SQL from
# year_fraction). position = p(D), the plan years elapsed since the end of the baseline year.
PLAN_TRAJECTORY = Table(
    "plan_trajectory",
    _columns(("version", "String"), ("indicator", "String"), ("day", "Date"), ("expected", "Float64"),
             ("has_expected", "UInt8"), ("year_fraction", "Float64"), ("position", "Float64")),
    Engine("ReplacingMergeTree"), ("version", "indicator", "day"), Everywhere())

PLAN_DISTRICTS = Table(
    "plan_districts",
    _columns(("version", "String"), ("district", "String"), ("name_zh", "String"), ("name_en", "String")),
    Engine("ReplacingMergeTree"), ("version", "district"), Everywhere())

# The newest recorded version wins; a tie on seq (two syncs at once) is broken by the version string,
# so every reader picks the same one.
_CURRENT = "WHERE version = (SELECT argMax(version, (seq, version)) FROM {plan_versions})"
PLAN_INDICATORS_CURRENT = View(
    "plan_indicators_current", (PLAN_INDICATORS, PLAN_VERSIONS),
    "SELECT indicator, name_zh, name_en, section, unit, kind, direction, trajectory, baseline, has_baseline,\n"
    "       path_base, path_base_year, target, has_target, target_year, annual_growth, on_track, at_risk,\n"
    "       agency, cadence_days, regional\n"
    "FROM {plan_indicators} FINAL\n" + _CURRENT)
PLAN_TRAJECTORY_CURRENT = View(
    "plan_trajectory_current", (PLAN_TRAJECTORY, PLAN_VERSIONS),
    "SELECT indicator, day, expected, has_expected, year_fraction, position\n"
    "FROM {plan_trajectory} FINAL\n" + _CURRENT)
PLAN_DISTRICTS_CURRENT = View(
    "plan_districts_current", (PLAN_DISTRICTS, PLAN_VERSIONS),
    "SELECT district, name_zh, name_en\n"
    "FROM {plan_districts} FINAL\n" + _CURRENT)

# Plan numbers without scanning every event: the tables the writer keeps (sinks/daily_series.py).
#
# Observations: every stored revision of every event, ordered by series and plan-local day, with sign
# +1; a revision superseded by a newer one gets a second row with sign -1 in ITS day. A revision is
# live when none of its rows is -1, so copies of a row (two writers racing in a rebalance) change
# nothing. Plain MergeTree on purpose: rows are never removed, so the row count of a series-day only
# grows and can version what is derived from it. Small granules: the writer looks rows up by
# series-day and time. Written by the writer (not a view): one series-day on one shard, so its
# recomputation and the rows it reads meet there.
_OBSERVATION_COLUMNS = _columns(
    ("indicator", "String"), ("region", "String"), ("day", "Date"), ("observed_at", "DateTime"),
    ("agency", "String"), ("event_id", "String"), ("revision", "UInt32"), ("value", "Float64"), ("sign", "Int8"))
_SERIES_DAY = Sharded(("indicator", "region", "day"))

# Migration 0006's table, ordered by strings; migration 0007 copies its rows into the next and drops it.
OBSERVATIONS_0006 = Table(
    "observations", _OBSERVATION_COLUMNS, Engine("MergeTree"),
    ("indicator", "region", "day", "observed_at", "agency", "event_id", "revision"), _SERIES_DAY,
    partition_by="toYear(day)", settings=(("index_granularity", 1024),))

# The same rows ordered by numbers: what the writer scans for every batch. ClickHouse 18.16 tests and
# groups strings much slower than numbers (docs/clickhouse-dialect.md, "string-keys"). `series` and
# `key` are computed by the server on every INSERT (MATERIALIZED: no writer can set them wrong). Two
# series sharing a hash would only share a row count: the writer then sees rows it did not expect and
# recomputes the day from its own rows, so a collision costs time, never a wrong number.
OBSERVATIONS_BY_SERIES = Table(
    "observations_by_series",
    (*_OBSERVATION_COLUMNS,
     Column("series", "UInt64", materialized="cityHash64(indicator, region)"),
     Column("key", "UInt64", materialized="cityHash64(agency, event_id)")),
    Engine("MergeTree"), ("series", "day", "observed_at", "key", "revision", "sign"), _SERIES_DAY,
    partition_by="toYear(day)", settings=(("index_granularity", 1024),))

# One row per (indicator, region, plan-local day), kept by the writer for every day a batch touched:
# the live observations' count and sum, and the day's closing value (latest by observed_at, then
# revision, then event_id: CONTRACT.md §2; the close_* columns are that observation's key). `version`
# is the number of observation rows the row reflects, so a later state always wins; read with FINAL,
# exact whether or not merges ran. A day whose observations were all revised away keeps a row with
# events = 0.
DAILY_SERIES = Table(
    "daily_series",
    _columns(("indicator", "String"), ("region", "String"), ("day", "Date"), ("events", "UInt64"),
             ("value_sum", "Float64"), ("close_value", "Float64"), ("close_observed_at", "DateTime"),
             ("close_revision", "UInt32"), ("close_event_id", "String"), ("version", "UInt64")),
    Engine("ReplacingMergeTree", version="version"), ("indicator", "region", "day"), _SERIES_DAY)

# Every table of every migration, retired ones included: cluster mode renders only these.
TABLES: dict[str, Table] = {t.name: t for t in (
    SCHEMA_MIGRATIONS, EVENTS, DEAD_LETTERS, AGENCY_TOKENS, AGENCY_TOKEN_EXPIRY, AGENCY_TOKEN_USES,
    EVENT_WINDOWS_1M, EVENT_WINDOWS_1H, ALERTS,
    PLAN_VERSIONS, PLAN_INDICATORS, PLAN_TRAJECTORY, PLAN_DISTRICTS, OBSERVATIONS_0006, OBSERVATIONS_BY_SERIES,
    DAILY_SERIES)}
