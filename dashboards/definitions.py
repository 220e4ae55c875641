"""The four Highland dashboards, as Grafana dashboard models (see docs/dashboards.md).

uids are stable: publishing overwrites by uid, and links between dashboards use them.
"""

from __future__ import annotations

from collections.abc import Callable

from highland.dashboards import panels as p
from highland.dashboards import queries as q
from highland.dashboards.panels import Json

OVERVIEW_UID = "highland-overview"
INDICATOR_UID = "highland-indicator"
FEEDS_UID = "highland-feeds"
ALERTS_UID = "highland-alerts"

# The plan's own period: the indicator page opens on all of it (the projection reaches the deadline).
PLAN_RANGE = {"time_from": "2015-01-01T00:00:00+08:00", "time_to": "2021-01-01T00:00:00+08:00"}
LIVE_RANGE = {"time_from": "now-6h", "time_to": "now"}


def overview(sql: q.Sql) -> Json:
    grid = p.Grid()
    counts = q.status_counts_sql(sql)
    for column, (text, colour) in p.STATUS_COLOURS.items():
        grid.add(p.stat(f"Indicators {text}", f"Indicators whose status is {text} as of the end of the time "
                        "range (capped at the plan's last day).", counts, column, fixed_colour=colour), w=6, h=4)
    grid.add(p.stat("Feeds stopped", "Indicators whose latest report is more than their reporting cadence "
                    "(catalog cadence_days) before the end of the time range; they may keep an older status.",
                    counts, "stale", fixed_colour="red"), w=6, h=4)
    link = {"title": "Open the indicator page",
            "url": f"/d/{INDICATOR_UID}/highland-indicator?var-indicator=${{__value.raw}}&${{__url_time_range}}"}
    overrides = [
        p.coloured_column("status", p.STATUS_COLOURS),
        p.override("indicator", links=[link]),
        p.override("pct_of_target", unit="percent", decimals=1),
        p.override("behind_pct", unit="percent", decimals=1, **{"displayName": "behind path %"}),
        p.override("last_observed", unit="dateTimeAsIso"),
        p.override("stale_since", unit="time:YYYY-MM-DD", **{
            "displayName": "stopped since", "custom.cellOptions": {"type": "color-text"},
            "color": {"mode": "fixed", "fixedColor": "red"}}),
    ]
    grid.add(p.table(
        "Every indicator vs. its plan",
        "Actual vs. the plan's expected value as of the end of the time range (capped at 2020-12-31, like "
        "`highland progress`). behind path % = 100 × (1 − actual/expected), inverted where lower is better: "
        "the furthest behind first. deadline = the target year.",
        q.overview_sql(sql, sql.as_of_dashboard), overrides, sort_by="behind path %"), w=24, h=22)
    return p.dashboard(OVERVIEW_UID, "Highland — plan overview",
                       "Every indicator of the plan as percent of its target, with its status.", grid.panels,
                       timezone=sql.tz, links=[p.dashboards_link()], **LIVE_RANGE)


