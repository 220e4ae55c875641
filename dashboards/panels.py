"""Small builders for the parts of Grafana's dashboard model (schemaVersion 42) Highland uses.

Plain dicts, shaped to the model's JSON Schema (tests/schemas/dashboard.schema.json validates the
result). Every query targets the official ClickHouse plugin by a stable datasource uid, so the
dashboards work wherever a datasource with that uid exists (build.py provisions it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 42
DATASOURCE_TYPE = "grafana-clickhouse-datasource"
DATASOURCE_UID = "highland-clickhouse"
DATASOURCE = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}

# sqlds' result formats (grafana-plugin-sdk-go sqlutil.FormatQueryOption) and the plugin's queryType.
FORMAT_TIME_SERIES, FORMAT_TABLE = 0, 1

STATUS_COLOURS = {"on_track": ("on track", "green"), "at_risk": ("at risk", "orange"),
                  "off_track": ("off track", "red"), "pending": ("baseline pending", "#5794f2"),
                  "no_data": ("no data", "#8e8e8e")}
FEED_COLOURS = {"fresh": ("fresh", "green"), "stale": ("stale", "red"), "never": ("never reported", "#8e8e8e")}

Json = dict[str, Any]


def tidy(sql: str) -> str:
    """The SQL without blank lines or trailing spaces (the builders' f-strings leave some)."""
    return "\n".join(line.rstrip() for line in sql.strip().splitlines() if line.strip())


def query(sql: str, ref_id: str = "A", time_series: bool = False) -> Json:
    """One SQL target of the ClickHouse plugin (raw SQL editor)."""
    return {
        "refId": ref_id,
        "datasource": DATASOURCE,
        "editorType": "sql",
        "rawSql": tidy(sql),
        "format": FORMAT_TIME_SERIES if time_series else FORMAT_TABLE,
        "queryType": "timeseries" if time_series else "table",
    }


def value_mapping(colours: dict[str, tuple[str, str]]) -> list[Json]:
    options = {value: {"text": text, "color": colour, "index": i}
               for i, (value, (text, colour)) in enumerate(colours.items())}
    return [{"type": "value", "options": options}]


def override(column: str, **properties: Any) -> Json:
    """Field properties for one column, e.g. override('status', **{'custom.width': 90})."""
    return {"matcher": {"id": "byName", "options": column},
            "properties": [{"id": key, "value": value} for key, value in properties.items()]}


def coloured_column(column: str, colours: dict[str, tuple[str, str]]) -> Json:
    """A table column whose cells take the colour of their value (status, feed state)."""
    return override(column, mappings=value_mapping(colours),
                    **{"custom.cellOptions": {"type": "color-background", "mode": "basic"}})


def field_defaults(unit: str | None = None, decimals: int | None = None, **custom: Any) -> Json:
    defaults: Json = {"custom": custom, "mappings": [],
                      "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]}}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    return defaults


@dataclass
class Grid:
    """Places panels left to right, wrapping at Grafana's 24 columns."""

    x: int = 0
    y: int = 0
    row_height: int = 0
    next_id: int = 1
    panels: list[Json] = field(default_factory=list)

    def add(self, panel: Json, w: int, h: int) -> Json:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)
        return panel


def _panel(kind: str, title: str, description: str, targets: list[Json], defaults: Json,
           overrides: list[Json] | None, options: Json) -> Json:
    return {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options}


def table(title: str, description: str, sql: str, overrides: list[Json] | None = None,
          sort_by: str | None = None, descending: bool = True, no_value: str | None = None) -> Json:
    defaults = field_defaults(align="auto", cellOptions={"type": "auto"}, filterable=True)
    if no_value:
        defaults["noValue"] = no_value
    options: Json = {"showHeader": True, "cellHeight": "sm",
                     "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": descending}]
    return _panel("table", title, description, [query(sql)], defaults, overrides, options)


def timeseries(title: str, description: str, targets: list[Json], unit: str | None = None,
               overrides: list[Json] | None = None, bars: bool = False, stacked: bool = False) -> Json:
    defaults = field_defaults(unit, drawStyle="bars" if bars else "line", lineWidth=2, fillOpacity=10 if bars else 0,
                              showPoints="never", spanNulls=False,
                              stacking={"mode": "normal" if stacked else "none", "group": "A"})
    options = {"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return _panel("timeseries", title, description, targets, defaults, overrides, options)


def stat(title: str, description: str, sql: str, column: str, unit: str | None = None,
         colours: dict[str, tuple[str, str]] | None = None, fixed_colour: str | None = None) -> Json:
    """One value of one column; coloured by its value (``colours``) or in one colour."""
    defaults = field_defaults(unit)
    if colours:
        defaults["mappings"] = value_mapping(colours)
        defaults["color"] = {"mode": "thresholds"}
    elif fixed_colour:
        defaults["color"] = {"mode": "fixed", "fixedColor": fixed_colour}
    coloured = bool(colours or fixed_colour)
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": f"/^{column}$/", "values": False},
               "colorMode": "background" if coloured else "none", "graphMode": "none", "textMode": "value",
               "justifyMode": "auto", "orientation": "auto", "wideLayout": True, "showPercentChange": False}
    return _panel("stat", title, description, [query(sql)], defaults, None, options)


def barchart(title: str, description: str, sql: str, x_field: str, unit: str | None = None) -> Json:
    defaults = field_defaults(unit, fillOpacity=80, lineWidth=1, gradientMode="none")
    options = {"xField": x_field, "orientation": "horizontal", "showValue": "auto", "stacking": "none",
               "barWidth": 0.8, "groupWidth": 0.7, "xTickLabelRotation": 0, "xTickLabelSpacing": 0,
               "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom", "calcs": []},
               "tooltip": {"mode": "single", "sort": "none"}}
    return _panel("barchart", title, description, [query(sql)], defaults, None, options)


def dashboard(uid: str, title: str, description: str, panels: list[Json], *, time_from: str, time_to: str,
              timezone: str, variables: list[Json] | None = None, refresh: str = "1m",
              links: list[Json] | None = None) -> Json:
    """A bare dashboard model (what a file provider loads; no `dashboard` wrapper)."""
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["highland"],
        "timezone": timezone,
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": time_to},
        "timepicker": {},
        "templating": {"list": variables or []},
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
            "type": "dashboard"}]},
        "links": links or [],
        "panels": panels,
    }


def dashboards_link() -> Json:
    """Links to the other Highland dashboards (by tag), keeping the time range."""
    return {"title": "Highland", "type": "dashboards", "icon": "external link", "tooltip": "", "tags": ["highland"],
            "asDropdown": True, "targetBlank": False, "includeVars": False, "keepTime": True, "url": ""}


def query_variable(name: str, label: str, sql: str) -> Json:
    """A single-value variable filled by a ClickHouse query (one column: the values)."""
    return {"type": "query", "name": name, "label": label, "datasource": DATASOURCE,
            "query": {"refId": f"{name}-values", "editorType": "sql", "rawSql": tidy(sql),
                      "format": FORMAT_TABLE, "queryType": "table"},
            "refresh": 1, "sort": 1, "multi": False, "includeAll": False, "hide": 0, "options": [],
            "current": {"text": "", "value": ""}}
