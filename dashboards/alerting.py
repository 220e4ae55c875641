"""Grafana unified-alerting rules, contact points and notification policies for Highland.

Each rule runs one SQL query against ClickHouse that returns one row per indicator: string columns
(indicator, agency) become the series' labels and the numeric column `firing` (1 or 0) its value,
so one rule yields one alert instance per indicator, labelled with the owning agency for routing.

The rule model here is the provisioning API's (what publish.py sends, validated in tests against the
SDK's alerting Rule schema); `file_groups` reshapes it into the provisioning file format.
The rule SQL contains no `$`: Grafana interpolates environment variables in provisioning files.
Each rule links to the dashboard panel that shows what it fires on (the annotations
``__dashboardUid__`` and ``__panelId__``, which Grafana accepts only together), so a notification and
Grafana's alert list open the right view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from highland.catalog.models import Catalog
from highland.dashboards import definitions
from highland.dashboards import queries as q
from highland.dashboards.panels import DATASOURCE_UID, query, tidy

Json = dict[str, Any]
FOLDER_UID = "highland"
FOLDER_TITLE = "Highland"
RULE_GROUP = "highland-plan"
GROUP_INTERVAL_S = 60
EXPRESSION = {"type": "__expr__", "uid": "__expr__"}
DUTY_RECEIVER = "highland-duty"


@dataclass(frozen=True)
class RuleSpec:
    uid: str
    title: str
    sql: str
    severity: str
    summary: str
    dashboard_uid: str
    panel_id: int


def panel_id(board: Json, sql: str) -> int:
    """The id of the one panel of ``board`` whose query is ``sql`` (found by what it shows, not by
    its title, which is translated)."""
    [found] = [panel["id"] for panel in board["panels"]
               if any(t.get("rawSql") == tidy(sql) for t in panel.get("targets", []))]
    return int(found)


def _link(sql: q.Sql, dashboard_uid: str, panel_sql: Callable[[q.Sql], str]) -> tuple[str, int]:
    return dashboard_uid, panel_id(definitions.BUILDERS[dashboard_uid](sql), panel_sql(sql))


def rule_specs(sql: q.Sql) -> list[RuleSpec]:
    which = '{{ index .Labels "indicator" }} ({{ index .Labels "agency" }})'
    plan = _link(sql, definitions.OVERVIEW_UID, lambda s: q.overview_sql(s, s.as_of_dashboard))
    feeds = _link(sql, definitions.FEEDS_UID, q.feed_freshness_sql)
    return [
        RuleSpec("highland-off-track", "Indicator off track", q.rule_status_sql(sql, "off_track"), "critical",
                 f"{which} is off track: below the at-risk threshold of its plan path.", *plan),
        RuleSpec("highland-at-risk", "Indicator at risk", q.rule_status_sql(sql, "at_risk"), "warning",
                 f"{which} is at risk: between the at-risk and on-track thresholds of its plan path.", *plan),
        RuleSpec("highland-stale-feed", "Feed stale", q.rule_stale_sql(sql), "warning",
                 f"{which}: no event for longer than the feed's cadence.", *feeds),
    ]


def _data(spec: RuleSpec) -> list[Json]:
    model = {**query(spec.sql, "A"), "intervalMs": 60_000, "maxDataPoints": 43_200}
    threshold = {"refId": "C", "type": "threshold", "expression": "A", "datasource": EXPRESSION,
                 "conditions": [{"evaluator": {"type": "gt", "params": [0.5]}}]}
    # The SQL ignores the time range (it reads "now"); Grafana still wants one per query.
    return [
        {"refId": "A", "datasourceUid": DATASOURCE_UID, "relativeTimeRange": {"from": 600, "to": 0},
         "model": model},
        {"refId": "C", "datasourceUid": EXPRESSION["uid"], "relativeTimeRange": {"from": 0, "to": 0},
         "model": threshold},
    ]


def api_rule(spec: RuleSpec) -> Json:
    """One rule in the provisioning API's model (POST/PUT /api/v1/provisioning/alert-rules)."""
    return {
        "uid": spec.uid,
        "title": spec.title,
        "orgID": 1,
        "folderUID": FOLDER_UID,
        "ruleGroup": RULE_GROUP,
        "condition": "C",
        "data": _data(spec),
        # No rows at all means the plan tables are missing: worth an alert of its own.
        "noDataState": "NoData",
        "execErrState": "Error",
        "for": "5m",
        "isPaused": False,
        "labels": {"team": "highland", "severity": spec.severity},
        "annotations": {"summary": spec.summary, "__dashboardUid__": spec.dashboard_uid,
                        "__panelId__": str(spec.panel_id)},
    }


def api_rules(sql: q.Sql) -> list[Json]:
    return [api_rule(spec) for spec in rule_specs(sql)]


FILE_ONLY_DROPPED = ("orgID", "folderUID", "ruleGroup")


def file_groups(rules: list[Json]) -> Json:
    """The provisioning file (provisioning/alerting/rules.yaml) holding the same rules."""
    return {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": RULE_GROUP, "folder": FOLDER_TITLE, "interval": f"{GROUP_INTERVAL_S}s",
        "rules": [{k: v for k, v in rule.items() if k not in FILE_ONLY_DROPPED} for rule in rules],
    }]}


def agency_receiver(agency: str) -> str:
    return f"highland-agency-{agency}"


def _env(name: str) -> str:
    """An environment reference Grafana expands when it loads the file (never the value itself)."""
    return f"${name}"


def contact_points(catalog: Catalog) -> Json:
    """The duty contact point has no integrations (Grafana sends nothing through it): the worker is
    the one sender of duty notifications, one per status change (streams/notify.py, docs/alerts.md),
    and a Grafana webhook or robot here would tell duty staff every change twice, in another format
    and again every repeat interval. The rules still evaluate and show in Grafana's alert views.
    Each agency keeps an e-mail contact point (addresses from the environment, one variable per
    agency): its own mailbox, which the worker does not write to."""
    points: list[Json] = [{"orgId": 1, "name": DUTY_RECEIVER, "receivers": []}]
    for agency in catalog.agencies:
        points.append({"orgId": 1, "name": agency_receiver(agency.code), "receivers": [{
            "uid": f"highland-{agency.code}-email"[:40], "type": "email", "disableResolveMessage": False,
            "settings": {"addresses": _env(f"HIGHLAND_ALERT_EMAIL_{agency.code.upper()}")}}]})
    return {"apiVersion": 1, "contactPoints": points}


def notification_policies(catalog: Catalog) -> Json:
    """Every Highland alert reaches the duty contact point, which sends nothing (the worker notifies
    duty staff: contact_points); each agency's mailbox gets the alerts labelled with it.
    Note: a provisioned policy tree REPLACES the organisation's whole tree."""
    routes = [{"receiver": DUTY_RECEIVER, "object_matchers": [["team", "=", "highland"]], "continue": True}]
    routes += [{"receiver": agency_receiver(a.code), "object_matchers": [["agency", "=", a.code]],
                "continue": True} for a in catalog.agencies]
    return {"apiVersion": 1, "policies": [{
        "orgId": 1, "receiver": DUTY_RECEIVER, "group_by": ["alertname", "agency"], "group_wait": "30s",
        "group_interval": "5m", "repeat_interval": "4h", "routes": routes}]}
