"""The SQL behind every panel and Grafana alert rule, as plain strings.

Every statement runs on ClickHouse 18.16 (the local server) and on current ClickHouse, so only
functions both know are used: no toStartOfInterval (the plugin's $__timeInterval), WITH FILL,
window functions, JSONExtract or LowCardinality; at most one JOIN per SELECT (18.16 allows no more)
and every joined column listed by name (18.16 expands `*` to the left side only). Aliases never
repeat a column name: 18.16 substitutes aliases inside aggregates. (docs/clickhouse-dialect.md:
"missing-features", "time-buckets", "one-join", "join-star", "alias-substitution".)

Plan numbers come from the *_current views of migration 0005 (synced from the catalog by
sinks/plan_tables.py) and actuals from the per-day series `daily_series` (migration 0006, kept by the
writer), read exactly like sinks/progress.py. The
status logic below is CONTRACT.md §2 / catalog/trajectory.py written again in SQL; the integration
tests compare it with `highland progress` on the same rows.

Placeholders left for Grafana: the plugin's macros ($__fromTime, $__toTime, $__timeFilter(col)) and
the template variable ${indicator:percentencode}; dashboards/macros.py expands them the same way.

A variable's value comes from whoever opens the URL (`?var-indicator=...`), so it reaches SQL only
percent-encoded inside a string literal and is decoded by ClickHouse (decodeURLComponent, on both
dialects): the literal then holds nothing but letters, digits, `-_.~` and `%`, which no quote or
backslash can end. (``${var:sqlstring}`` doubles quotes but leaves backslashes, which ClickHouse
reads as escapes: a value could close the literal and run SQL of its own. docs/security.md.)
"""

from __future__ import annotations

from dataclasses import dataclass

from highland.catalog.models import Catalog
from highland.sinks.progress import city_level_sql, daily_sql

INDICATOR_VAR = "decodeURLComponent('${indicator:percentencode}')"


@dataclass(frozen=True)
class Sql:
    """What every query needs to know: the database, the plan's timezone and period."""

    db: str
    tz: str
    first_day: str  # YYYY-MM-DD, the first plan day
    last_day: str  # YYYY-MM-DD, the last plan day (the plan states nothing after it)

    @classmethod
    def for_catalog(cls, db: str, catalog: Catalog) -> Sql:
        plan = catalog.plan
        return cls(db, plan.timezone, f"{plan.baseline_year}-01-01", f"{plan.target_year}-12-31")

    def plan_day(self, moment: str) -> str:
        """The plan day of a DateTime expression, kept inside the plan period (like default_as_of)."""
        return (f"greatest(toDate('{self.first_day}'), least(toDate('{self.last_day}'), "
                f"toDate({moment}, '{self.tz}')))")

    @property
    def as_of_dashboard(self) -> str:
        """Dashboards read the plan as of the end of their time range (default: now)."""
        return self.plan_day("$__toTime")

    @property
    def as_of_now(self) -> str:
        """Alert rules have no time range: as of now, capped at the plan's last day."""
        return self.plan_day("now()")


# --- progress: actual vs. expected per (indicator, day) -------------------------------------------

def _series_days(q: Sql, kind_filter: str, extra: str = "1") -> str:
    """The per-day series (sinks/progress.py DAILY) of the indicators matching ``kind_filter``."""
    where = (f"indicator IN (SELECT indicator FROM {q.db}.plan_indicators_current WHERE {kind_filter}) "
             f"AND ({extra})")
    return daily_sql(q.db, where)


def _trajectory(q: Sql, columns: str, where: str) -> str:
    """Rows of plan_trajectory_current matching ``where``, read from the table itself: the view reads
    the whole newest version with FINAL before any filter applies (slow on 18.16:
    docs/clickhouse-dialect.md, "view-filter"), while
    this prunes by the primary key (version, indicator, day) first. LIMIT 1 BY does what FINAL did:
    a sync repeated after a crash wrote the same rows twice under one version."""
    return f"""
        SELECT {columns} FROM {q.db}.plan_trajectory
        WHERE version = (SELECT argMax(version, (seq, version)) FROM {q.db}.plan_versions) AND ({where})
        LIMIT 1 BY indicator, day"""


