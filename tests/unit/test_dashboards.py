"""Dashboards as code, without Grafana: the models against Grafana's published schema (vendored from
the foundation SDK, tests/schemas/README.md), the rules against the SDK's alert-rule schema, the
provisioning files, and the macro expansion the integration tests rely on."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from highland.catalog.loader import default_catalog
from highland.dashboards import alerting, definitions
from highland.dashboards.build import build_all, sql_for
from highland.dashboards.macros import MacroError, TimeRange, expand, expand_macros, interpolate_variables
from highland.dashboards.panels import DATASOURCE, SCHEMA_VERSION
from highland.dashboards.pipeline import PIPELINE_UID

from highland.settings import Settings

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SETTINGS = Settings(clickhouse_database="highland_db", clickhouse_reader_user="grafana_ro",
                    clickhouse_reader_password="reader-secret-7f3a", grafana_token="token-secret-91c2")


def _validator(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def boards() -> list[dict[str, Any]]:
    return definitions.all_dashboards(sql_for(SETTINGS, default_catalog()))


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return alerting.api_rules(sql_for(SETTINGS, default_catalog()))


def _errors(validator: jsonschema.Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


# --- the models ------------------------------------------------------------------------------------

def test_every_dashboard_validates_against_grafanas_dashboard_schema(boards: list[dict[str, Any]]):
    validator = _validator("dashboard.schema.json")
    for board in boards:
        assert _errors(validator, board) == [], board["uid"]


@pytest.mark.parametrize("break_it", [
    lambda b: b["panels"][0]["gridPos"].pop("w"),
    lambda b: b["panels"][0].update(fieldConfig={"defaults": {}, "overrides": [], "colour": "red"}),
    lambda b: b["panels"][0]["targets"][0].pop("refId"),
    lambda b: b.pop("annotations"),
    lambda b: b["panels"][0]["fieldConfig"]["defaults"].update(mappings=[{"type": "value", "options": 3}]),
])
def test_the_schema_rejects_a_broken_dashboard(boards: list[dict[str, Any]], break_it: Any):
    broken = copy.deepcopy(boards[0])
    break_it(broken)
    assert _errors(_validator("dashboard.schema.json"), broken)


def _lost(original: Any, again: Any, path: str = "") -> list[str]:
    """Paths of `original` that `again` lacks or holds with another value (additions are fine)."""
    if isinstance(original, dict) and isinstance(again, dict):
        return [p for key, value in original.items()
                for p in ([f"{path}.{key}"] if key not in again else _lost(value, again[key], f"{path}.{key}"))]
    if isinstance(original, list) and isinstance(again, list) and len(original) == len(again):
        return [p for i, (a, b) in enumerate(zip(original, again, strict=True)) for p in _lost(a, b, f"{path}[{i}]")]
    return [] if original == again else [path]


def test_the_official_python_sdk_loads_every_dashboard_without_losing_a_field(boards: list[dict[str, Any]]):
    """Round trip through grafana-foundation-sdk's Dashboard model: a field it does not know would be
    dropped. Only `id` (null) and the built-in annotation's `builtIn` flag (absent from SDK 10.1) go."""
    for board in boards:
        again = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
        builtin = [f".annotations.list[{i}].builtIn" for i in range(len(board["annotations"]["list"]))]
        assert _lost(board, again) == [".id", *builtin], board["uid"]


def test_dashboards_have_stable_uids_schema_42_and_query_the_clickhouse_plugin(boards: list[dict[str, Any]]):
    assert [b["uid"] for b in boards] == [definitions.OVERVIEW_UID, definitions.INDICATOR_UID,
                                          definitions.FEEDS_UID, definitions.ALERTS_UID]
    for board in boards:
        assert board["schemaVersion"] == SCHEMA_VERSION == 42
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"] == DATASOURCE
            assert panel["targets"] and all(t["datasource"] == DATASOURCE and t["editorType"] == "sql"
                                            for t in panel["targets"])
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24


