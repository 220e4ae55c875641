"""The dashboards in the reader's language (``HIGHLAND_LANG``; docs/i18n.md).

The dashboards are built in English (definitions.py, pipeline.py: the tests find panels by those
titles); ``localize`` turns a built dashboard into Chinese: dashboard, panel, link and variable titles,
the columns' and legends' names (displayName overrides, and renames of the series named by a
code), the status words, and the catalog's Chinese names of indicators and agencies in place of
their codes (value mappings: links and variables keep the codes). Descriptions (the tooltips) stay
English. A title with no translation is left as it is; tests/unit/test_dashboards_zh.py fails on it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from highland.catalog import i18n
from highland.catalog.i18n import Lang
from highland.catalog.models import Catalog
from highland.dashboards.panels import Json
from highland.ingest.events import Reason
from highland.ingest.names import REASON_ZH

# Every title a reader sees, English -> Chinese.
TITLES = {
    # dashboards
    "Highland — plan overview": "互联网经济高地 — 规划总览",
    "Highland — indicator": "互联网经济高地 — 单项指标",
    "Highland — feed health": "互联网经济高地 — 数据报送",
    "Highland — alerts": "互联网经济高地 — 告警",
    "Highland — pipeline health": "互联网经济高地 — 处理链路运行",
    # overview
    "Indicators on track": "正常的指标", "Indicators at risk": "有风险的指标", "Indicators off track": "滞后的指标",
    "Indicators baseline pending": "基数待定的指标", "Indicators no data": "无数据的指标",
    "Feeds stopped": "停报的指标", "Every indicator vs. its plan": "各指标与规划对比",
    # indicator
    "Status": "状态", "Percent of target": "目标完成率", "Actual": "实际值",
    "Expected (plan path)": "预期值（规划路径）", "Projected at deadline": "到期预测值",
    "Deadline (target year)": "目标年份", "Last report": "最近报送",
    "Stopped reporting since": "停报起始日", "Actual vs. the plan's path to the target": "实际值与规划路径",
    "By district (regional indicators)": "分区县（分区县报送的指标）",
    # feeds and alerts
    "Events per agency per minute": "各单位每分钟事件数", "Freshness per feed": "各指标报送及时性",
    "Dead letters by reason": "拒收事件（按原因）", "Dead letters per hour": "每小时拒收事件",
    "Alerts per day": "每日告警", "Alerts, newest first": "告警（最新在前）",
    # pipeline (operators read it too)
    "Workers up": "运行中的处理进程", "Gateways up": "运行中的网关", "Batches stuck now": "当前卡住的批次",
    "Self-check repairs (range)": "自检修复（时间范围内）", "Events per second": "每秒事件数",
    "Rejected per second, by reason": "每秒拒收（按原因）", "Dead letters per second": "每秒拒收事件",
    "Arrival to storage": "到达至入库耗时", "Batch write time": "批次写入耗时", "Events per batch": "每批事件数",
    "Stuck batches, poison records, retries": "卡住的批次、有害记录、重试", "Self-check": "自检",
    "Gateway requests by status": "网关请求（按状态）", "Token failures": "令牌失败",
    "Gateway request time": "网关请求耗时",
    # links, variables, empty panels
    "Open the indicator page": "打开指标页", "Highland": "互联网经济高地", "Indicator": "指标",
    "city-wide indicator: no district breakdown": "全市指标：无分区县数据",
}

# Column and legend names (SQL column names) as the reader sees them.
FIELDS = {
    "indicator": "指标", "agency": "责任单位", "status": "状态", "pct_of_target": "目标完成率",
    "behind_pct": "落后路径 %", "behind path %": "落后路径 %", "actual": "实际", "expected": "预期", "target": "目标",
    "unit": "单位", "deadline": "目标年份", "projected": "到期预测", "projection": "预测", "last_observed": "最近报送",
    "stale_since": "停报起始日", "stopped since": "停报起始日", "district": "区县", "district_value": "区县数值",
    "observed": "观测时间", "cadence_days": "报送周期（天）", "last_event": "最近到达", "last_arrival": "最近到达",
    "seconds_since": "距今", "feed_state": "报送状态", "reason": "原因", "letters": "拒收数", "time": "时间",
    "kind": "类型", "old_status": "原状态", "new_status": "新状态", "detail": "说明", "alert_id": "告警编号",
    "alerts_count": "告警数", "events": "事件数",
}
FEED_WORDS = {"fresh": "正常报送", "stale": "停报", "never": "从未报送"}
# English names beside a code the Chinese name now replaces: hidden, not translated twice.
HIDDEN = ("name_en", "district_name")


def localize(board: Json, catalog: Catalog, lang: Lang) -> Json:
    """``board`` for readers of ``lang`` (English: unchanged)."""
    if lang == "en":
        return board
    out = copy.deepcopy(board)
    out["title"] = TITLES.get(out["title"], out["title"])
    for link in out.get("links", []):
        link["title"] = TITLES.get(link["title"], link["title"])
    for variable in out.get("templating", {}).get("list", []):
        if variable.get("label"):
            variable["label"] = TITLES.get(variable["label"], variable["label"])
    words = _words(catalog)
    for panel in out.get("panels", []):
        _panel(panel, words, catalog)
    return out


def _words(catalog: Catalog) -> dict[str, dict[str, str]]:
    """Codes a panel may show as values or series names, by the column that holds them, with what a
    Chinese reader should see."""
    statuses = {s: i18n.status_word("zh", s) for s in i18n.STATUS["zh"]} | FEED_WORDS
    return {"status": statuses, "feed_state": statuses, "new_status": statuses, "old_status": statuses,
            "reason": {reason.value: REASON_ZH[reason] for reason in Reason},
            "agency": {a.code: a.name_zh for a in catalog.agencies}}


def _query_text(panel: Json) -> str:
    return "\n".join(str(t.get("rawSql") or t.get("expr") or "") for t in panel.get("targets", []))


def _panel(panel: Json, by_column: dict[str, dict[str, str]], catalog: Catalog) -> None:
    panel["title"] = TITLES.get(panel["title"], panel["title"])
    text = _query_text(panel)
    columns = {c for c in FIELDS if re.search(rf"\b{re.escape(c)}\b", text)}
    words = {code: name for column in columns & by_column.keys() for code, name in by_column[column].items()}
    words |= by_column["status"]  # status colours' mappings name them whatever the column
    config = panel.setdefault("fieldConfig", {"defaults": {}, "overrides": []})
    defaults = config.setdefault("defaults", {})
    if "noValue" in defaults:
        defaults["noValue"] = TITLES.get(defaults["noValue"], defaults["noValue"])
    for mapping in defaults.get("mappings", []):
        _mapping(mapping, words)
    overrides = config.setdefault("overrides", [])
    named = set()
    for item in overrides:
        column = item["matcher"].get("options")
        named.add(column)
        for prop in item["properties"]:
            if prop["id"] == "displayName":
                prop["value"] = FIELDS.get(prop["value"], prop["value"])
            elif prop["id"] == "mappings":
                for mapping in prop["value"]:
                    _mapping(mapping, words)
            elif prop["id"] == "links":
                for link in prop["value"]:
                    link["title"] = TITLES.get(link["title"], link["title"])
        if column in FIELDS and not any(p["id"] == "displayName" for p in item["properties"]):
            item["properties"].append({"id": "displayName", "value": FIELDS[column]})
    for column in sorted(columns - named):
        overrides.append(_display(column, FIELDS[column]))
    # Codes in cells: the catalog's names, the codes kept as the values links and filters use.
    if "indicator" in columns:
        overrides.append({"matcher": {"id": "byName", "options": "indicator"}, "properties": [
            {"id": "mappings", "value": [_names({i.code: i.name_zh for i in catalog.indicators})]}]})
    if "district" in columns:
        overrides.append({"matcher": {"id": "byName", "options": "district"}, "properties": [
            {"id": "mappings", "value": [_names({d.code: i18n.region_name(catalog, d.code, "zh")
                                                 for d in catalog.districts})]}]})
    for column in HIDDEN:
        if re.search(rf"\b{column}\b", text):
            overrides.append({"matcher": {"id": "byName", "options": column},
                              "properties": [{"id": "custom.hidden", "value": True}]})
    if "agency" in columns:
        overrides.append({"matcher": {"id": "byName", "options": "agency"}, "properties": [
            {"id": "mappings", "value": [_names(by_column["agency"])]}]})
    if panel.get("type") in ("timeseries", "barchart"):
        # Series named by a value (an agency, a reason, a status): renamed by their exact name.
        panel["transformations"] = [*panel.get("transformations", []), *(
            {"id": "renameByRegex", "options": {"regex": f"^{code}$", "renamePattern": name}}
            for code, name in sorted(words.items()))]


def _display(column: str, name: str) -> Json:
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "displayName", "value": name}]}


def _names(names: dict[str, str]) -> Json:
    return {"type": "value", "options": {code: {"text": name, "index": n} for n, (code, name) in
                                         enumerate(names.items())}}


def _mapping(mapping: dict[str, Any], words: dict[str, str]) -> None:
    for value, option in mapping.get("options", {}).items():
        if isinstance(option, dict) and value in words:
            option["text"] = words[value]