def _days(q: Sql, days_where: str, kind_filter: str) -> str:
    kinds = f"indicator IN (SELECT indicator FROM {q.db}.plan_indicators_current WHERE {kind_filter})"
    return _trajectory(q, "indicator, day", f"({days_where}) AND {kinds}")


def _flow_actuals(q: Sql, days_where: str, only: str) -> str:
    """Flows: the year-to-date sum, and the previous year's total (growth targets need it)."""
    return f"""
        SELECT indicator, day,
               sumIf(day_total, toYear(d) = toYear(day)) AS actual_value,
               sumIf(day_total, toYear(d) = toYear(day) - 1) AS prior_total,
               sumIf(day_n, toYear(d) = toYear(day) - 1) AS prior_n,
               sumIf(day_n, toYear(d) = toYear(day)) AS n_found,
               maxIf(day_last, day_n > 0) AS last_obs
        FROM ({_days(q, days_where, "kind = 'flow'")}) AS days
        ALL INNER JOIN (
            SELECT ind AS indicator, d, sum(n) AS day_n, sum(total) AS day_total, max(close_obs) AS day_last
            FROM ({_series_days(q, "kind = 'flow'", only)})
            GROUP BY indicator, d
        ) AS series USING indicator
        WHERE d <= day
        GROUP BY indicator, day"""


def _level_actuals(q: Sql, days_where: str, only: str) -> str:
    """Levels, indices, ratios: per region the close of the latest day at or before the day, combined
    as sinks/progress.py combines them (city_level_sql: never a city-wide report plus districts)
    (within a day the close is the latest by observed_at, revision, event_id: sinks/daily_series.py)."""
    return f"""
        SELECT indicator, day, {city_level_sql("latest_value")} AS actual_value,
               toFloat64(0) AS prior_total, toUInt64(0) AS prior_n,
               count() AS n_found, max(region_last_obs) AS last_obs
        FROM (
            SELECT indicator, day, reg,
                   argMax(close, d) AS latest_value,
                   max(close_obs) AS region_last_obs
            FROM ({_days(q, days_where, "kind != 'flow'")}) AS days
            ALL INNER JOIN (
                SELECT ind AS indicator, reg, d, close, close_obs
                FROM ({_series_days(q, "kind != 'flow'", only)})
                WHERE n > 0
            ) AS closes USING indicator
            WHERE d <= day
            GROUP BY indicator, day, reg
        )
        GROUP BY indicator, day"""


_PLAN_COLUMNS = ("name_en", "unit", "kind", "direction", "trajectory", "path_base", "path_base_year", "target",
                 "has_target", "target_year", "annual_growth", "on_track", "at_risk", "agency", "regional",
                 "cadence_days")


def _plan_days(q: Sql, days_where: str) -> str:
    """The chosen (indicator, day) pairs with the plan's numbers for them. ALL, not ANY: current
    ClickHouse's ANY INNER JOIN keeps one LEFT row per key too (18.16 kept them all;
    docs/clickhouse-dialect.md, "any-inner-join")."""
    return f"""
        SELECT indicator, day, expected AS plan_expected, has_expected, year_fraction, position,
               {', '.join(_PLAN_COLUMNS)}
        FROM ({_trajectory(q, "indicator, day, expected, has_expected, year_fraction, position", days_where)}) AS path
        ALL INNER JOIN (SELECT indicator, {', '.join(_PLAN_COLUMNS)} FROM {q.db}.plan_indicators_current) AS plan
        USING indicator"""