def indicator(sql: q.Sql) -> Json:
    grid = p.Grid()
    now = q.indicator_now_sql(sql)
    grid.add(p.stat("Status", "As of the end of the time range.", now, "status", colours=p.STATUS_COLOURS),
             w=4, h=4)
    numbers = (("pct_of_target", "Percent of target", "percent"), ("actual", "Actual", None),
               ("expected", "Expected (plan path)", None), ("projected", "Projected at deadline", None),
               ("deadline", "Deadline (target year)", None))
    for column, title, unit in numbers:
        grid.add(p.stat(title, "As of the end of the time range; projected = the value at the end of the "
                        "target year if the current pace holds.", now, column, unit), w=4, h=4)
    grid.add(p.stat("Last report", "The latest observation at or before the end of the time range, any year.",
                    now, "last_observed", "dateTimeAsIso"), w=12, h=4)
    grid.add(p.stat("Stopped reporting since", "The day of the last report when it is more than the "
                    "indicator's reporting cadence before the end of the time range; empty while it reports.",
                    now, "stale_since", "time:YYYY-MM-DD", fixed_colour="red"), w=12, h=4)
    dashed = {"fill": "dash", "dash": [10, 10]}
    grid.add(p.timeseries(
        "Actual vs. the plan's path to the target",
        "actual(D) and expected(D) for every day of a range up to 92 days, else for each month's last day "
        "(flows: year to date, so both restart each January), "
        "the target, and the projection from today's actual to the deadline.",
        [p.query(q.indicator_series_sql(sql), "A", time_series=True),
         p.query(q.indicator_projection_sql(sql), "B", time_series=True)],
        overrides=[p.override("expected", **{"custom.lineStyle": dashed}),
                   p.override("target", **{"custom.lineStyle": {"fill": "dot", "dash": [0, 10]}}),
                   p.override("projection", **{"custom.lineStyle": dashed, "custom.showPoints": "always"})]),
        w=24, h=12)
    grid.add(p.table(
        "By district (regional indicators)",
        "The latest value per district at the end of the time range; their sum is the city's actual. "
        "Empty for indicators reported city-wide only.",
        q.indicator_districts_sql(sql), [p.override("observed", unit="dateTimeAsIso")],
        sort_by="district_value", no_value="city-wide indicator: no district breakdown"), w=24, h=12)
    variable = p.query_variable("indicator", "Indicator", q.indicator_variable_sql(sql))
    return p.dashboard(INDICATOR_UID, "Highland — indicator",
                       "One indicator: actual vs. the plan's trajectory, projection, districts.", grid.panels,
                       timezone=sql.tz, variables=[variable], refresh="5m", links=[p.dashboards_link()],
                       **PLAN_RANGE)


def feeds(sql: q.Sql) -> Json:
    grid = p.Grid()
    grid.add(p.timeseries("Events per agency per minute",
                          "Accepted events by the minute the worker received them (live windows; revisions "
                          "count as arrivals).",
                          [p.query(q.events_per_minute_sql(sql), time_series=True)], unit="short",
                          bars=True, stacked=True), w=24, h=9)
    grid.add(p.table("Freshness per feed",
                     "Time since the last event of each indicator from its agency; stale = longer than its "
                     "cadence (the rule of the worker's stale-feed alerts).",
                     q.feed_freshness_sql(sql),
                     [p.coloured_column("feed_state", p.FEED_COLOURS),
                      p.override("seconds_since", unit="s"), p.override("last_event", unit="dateTimeAsIso")]),
             w=14, h=16)
    grid.add(p.barchart("Dead letters by reason", "Rejected events in the time range, each counted once.",
                        q.dead_letters_by_reason_sql(sql), "reason", unit="short"), w=10, h=8)
    grid.add(p.timeseries("Dead letters per hour", "Rejected events per hour and reason.",
                          [p.query(q.dead_letters_per_hour_sql(sql), time_series=True)], unit="short",
                          bars=True, stacked=True), w=10, h=8)
    return p.dashboard(FEEDS_UID, "Highland — feed health",
                       "What arrives, what is late, what is rejected.", grid.panels, timezone=sql.tz,
                       refresh="30s", links=[p.dashboards_link()], **LIVE_RANGE)


def alerts(sql: q.Sql) -> Json:
    grid = p.Grid()
    grid.add(p.timeseries("Alerts per day", "Status changes and stale / fresh feeds per day, by new state.",
                          [p.query(q.alerts_per_day_sql(sql), time_series=True)], unit="short", bars=True,
                          stacked=True), w=24, h=8)
    grid.add(p.table("Alerts, newest first", "Every alert the worker raised in the time range, once.",
                     q.alerts_timeline_sql(sql),
                     [p.coloured_column("new_status", {**p.STATUS_COLOURS, **p.FEED_COLOURS}),
                      p.override("time", unit="dateTimeAsIso")], sort_by="time"), w=24, h=16)
    return p.dashboard(ALERTS_UID, "Highland — alerts", "Status changes and stale feeds over time.",
                       grid.panels, timezone=sql.tz, refresh="1m", links=[p.dashboards_link()],
                       time_from="now-30d", time_to="now")


BUILDERS: dict[str, Callable[[q.Sql], Json]] = {
    OVERVIEW_UID: overview, INDICATOR_UID: indicator, FEEDS_UID: feeds, ALERTS_UID: alerts,
}


def all_dashboards(sql: q.Sql) -> list[Json]:
    return [build(sql) for build in BUILDERS.values()]