def test_indicator_page_has_the_indicator_variable_and_overview_links_to_it(boards: list[dict[str, Any]]):
    overview, indicator = boards[0], boards[1]
    assert [v["name"] for v in indicator["templating"]["list"]] == ["indicator"]
    assert all("decodeURLComponent('${indicator:percentencode}')" in t["rawSql"] and "sqlstring" not in t["rawSql"]
               for p in indicator["panels"] for t in p["targets"])
    table = next(p for p in overview["panels"] if p["type"] == "table")
    links = [prop["value"] for o in table["fieldConfig"]["overrides"] for prop in o["properties"]
             if prop["id"] == "links"]
    assert f"/d/{definitions.INDICATOR_UID}/" in links[0][0]["url"]
    assert table["options"]["sortBy"] == [{"displayName": "behind path %", "desc": True}]


FORBIDDEN = re.compile(r"toStartOfInterval|WITH\s+FILL|\bOVER\s*\(|JSONExtract|LowCardinality|\$__timeInterval",
                       re.IGNORECASE)


def _all_sql(boards: list[dict[str, Any]], rules: list[dict[str, Any]]) -> list[str]:
    sql = [t["rawSql"] for b in boards for p in b["panels"] for t in p["targets"]]
    sql += [v["query"]["rawSql"] for b in boards for v in b["templating"]["list"]]
    return sql + [r["data"][0]["model"]["rawSql"] for r in rules]


def test_no_statement_uses_what_clickhouse_18_16_lacks(boards: list[dict[str, Any]], rules: list[dict[str, Any]]):
    statements = _all_sql(boards, rules)
    assert len(statements) >= 18
    for sql in statements:
        assert not FORBIDDEN.search(sql), sql[:200]
        assert "highland_db." in sql  # the configured database, rendered at build time


# --- alert rules -------------------------------------------------------------------------------------

def test_alert_rules_validate_against_the_sdk_rule_schema(rules: list[dict[str, Any]]):
    validator = _validator("alert-rule.schema.json")
    for rule in rules:
        assert _errors(validator, rule) == [], rule["uid"]
    broken = {k: v for k, v in rules[0].items() if k != "condition"}
    assert _errors(validator, broken)


def test_alert_rules_are_labelled_for_routing_and_condition_on_the_query(rules: list[dict[str, Any]]):
    assert [r["uid"] for r in rules] == ["highland-off-track", "highland-at-risk", "highland-stale-feed"]
    for rule in rules:
        query, threshold = rule["data"]
        assert query["datasourceUid"] == DATASOURCE["uid"] and query["model"]["format"] == 1
        assert threshold["model"]["expression"] == "A" and rule["condition"] == threshold["refId"]
        assert rule["labels"]["team"] == "highland" and rule["labels"]["severity"] in {"critical", "warning"}
        # the SQL returns indicator and agency as string columns: Grafana makes them the labels
        assert query["model"]["rawSql"].startswith("SELECT indicator, agency, ")


# --- provisioning files ------------------------------------------------------------------------------