def _joined(q: Sql, days_where: str, only: str) -> str:
    """Plan rows with their actuals; a day without observations gets n_found = 0 (the join's default)."""
    columns = ("plan_expected", "has_expected", "year_fraction", "position", *_PLAN_COLUMNS)
    return f"""
        SELECT indicator, day, {', '.join(columns)}, actual_value, prior_total, prior_n, n_found, last_obs
        FROM ({_plan_days(q, days_where)}) AS plan_days
        ANY LEFT JOIN ({_flow_actuals(q, days_where, only)} UNION ALL {_level_actuals(q, days_where, only)}) AS actuals
        USING (indicator, day)"""


def _derived(q: Sql, days_where: str, only: str) -> str:
    """Flags and expected(D): growth targets take last year's actual x (1 + growth) x year elapsed."""
    return f"""
        SELECT *,
               n_found > 0 AS has_data,
               if(trajectory = 'growth', has_data AND prior_n > 0, has_expected = 1) AS has_exp,
               if(trajectory = 'growth', prior_total * (1 + annual_growth) * year_fraction, plan_expected)
                   AS expected_value,
               if(direction = 'down', expected_value, actual_value) AS perf_num,
               if(direction = 'down', actual_value, expected_value) AS perf_den,
               if(perf_den <= 0, if(perf_num >= perf_den, 1., 0.), perf_num / perf_den) AS performance,
               target_year - path_base_year AS span
        FROM ({_joined(q, days_where, only)})"""


def progress_sql(q: Sql, days_where: str, indicator: str | None = None) -> str:
    """CONTRACT.md §2 per (indicator, day) for the plan days matching ``days_where`` (a condition on
    plan_trajectory_current's indicator and day), of one ``indicator`` (an SQL expression) if given:
    then only its series are read. Mirrors sinks/progress.py: status, percent of target, projection;
    `behind_pct` = how far below its path (100 x (1 - performance)); ``last_observed`` = the latest
    report at or before the day in any year, ``stale_since`` = its day in the plan's calendar when
    that is more than the indicator's cadence before the day (catalog/domain.py is_stale)."""
    only = f"indicator = {indicator}" if indicator else "1"
    days_where = f"({days_where}) AND {only}"
    return f"""
        SELECT indicator, day, name_en, agency, unit, kind, regional,
               multiIf(NOT has_data, 'no_data', NOT has_exp, 'pending', performance >= on_track, 'on_track',
                       performance >= at_risk, 'at_risk', 'off_track') AS status,
               if(has_data AND has_exp, 100 * (1 - performance), NULL) AS behind_pct,
               if(has_data, actual_value, NULL) AS actual,
               if(has_exp, expected_value, NULL) AS expected,
               if(has_target = 1, target, NULL) AS target_value,
               target_year AS deadline,
               multiIf(NOT has_data OR has_target = 0, NULL,
                       direction = 'down', if(actual_value > 0, 100 * target / actual_value, NULL),
                       target != 0, 100 * actual_value / target, NULL) AS pct_of_target,
               multiIf(NOT has_data, NULL,
                       kind = 'flow', if(has_exp AND has_target = 1 AND expected_value > 0,
                                         target * (actual_value / expected_value), NULL),
                       trajectory = 'flat' OR has_target = 0, actual_value,
                       position <= 0 OR position >= span, actual_value,
                       path_base + (actual_value - path_base) * span / position) AS projected,
               if(toUInt32(last_obs) > 0, last_obs, NULL) AS last_observed,
               if(toUInt32(last_obs) > 0 AND toDate(last_obs, '{q.tz}') + cadence_days < day,
                  toDate(last_obs, '{q.tz}'), NULL) AS stale_since
        FROM ({_derived(q, days_where, only)})"""


SERIES_DAILY_DAYS = 92
STATUS_RANK = "indexOf(['off_track', 'at_risk', 'on_track', 'pending', 'no_data'], status)"


def overview_sql(q: Sql, as_of: str) -> str:
    """Plan overview: every indicator as of ``as_of``, the furthest behind first."""
    return f"""
        SELECT indicator, name_en, agency, status, pct_of_target, behind_pct, actual, expected,
               target_value AS target, unit, deadline, projected, last_observed, stale_since
        FROM ({progress_sql(q, f"day = {as_of}")})
        ORDER BY {STATUS_RANK}, behind_pct DESC, indicator"""


