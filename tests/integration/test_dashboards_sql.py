"""Every panel's and alert rule's SQL, macros expanded as Grafana would, on ClickHouse 18.16 (the
local server, as the read-only dashboards user) and on current ClickHouse (chdb), over one known
feed inserted into both. The answers are checked against hand-computed values and against
`highland progress` (sinks/progress.py) on the same rows."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from highland.catalog.loader import default_catalog
from highland.catalog.models import Catalog
from highland.dashboards import alerting, definitions
from highland.dashboards.macros import TimeRange, expand
from highland.dashboards.queries import Sql
from highland.sinks.client import connect
from highland.sinks.daily_series import rebuild
from highland.sinks.migrate import migrate, schema_statements
from highland.sinks.plan_tables import sync_plan_tables
from highland.sinks.progress import progress
from highland.sinks.tables import ALERTS, DEAD_LETTERS, EVENTS

from highland.settings import Settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
TZ_OFFSET = "+08:00"


# --- the known feed -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ev:
    agency: str
    event_id: str
    revision: int
    indicator: str
    value: float
    observed: str  # RFC 3339
    received: datetime
    region: str = "chongqing"


COMMS, ECON, AGRI = "cq_comms_admin", "cq_economy_it", "cq_agriculture"
OLD = NOW - timedelta(days=40)  # older than telecom's 31-day cadence: that feed is stale


def known_events(catalog: Catalog) -> list[Ev]:
    fiber = catalog.indicator("fiber_broadband_ports")
    assert fiber is not None and fiber.regional
    districts = [d.code for d in catalog.districts[:2]]
    latency = catalog.indicator("latency_world_cities")
    assert latency is not None
    return [
        # flow: revision 1 replaces revision 0; e2 arrives twice (a re-delivery); e3 is 2021 in Chongqing
        Ev(COMMS, "tbv-1", 0, "telecom_business_volume", 100.0, "2020-03-01T00:00:00+00:00", OLD),
        Ev(COMMS, "tbv-1", 1, "telecom_business_volume", 120.0, "2020-03-01T00:00:00+00:00", OLD),
        Ev(COMMS, "tbv-2", 0, "telecom_business_volume", 300.0, "2020-06-01T00:00:00+00:00", OLD),
        Ev(COMMS, "tbv-2", 0, "telecom_business_volume", 300.0, "2020-06-01T00:00:00+00:00", OLD),
        Ev(COMMS, "tbv-3", 0, "telecom_business_volume", 999.0, "2020-12-31T20:00:00+00:00", OLD),
        Ev(COMMS, "tbv-0", 0, "telecom_business_volume", 800.0, "2019-05-01T00:00:00+00:00", OLD),
        # index: the latest observation counts
        Ev(ECON, "ipi-1", 0, "internet_plus_index", 4.0, "2019-06-01T00:00:00+08:00", NOW - timedelta(minutes=3)),
        Ev(ECON, "ipi-2", 0, "internet_plus_index", 4.9, "2020-06-01T00:00:00+08:00", NOW - timedelta(minutes=3)),
        # growth flow: 2019 total 100, 2020 year to date 120 (expected 100 x 1.3)
        Ev(AGRI, "agri-1", 0, "agri_ecommerce_turnover", 100.0, "2019-07-01T00:00:00+08:00",
           NOW - timedelta(minutes=1)),
        Ev(AGRI, "agri-2", 0, "agri_ecommerce_turnover", 120.0, "2020-07-01T00:00:00+08:00",
           NOW - timedelta(minutes=1)),
        # regional level: per district the latest, summed
        Ev(fiber.agency, "fb-1", 0, fiber.code, 100.0, "2019-01-01T00:00:00+08:00", NOW, districts[0]),
        Ev(fiber.agency, "fb-2", 0, fiber.code, 150.0, "2020-01-01T00:00:00+08:00", NOW, districts[0]),
        Ev(fiber.agency, "fb-3", 0, fiber.code, 70.0, "2020-02-01T00:00:00+08:00", NOW, districts[1]),
        # lower is better: 160 ms against a 150 ms bound
        Ev(latency.agency, "lat-1", 0, latency.code, 160.0, "2020-05-01T00:00:00+08:00", NOW),
    ]


def dead_letter_rows() -> list[tuple[int, int, str, datetime]]:
    recent = NOW - timedelta(minutes=10)
    return [(0, 1, "unknown_indicator", recent), (0, 1, "unknown_indicator", recent),  # re-read copy
            (0, 2, "unknown_indicator", recent), (1, 1, "schema_violation", recent),
            (1, 2, "schema_violation", NOW - timedelta(days=3))]  # outside the feed dashboard's range


def alert_rows() -> list[tuple[str, str, str, str, str, datetime]]:
    t = NOW - timedelta(days=1)
    return [("a1", "status", "telecom_business_volume", "no_data", "off_track", t),
            ("a1", "status", "telecom_business_volume", "no_data", "off_track", t),  # stored twice
            ("a2", "stale", "telecom_business_volume", "fresh", "stale", t + timedelta(minutes=1))]


def _utc(moment: str) -> datetime:
    return datetime.fromisoformat(moment).astimezone(UTC)


def known_rows(catalog: Catalog) -> list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]:
    """(table, columns, rows) of the known feed; datetimes are timezone-aware, so both engines store
    the same instants whatever their own timezone."""
    events = [(e.agency, e.event_id, e.revision, e.indicator, e.region, e.value, "u", e.value, _utc(e.observed),
               e.received, 0, n) for n, e in enumerate(known_events(catalog))]
    letters = [(p, o, reason, "d", COMMS, "http", "", at, "{}", "utf-8") for p, o, reason, at in dead_letter_rows()]
    alerts = [(aid, kind, 1, ind, COMMS, old, new, None, None, date(2020, 12, 31), "detail", at)
              for aid, kind, ind, old, new, at in alert_rows()]
    return [
        (EVENTS.name, EVENTS.names, events),
        (DEAD_LETTERS.name, DEAD_LETTERS.names, letters),
        (ALERTS.name, ALERTS.names, alerts),
    ]


def insert_known_feed(client: Any, db: str, catalog: Catalog) -> None:
    """The rows as stored, then the per-day series built from the events (as migration 0006's
    backfill does; the writer's own path is tested with real workers in test_worker.py)."""
    for table, columns, rows in known_rows(catalog):
        client.execute(f"INSERT INTO {db}.{table} ({', '.join(columns)}) VALUES", rows)
    rebuild(client, db, catalog.plan.timezone)


# --- the two engines --------------------------------------------------------------------------------

class ChdbClient:
    """clickhouse-driver's `execute` on top of chdb, enough for sync_plan_tables and the panels."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        if isinstance(params, list):  # INSERT ... VALUES with rows
            values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in params)
            self.session.query(f"{query} {values}")
            return []
        if isinstance(params, dict):  # %(name)s placeholders
            query = query % {k: _literal(v) for k, v in params.items()}
        return self.columns_and_rows(query)[1]

    def columns_and_rows(self, query: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
        text = self.session.query(query, "JSONCompact").data()
        if not text.strip():
            return [], []
        doc = json.loads(text)
        meta = [(m["name"], m["type"]) for m in doc["meta"]]
        return meta, [tuple(_convert(v, t) for v, (_n, t) in zip(r, meta, strict=True)) for r in doc["data"]]


def _literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, datetime) and v.tzinfo is not None:
        return f"toDateTime({int(v.timestamp())})"
    if isinstance(v, datetime):
        return f"'{v.strftime('%Y-%m-%d %H:%M:%S')}'"
    if isinstance(v, date):
        return f"'{v.isoformat()}'"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(v)


def _convert(value: Any, ch_type: str) -> Any:
    base = re.sub(r"^Nullable\((.*)\)$", r"\1", ch_type)
    if value is None:
        return None
    if base.startswith("DateTime"):
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    if base == "Date":
        return date.fromisoformat(value)
    if "Int" in base:
        return int(value)
    return value


def _normal(value: Any, ch_type: str, server_tz: ZoneInfo) -> Any:
    """One representation for both engines: floats for numbers; DateTime without a zone of its own
    as naive UTC (it is read in the server's zone), DateTime('zone') as naive wall-clock time there."""
    if isinstance(value, datetime):
        if "DateTime(" in ch_type:
            return value.replace(tzinfo=None)
        local = value if value.tzinfo else value.replace(tzinfo=server_tz)
        return local.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[dict[str, Any]]


class Engine:
    def __init__(self, name: str, db: str, run: Any) -> None:
        self.name, self.db, self._run = name, db, run
        self.tz = ZoneInfo(run("SELECT timezone()")[1][0][0])

    def query(self, sql: str) -> Result:
        meta, rows = self._run(sql)
        names, types = [n for n, _ in meta], [t for _, t in meta]
        return Result(names, types, [{n: _normal(v, t, self.tz) for n, t, v in zip(names, types, r, strict=True)}
                                     for r in rows])


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def served(stack: Settings, catalog: Catalog, name: str, on_cluster: str = "") -> Iterator[Engine]:
    """A database of its own on ``stack``, migrated, feed inserted, plan synced; panels are run as the
    read-only dashboards user. Dropped after (``on_cluster``: the DROP's ON CLUSTER clause)."""
    settings = stack.model_copy(update={"clickhouse_database": f"t_dash_{uuid.uuid4().hex[:8]}"})
    migrate(settings)
    writer = connect(settings)
    insert_known_feed(writer, settings.clickhouse_database, catalog)
    sync_plan_tables(writer, settings.clickhouse_database, catalog)  # after the feed: baselines taken from it
    reader = connect(settings, reader=True)

    def run(sql: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
        rows, meta = reader.execute(sql, with_column_types=True)
        return meta, rows

    engine = Engine(name, settings.clickhouse_database, run)
    engine.writer = writer  # type: ignore[attr-defined]  # for the reference `progress()`
    yield engine
    connect(settings, database="default").execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}{on_cluster}")


@pytest.fixture(scope="module")
def server(stack: Settings, catalog: Catalog) -> Iterator[Engine]:
    """ClickHouse 18.16, one server."""
    yield from served(stack, catalog, "clickhouse-18.16")


@pytest.fixture(scope="module")
def embedded(chdb_session: Any, catalog: Catalog) -> Iterator[Engine]:
    """Current ClickHouse (chdb): the same migrations, plan tables and feed."""
    db = f"dash_{uuid.uuid4().hex[:8]}"
    client = ChdbClient(chdb_session)
    chdb_session.query(f"CREATE DATABASE {db}")
    for statement in schema_statements(db):
        chdb_session.query(statement)
    insert_known_feed(client, db, catalog)
    sync_plan_tables(client, db, catalog)  # after the feed: baselines taken from it
    yield Engine("chdb", db, client.columns_and_rows)
    chdb_session.query(f"DROP DATABASE IF EXISTS {db}")


@pytest.fixture(scope="module", params=["server", "embedded"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(request.param)


# --- what Grafana would send -----------------------------------------------------------------------

PLAN_END = TimeRange(datetime.fromisoformat(f"2015-01-01T00:00:00{TZ_OFFSET}"),
                     datetime.fromisoformat(f"2021-01-01T00:00:00{TZ_OFFSET}"))  # as of 2020-12-31
LIVE = TimeRange(NOW - timedelta(hours=1), NOW + timedelta(minutes=5))
RANGES = {definitions.OVERVIEW_UID: PLAN_END, definitions.INDICATOR_UID: PLAN_END,
          definitions.FEEDS_UID: LIVE, definitions.ALERTS_UID: TimeRange(NOW - timedelta(days=7), NOW)}


def boards(db: str, catalog: Catalog) -> dict[str, dict[str, Any]]:
    return {b["uid"]: b for b in definitions.all_dashboards(Sql.for_catalog(db, catalog))}


def panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in board["panels"] if p["title"] == title)


def run_panel(engine: Engine, catalog: Catalog, uid: str, title: str, ref_id: str = "A",
              indicator: str = "telecom_business_volume", time_range: TimeRange | None = None) -> Result:
    target = next(t for t in panel(boards(engine.db, catalog)[uid], title)["targets"] if t["refId"] == ref_id)
    sql = expand(target["rawSql"], time_range or RANGES[uid], {"indicator": indicator})
    return engine.query(sql)


def by(result: Result, key: str) -> dict[Any, dict[str, Any]]:
    return {row[key]: row for row in result.rows}


# --- every query runs, and its columns are what the panel uses -------------------------------------

def all_targets(db: str, catalog: Catalog) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dashboard uid, query) for every panel query and variable query of every dashboard."""
    for uid, board in boards(db, catalog).items():
        for p in board["panels"]:
            for target in p["targets"]:
                yield uid, target
        for variable in board["templating"]["list"]:
            yield uid, variable["query"]


def _columns_used(p: dict[str, Any]) -> set[str]:
    """Columns the panel's options and overrides name (they must exist in its result)."""
    used = {o["matcher"]["options"] for o in p["fieldConfig"]["overrides"]}
    if p["type"] == "stat":
        used.add(p["options"]["reduceOptions"]["fields"].strip("/^$"))
    if p["type"] == "barchart":
        used.add(p["options"]["xField"])
    return used


def test_every_panel_and_variable_query_runs_and_returns_the_columns_its_panel_uses(engine: Engine,
                                                                                      catalog: Catalog):
    panels = 0
    for uid, board in boards(engine.db, catalog).items():
        for variable in board["templating"]["list"]:  # the indicator variable: every catalog code
            result = engine.query(expand(variable["query"]["rawSql"], RANGES[uid]))
            assert [r["indicator"] for r in result.rows] == sorted(i.code for i in catalog.indicators)
        for p in board["panels"]:
            columns: set[str] = set()
            for target in p["targets"]:
                result = engine.query(expand(target["rawSql"], RANGES[uid], {"indicator": "telecom_business_volume"}))
                if target["format"] == 0:  # time series: a DateTime column named time comes first
                    assert result.columns[0] == "time" and "DateTime" in result.types[0], p["title"]
                columns |= set(result.columns)
            assert _columns_used(p) <= columns, (p["title"], columns)
            panels += 1
    assert panels == sum(len(b["panels"]) for b in boards(engine.db, catalog).values()) >= 14


def test_every_alert_rule_query_runs_and_returns_one_labelled_number_per_indicator(engine: Engine,
                                                                                    catalog: Catalog):
    for rule in alerting.api_rules(Sql.for_catalog(engine.db, catalog)):
        sql = rule["data"][0]["model"]["rawSql"]
        assert "$" not in sql  # no macros, no variables: alert rules have neither
        result = engine.query(sql)
        assert result.columns == ["indicator", "agency", "firing"]
        assert result.types == ["String", "String", "Float64"]
        assert len(result.rows) == len(catalog.indicators)
        assert {r["firing"] for r in result.rows} <= {0.0, 1.0}


def _same(a: Any, b: Any, column: str) -> bool:
    if column == "seconds_since" and a is not None and b is not None:
        return bool(abs(a - b) <= 5)  # now() is read once per query, on each engine
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9)
    return bool(a == b)


def test_both_engines_give_the_same_answers(server: Engine, embedded: Engine, catalog: Catalog):
    pairs = zip(all_targets(server.db, catalog), all_targets(embedded.db, catalog), strict=True)
    for (uid, target), (_uid, other) in pairs:
        old = server.query(expand(target["rawSql"], RANGES[uid], {"indicator": "fiber_broadband_ports"}))
        new = embedded.query(expand(other["rawSql"], RANGES[uid], {"indicator": "fiber_broadband_ports"}))
        assert old.columns == new.columns and len(old.rows) == len(new.rows), target["rawSql"][:100]
        for a, b in zip(old.rows, new.rows, strict=True):
            assert all(_same(a[c], b[c], c) for c in old.columns), (a, b)


# --- the numbers, for the known feed ---------------------------------------------------------------

OVERVIEW_TABLE = "Every indicator vs. its plan"


def _reference(server: Engine, catalog: Catalog, as_of: date) -> list[Any]:
    """`highland progress` (sinks/progress.py) on the same rows: the numbers the panels must show."""
    return progress(server.writer, server.db, catalog, as_of)  # type: ignore[attr-defined]


def _assert_same_as_progress(rows: dict[str, dict[str, Any]], server: Engine, catalog: Catalog, as_of: date) -> None:
    for ref in _reference(server, catalog, as_of):
        row = rows[ref.indicator]
        assert row["status"] == ref.status, ref.indicator
        for column, value in (("actual", ref.actual), ("expected", ref.expected), ("target", ref.target),
                              ("pct_of_target", ref.pct_of_target), ("projected", ref.projected)):
            assert row[column] == pytest.approx(value, rel=1e-9), (ref.indicator, column)


def test_overview_matches_highland_progress_and_hand_computed_values(engine: Engine, server: Engine,
                                                                     catalog: Catalog):
    result = run_panel(engine, catalog, definitions.OVERVIEW_UID, OVERVIEW_TABLE)
    rows = by(result, "indicator")
    assert len(rows) == len(catalog.indicators)
    telecom = rows["telecom_business_volume"]
    # 120 (revision 1 of tbv-1) + 300 (tbv-2 once); tbv-3 falls on 2021-01-01 in Chongqing
    assert telecom["actual"] == pytest.approx(420.0)
    assert telecom["pct_of_target"] == pytest.approx(100 * 420 / 1100)
    assert telecom["status"] == "off_track" and telecom["deadline"] == 2020
    assert rows["internet_plus_index"]["pct_of_target"] == pytest.approx(98.0)
    assert rows["internet_plus_index"]["status"] == "on_track"
    assert rows["agri_ecommerce_turnover"]["expected"] == pytest.approx(130.0)  # 100 x (1 + 30 %)
    assert rows["agri_ecommerce_turnover"]["status"] == "at_risk"  # 120 / 130 = 0.92
    assert rows["latency_world_cities"]["pct_of_target"] == pytest.approx(100 * 150 / 160)  # lower is better
    assert rows["fiber_broadband_ports"]["actual"] == pytest.approx(150.0 + 70.0)
    assert rows["container_throughput"]["status"] == "no_data" and rows["container_throughput"]["actual"] is None
    _assert_same_as_progress(rows, server, catalog, date(2020, 12, 31))
    # off track first, then at risk, on track, no data; within a status the furthest behind first
    order = [(["off_track", "at_risk", "on_track", "no_data"].index(r["status"]), -(r["behind_pct"] or 0))
             for r in result.rows]
    assert order == sorted(order)


def test_overview_as_of_the_end_of_an_earlier_time_range(engine: Engine, server: Engine, catalog: Catalog):
    june = TimeRange(datetime.fromisoformat(f"2020-01-01T00:00:00{TZ_OFFSET}"),
                     datetime.fromisoformat(f"2020-06-15T12:00:00{TZ_OFFSET}"))
    rows = by(run_panel(engine, catalog, definitions.OVERVIEW_UID, OVERVIEW_TABLE, time_range=june), "indicator")
    assert rows["telecom_business_volume"]["actual"] == pytest.approx(420.0)
    _assert_same_as_progress(rows, server, catalog, date(2020, 6, 15))
    counts = run_panel(engine, catalog, definitions.OVERVIEW_UID, "Indicators off track", time_range=june).rows[0]
    statuses = {k: v for k, v in counts.items() if k != "stale"}  # stopped feeds keep a status too
    assert set(statuses) == {"on_track", "at_risk", "off_track", "pending", "no_data"}
    assert sum(statuses.values()) == len(catalog.indicators)
    assert counts["off_track"] == sum(r["status"] == "off_track" for r in rows.values())


def test_indicator_page_follows_the_plan_path_by_month_and_by_day_on_short_ranges(engine: Engine, server: Engine,
                                                                                  catalog: Catalog):
    title = "Actual vs. the plan's path to the target"
    # 2015-2020 is longer than a quarter: each month's last day.
    days = {row["time"].date(): row for row in run_panel(engine, catalog, definitions.INDICATOR_UID, title).rows}
    assert min(days) == date(2015, 1, 31) and max(days) == date(2020, 12, 31) and len(days) == 72
    assert all((day + timedelta(days=1)).day == 1 for day in days)
    assert days[date(2020, 2, 29)]["actual"] is None  # nothing observed in 2020 yet
    for day in (date(2019, 12, 31), date(2020, 3, 31), date(2020, 7, 31)):
        ref = next(r for r in _reference(server, catalog, day) if r.indicator == "telecom_business_volume")
        assert days[day]["expected"] == pytest.approx(ref.expected, rel=1e-9)
        assert days[day]["actual"] == pytest.approx(ref.actual, rel=1e-9)
    # Up to 92 days: every day.
    spring = TimeRange(datetime.fromisoformat(f"2020-03-01T00:00:00{TZ_OFFSET}"),
                       datetime.fromisoformat(f"2020-06-01T00:00:00{TZ_OFFSET}"))
    daily = {row["time"].date(): row
             for row in run_panel(engine, catalog, definitions.INDICATOR_UID, title, time_range=spring).rows}
    assert sorted(daily) == [date(2020, 3, 1) + timedelta(days=n) for n in range(93)]
    assert daily[date(2020, 3, 1)]["actual"] == pytest.approx(120.0)
    assert daily[date(2020, 6, 1)]["actual"] == pytest.approx(420.0)
    projection = run_panel(engine, catalog, definitions.INDICATOR_UID, title, "B").rows
    assert [p["time"].date() for p in projection] == [date(2020, 12, 31), date(2020, 12, 31)]
    assert [p["projection"] for p in projection] == pytest.approx([420.0, 420.0])


def test_indicator_stats_and_district_breakdown(engine: Engine, catalog: Catalog):
    now = run_panel(engine, catalog, definitions.INDICATOR_UID, "Status", indicator="fiber_broadband_ports").rows
    assert len(now) == 1 and now[0]["actual"] == pytest.approx(220.0)
    title = "By district (regional indicators)"
    districts = run_panel(engine, catalog, definitions.INDICATOR_UID, title, indicator="fiber_broadband_ports")
    first, second = (d.code for d in catalog.districts[:2])
    assert [(r["district"], r["district_value"]) for r in districts.rows] == [(first, 150.0), (second, 70.0)]
    assert districts.rows[0]["district_name"] == catalog.districts[0].name_en
    assert run_panel(engine, catalog, definitions.INDICATOR_UID, title).rows == []  # city-wide indicator


def test_feed_health_counts_arrivals_freshness_and_dead_letters(engine: Engine, catalog: Catalog):
    per_minute = run_panel(engine, catalog, definitions.FEEDS_UID, "Events per agency per minute")
    expected = Counter((e.received.replace(tzinfo=None), e.agency) for e in known_events(catalog)
                       if e.received >= LIVE.start)
    assert {(r["time"], r["agency"]): r["arrivals"] for r in per_minute.rows} == expected
    assert expected[(NOW.replace(tzinfo=None) - timedelta(minutes=3), ECON)] == 2

    fresh = by(run_panel(engine, catalog, definitions.FEEDS_UID, "Freshness per feed"), "indicator")
    assert len(fresh) == len(catalog.indicators)
    assert fresh["telecom_business_volume"]["feed_state"] == "stale"  # 40 days > its 31-day cadence
    assert fresh["telecom_business_volume"]["seconds_since"] >= 40 * 86400
    assert fresh["internet_plus_index"]["feed_state"] == "fresh"
    assert fresh["container_throughput"]["feed_state"] == "never"
    assert fresh["container_throughput"]["last_event"] is None

    reasons = run_panel(engine, catalog, definitions.FEEDS_UID, "Dead letters by reason")
    assert [(r["reason"], r["letters"]) for r in reasons.rows] == [("unknown_indicator", 2), ("schema_violation", 1)]
    hourly = run_panel(engine, catalog, definitions.FEEDS_UID, "Dead letters per hour")
    assert sum(r["letters"] for r in hourly.rows) == 3


def test_alerts_timeline_lists_each_alert_once(engine: Engine, catalog: Catalog):
    timeline = run_panel(engine, catalog, definitions.ALERTS_UID, "Alerts, newest first")
    assert [r["alert_id"] for r in timeline.rows] == ["a2", "a1"]
    per_day = run_panel(engine, catalog, definitions.ALERTS_UID, "Alerts per day")
    assert sum(r["alerts_count"] for r in per_day.rows) == 2


def test_alert_rules_fire_for_the_known_feed(engine: Engine, server: Engine, catalog: Catalog):
    results = {rule["uid"]: by(engine.query(rule["data"][0]["model"]["rawSql"]), "indicator")
               for rule in alerting.api_rules(Sql.for_catalog(engine.db, catalog))}
    assert results["highland-off-track"]["telecom_business_volume"]["firing"] == 1.0
    assert results["highland-off-track"]["telecom_business_volume"]["agency"] == COMMS
    assert results["highland-at-risk"]["agri_ecommerce_turnover"]["firing"] == 1.0
    assert results["highland-stale-feed"]["telecom_business_volume"]["firing"] == 1.0
    assert results["highland-stale-feed"]["internet_plus_index"]["firing"] == 0.0
    reference = _reference(server, catalog, date(2020, 12, 31))
    for status, uid in (("off_track", "highland-off-track"), ("at_risk", "highland-at-risk")):
        firing = {ind for ind, row in results[uid].items() if row["firing"]}
        assert firing == {r.indicator for r in reference if r.status == status}