def test_build_writes_every_provisioning_file_and_no_secret(tmp_path: Path):
    written = build_all(SETTINGS, tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == sorted([
        "provisioning/datasources/clickhouse.yaml", "provisioning/dashboards/highland.yaml",
        "provisioning/alerting/rules.yaml", "provisioning/alerting/contact-points.yaml",
        "provisioning/alerting/notification-policies.yaml", *(f"{kind}/{uid}.json" for kind in ("dashboards", "import")
                                                              for uid in (*definitions.BUILDERS, PIPELINE_UID))])
    text = "".join(p.read_text(encoding="utf-8") for p in written)
    assert "reader-secret-7f3a" not in text and "token-secret-91c2" not in text

    source = yaml.safe_load((tmp_path / "provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    assert source["type"] == "grafana-clickhouse-datasource" and source["uid"] == DATASOURCE["uid"]
    assert source["jsonData"]["username"] == "grafana_ro"  # the read-only user, never the writer
    assert source["jsonData"]["defaultDatabase"] == "highland_db"
    assert source["secureJsonData"] == {"password": "$HIGHLAND_CLICKHOUSE_READER_PASSWORD"}

    provider = yaml.safe_load((tmp_path / "provisioning/dashboards/highland.yaml").read_text())["providers"][0]
    assert provider["type"] == "file"  # its path and folder: tests/unit/test_grafana_provisioning.py
    # Grafana expands $VARS in provisioning files: the rules must carry none
    assert "$" not in (tmp_path / "provisioning/alerting/rules.yaml").read_text()


def test_build_is_deterministic(tmp_path: Path):
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in build_all(SETTINGS, tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in build_all(SETTINGS, tmp_path / "b")}
    assert first == second  # no file names the folder it was built in


def test_rules_file_holds_the_api_rules_in_file_form(tmp_path: Path, rules: list[dict[str, Any]]):
    build_all(SETTINGS, tmp_path)
    group = yaml.safe_load((tmp_path / "provisioning/alerting/rules.yaml").read_text())["groups"][0]
    assert group["folder"] == alerting.FOLDER_TITLE and group["interval"] == "60s"
    assert [r["uid"] for r in group["rules"]] == [r["uid"] for r in rules]
    assert group["rules"][0]["data"] == rules[0]["data"]


def test_policies_route_each_agency_to_its_contact_point(tmp_path: Path):
    build_all(SETTINGS, tmp_path)
    catalog = default_catalog()
    points = yaml.safe_load((tmp_path / "provisioning/alerting/contact-points.yaml").read_text())["contactPoints"]
    tree = yaml.safe_load((tmp_path / "provisioning/alerting/notification-policies.yaml").read_text())["policies"][0]
    names = {p["name"] for p in points}
    for agency in catalog.agencies:
        route = next(r for r in tree["routes"] if r["object_matchers"] == [["agency", "=", agency.code]])
        assert route["receiver"] in names
    assert tree["receiver"] in names and "agency" in tree["group_by"]


# --- macros ------------------------------------------------------------------------------------------

RANGE = TimeRange(datetime(2020, 6, 1, tzinfo=UTC), datetime(2020, 6, 2, 12, 30, tzinfo=UTC), interval_s=300)
FROM_S, TO_S = 1590969600, 1591101000


def test_macros_expand_like_the_clickhouse_plugin():
    assert expand_macros("WHERE $__timeFilter(window_start)", RANGE) == \
        f"WHERE window_start >= toDateTime({FROM_S}) AND window_start <= toDateTime({TO_S})"
    assert expand_macros("$__fromTime, $__toTime", RANGE) == f"toDateTime({FROM_S}), toDateTime({TO_S})"
    assert expand_macros("$__timeFilter_ms(t)", RANGE) == \
        f"t >= fromUnixTimestamp64Milli({FROM_S}000) AND t <= fromUnixTimestamp64Milli({TO_S}000)"
    assert expand_macros("$__dateFilter(d)", RANGE) == "d >= toDate('2020-06-01') AND d <= toDate('2020-06-02')"
    assert expand_macros("intDiv(toUInt32(t), $__interval_s) * $__interval_s", RANGE) == \
        "intDiv(toUInt32(t), 300) * 300"
    assert expand_macros("$__timeFilter(toDateTime(x, 'UTC'))", RANGE) == \
        f"toDateTime(x, 'UTC') >= toDateTime({FROM_S}) AND toDateTime(x, 'UTC') <= toDateTime({TO_S})"


@pytest.mark.parametrize("sql", ["$__timeInterval(t)", "$__timeInterval_ms(t)", "$__nosuch", "$__timeFilter()",
                                 "$__timeFilter(t"])
def test_macros_refuse_what_the_plugin_or_18_16_cannot_do(sql: str):
    with pytest.raises(MacroError):
        expand_macros(sql, RANGE)


def test_variables_interpolate_like_grafana():
    values = {"indicator": "o'brien"}
    assert interpolate_variables("x = ${indicator:sqlstring}", values) == "x = 'o''brien'"
    # Grafana's encodeURIComponentStrict: also ! ' ( ) * encoded
    assert interpolate_variables("${indicator:percentencode}", {"indicator": "a b!'()*\\中~_.-"}) == \
        "a%20b%21%27%28%29%2A%5C%E4%B8%AD~_.-"
    assert interpolate_variables("$indicator ${indicator} [[indicator]]", values) == "o'brien o'brien o'brien"
    assert interpolate_variables("$other and $__toTime", values) == "$other and $__toTime"  # left alone
    assert expand("i = ${indicator:sqlstring} AND t <= $__toTime", RANGE, {"indicator": "a"}) == \
        f"i = 'a' AND t <= toDateTime({TO_S})"