def status_counts_sql(q: Sql) -> str:
    """How many indicators are in each status as of the end of the time range."""
    return f"""
        SELECT countIf(status = 'off_track') AS off_track, countIf(status = 'at_risk') AS at_risk,
               countIf(status = 'on_track') AS on_track, countIf(status = 'pending') AS pending,
               countIf(status = 'no_data') AS no_data, countIf(stale_since IS NOT NULL) AS stale
        FROM ({progress_sql(q, f"day = {q.as_of_dashboard}")})"""


def indicator_now_sql(q: Sql) -> str:
    """The selected indicator as of the end of the time range (stat panels)."""
    return f"""
        SELECT status, pct_of_target, actual, expected, target_value AS target, projected, deadline,
               last_observed, stale_since
        FROM ({progress_sql(q, f"day = {q.as_of_dashboard}", INDICATOR_VAR)})"""


def indicator_series_sql(q: Sql) -> str:
    """actual(D) and expected(D) in the time range, the path to the target: every plan day for a range
    of up to SERIES_DAILY_DAYS, else each month's last day and the range's last day (a 5-year range
    is 61 points, not 1,826: each point reads all the series-days of its year before it)."""
    start, end = q.plan_day("$__fromTime"), q.as_of_dashboard
    days = (f"day >= {start} AND day <= {end} AND (toRelativeDayNum({end}) - toRelativeDayNum({start}) <= "
            f"{SERIES_DAILY_DAYS} OR toDayOfMonth(day + 1) = 1 OR day = {end})")
    return f"""
        SELECT toDateTime(day, '{q.tz}') AS time, actual, expected, target_value AS target
        FROM ({progress_sql(q, days, INDICATOR_VAR)})
        ORDER BY time"""


def indicator_projection_sql(q: Sql) -> str:
    """Two points: today's actual and the projected value at the deadline (end of target year), from
    one evaluation of the indicator's progress."""
    now = progress_sql(q, f"day = {q.as_of_dashboard}", INDICATOR_VAR)
    deadline = f"toDateTime(toDate(concat(toString(deadline), '-12-31')), '{q.tz}')"
    return f"""
        SELECT tupleElement(point, 1) AS time, tupleElement(point, 2) AS projection
        FROM (
            SELECT arrayJoin([tuple(toDateTime(day, '{q.tz}'), actual), tuple({deadline}, projected)]) AS point
            FROM ({now})
        )
        WHERE isNotNull(projection)
        ORDER BY time"""


def indicator_districts_sql(q: Sql) -> str:
    """Regional indicators: the latest value per district as of the end of the time range (their
    sum is the city's actual). Empty for indicators reported city-wide only."""
    return f"""
        SELECT district, name_en AS district_name, district_value, observed
        FROM (
            SELECT reg AS district, argMax(close, d) AS district_value, max(close_obs) AS observed
            FROM ({_series_days(q, "regional = 1", f"indicator = {INDICATOR_VAR} AND day <= {q.as_of_dashboard}")})
            WHERE n > 0
            GROUP BY district
        ) AS latest
        ANY LEFT JOIN (SELECT district, name_en FROM {q.db}.plan_districts_current) AS names USING district
        ORDER BY district_value DESC, district"""


def indicator_variable_sql(q: Sql) -> str:
    return f"SELECT indicator FROM {q.db}.plan_indicators_current ORDER BY indicator"


# --- feed health ----------------------------------------------------------------------------------

def events_per_minute_sql(q: Sql) -> str:
    """Arrivals per agency per minute (live windows of migration 0003: always sum, never trust a row)."""
    return f"""
        SELECT window_start AS time, agency, sum(events) AS arrivals
        FROM {q.db}.event_windows_1m
        WHERE $__timeFilter(window_start)
        GROUP BY time, agency
        ORDER BY time, agency"""


def feed_freshness_sql(q: Sql) -> str:
    """Per feed (an indicator from its owning agency): time since its last event, and whether that
    exceeds its cadence -- the same rule and minute precision as the worker's stale alerts
    (sinks/alerts.py last_arrivals, streams/alerts.py feed_alerts). `never`: nothing arrived yet."""
    return f"""
        SELECT indicator, agency, cadence_days,
               if(n_windows > 0, last_arrival, NULL) AS last_event,
               if(n_windows > 0, age_s, NULL) AS seconds_since,
               multiIf(n_windows = 0, 'never', age_s > cadence_days * 86400, 'stale', 'fresh') AS feed_state
        FROM (
            SELECT indicator, agency, cadence_days, last_arrival, n_windows,
                   toInt64(toUInt32(now())) - toInt64(toUInt32(last_arrival)) AS age_s
            FROM (SELECT indicator, agency, cadence_days FROM {q.db}.plan_indicators_current) AS feeds
            ANY LEFT JOIN (
                SELECT indicator, agency, max(window_start) AS last_arrival, count() AS n_windows
                FROM {q.db}.event_windows_1m
                GROUP BY indicator, agency
            ) AS arrivals USING (indicator, agency)
        )
        ORDER BY indexOf(['stale', 'fresh', 'never'], feed_state), seconds_since DESC, indicator"""


def _dead_letters(q: Sql, columns: str) -> str:
    """Each rejected event once, however often the worker re-read the dead-letter topic."""
    return f"""
        SELECT {columns} FROM {q.db}.dead_letters
        WHERE $__timeFilter(received_at)
        LIMIT 1 BY dlq_partition, dlq_offset"""


def dead_letters_by_reason_sql(q: Sql) -> str:
    return f"""
        SELECT reason, count() AS letters
        FROM ({_dead_letters(q, 'reason, dlq_partition, dlq_offset')})
        GROUP BY reason
        ORDER BY letters DESC, reason"""


def dead_letters_per_hour_sql(q: Sql) -> str:
    return f"""
        SELECT toStartOfHour(received_at, '{q.tz}') AS time, reason, count() AS letters
        FROM ({_dead_letters(q, 'received_at, reason, dlq_partition, dlq_offset')})
        GROUP BY time, reason
        ORDER BY time, reason"""


# --- alerts ---------------------------------------------------------------------------------------

def alerts_timeline_sql(q: Sql) -> str:
    """Status changes and stale feeds, newest first, each alert once (it may be stored twice)."""
    return f"""
        SELECT created_at AS time, kind, indicator, agency, old_status, new_status, detail, alert_id
        FROM {q.db}.alerts
        WHERE $__timeFilter(created_at)
        ORDER BY created_at DESC, seq DESC
        LIMIT 1 BY alert_id
        LIMIT 1000"""


def alerts_per_day_sql(q: Sql) -> str:
    return f"""
        SELECT toStartOfDay(created_at, '{q.tz}') AS time, new_status, count() AS alerts_count
        FROM (SELECT created_at, new_status, alert_id FROM {q.db}.alerts
              WHERE $__timeFilter(created_at) LIMIT 1 BY alert_id)
        GROUP BY time, new_status
        ORDER BY time, new_status"""


# --- Grafana alert rules (no time range, no template variables) -----------------------------------

def rule_status_sql(q: Sql, status: str) -> str:
    """1 per indicator whose status is ``status`` now, else 0; one series per indicator, labelled
    by indicator and agency (Grafana turns each row of a table result into a series)."""
    return f"""
        SELECT indicator, agency, toFloat64(status = '{status}') AS firing
        FROM ({progress_sql(q, f"day = {q.as_of_now}")})
        ORDER BY indicator"""


def rule_stale_sql(q: Sql) -> str:
    return f"""
        SELECT indicator, agency, toFloat64(feed_state = 'stale') AS firing
        FROM ({feed_freshness_sql(q)})
        ORDER BY indicator"""
