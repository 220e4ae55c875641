"""What a person reads, in their language: status words, column headers, names from the catalog,
times in the plan's zone with the zone named, and widths in terminal cells.

Chinese (``zh``) is the default language (``HIGHLAND_LANG``, docs/i18n.md): the readers are Chongqing's
duty staff and the officials they report to. English (``en``) keeps the codes, for developers and
for logs read beside the code. Machine-readable output (``--json``, alert payloads for programs)
keeps codes in both languages; only what is laid out for eyes changes.

A CJK character takes two terminal cells, so every width here is counted in cells (rich's
``cell_len``), never in characters: a column of Chinese names then lines up at 80 columns.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from highland.catalog.models import CITY_WIDE, Catalog
from rich.cells import cell_len

Lang = Literal["zh", "en"]

# The notifier's words (streams/notify.py STATUS_ZH), so a duty officer reads one vocabulary in the
# robot's message, on the board and in `highland progress`.
STATUS = {
    "zh": {"on_track": "正常", "at_risk": "有风险", "off_track": "滞后", "pending": "基数待定", "no_data": "无数据",
           "stale": "停报", "fresh": "恢复报送"},
    "en": {"on_track": "on_track", "at_risk": "at_risk", "off_track": "off_track", "pending": "pending",
           "no_data": "no_data", "stale": "stale", "fresh": "fresh"},
}
ALERT_KIND = {
    "zh": {"status": "状态变化", "stale": "数据中断", "fresh": "数据恢复", "repair": "自检修复"},
    "en": {"status": "status", "stale": "stale", "fresh": "fresh", "repair": "repair"},
}
# How the plan's zone is named next to a time a person reads.
ZONE_NAME = {"zh": "北京时间", "en": "Asia/Shanghai"}

LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "indicator": "指标", "actual": "实际", "expected": "预期", "target": "目标", "pct": "%",
        "pct_target": "%目标", "status": "状态", "last_report": "最近报送", "trend": "30天",
        "agency": "责任单位", "kind": "类型", "change": "变化", "detail": "说明", "when": "时间",
        "received": "收到时间", "reason": "原因", "source": "来源", "origin": "出处",
        "component": "组件", "address": "地址", "pid": "进程号", "answers": "应答", "yes": "是", "no": "否",
        "progress_title": "规划进度（截至 {day}；流量指标为年初至今）",
        "alerts_title": "告警（最新在前）", "dlq_title": "被拒收的事件（最新在前）",
        "by_reason": "按原因", "none": "无", "details": "详情：--json",
        "stale_since": "{day}起停报", "stale_count": "停报 {n} 项",
        "board_title": "互联网经济高地监测", "as_of": "截至", "refreshed": "刷新于",
        "not_refreshed": "尚未刷新", "of": "共", "quit": "Ctrl-C 退出",
        "more": "另有 {n} 项（最差的在前；全部：highland progress）",
        "latest_alerts": "最新告警（最新在前）",
        "unreachable": "ClickHouse 无法连接：{target}", "refused": "ClickHouse 返回错误：{target}",
        "retrying": "，每 {s} 秒重试", "last_good": "显示上次成功刷新的数据 · ",
        "unit": "单位", "baseline": "基数", "path": "路径", "from_data": "取自数据",
    },
    "en": {
        "indicator": "indicator", "actual": "actual", "expected": "expected", "target": "target", "pct": "%",
        "pct_target": "%tgt", "status": "status", "last_report": "last report", "trend": "30d",
        "agency": "agency", "kind": "kind", "change": "change", "detail": "detail", "when": "when",
        "received": "received", "reason": "reason", "source": "source", "origin": "origin",
        "component": "component", "address": "address", "pid": "pid", "answers": "answers", "yes": "yes",
        "no": "no",
        "progress_title": "Plan progress as of {day} (flows: year to date)",
        "alerts_title": "Alerts, newest first", "dlq_title": "Dead letters, newest first",
        "by_reason": "by reason", "none": "none", "details": "details: --json",
        "stale_since": "none since {day}", "stale_count": "stale {n}",
        "board_title": "Highland board", "as_of": "as of", "refreshed": "refreshed",
        "not_refreshed": "not refreshed yet", "of": "of", "quit": "Ctrl-C quits",
        "more": "+{n} more (worst shown first; all: highland progress)",
        "latest_alerts": "Latest alerts (newest first)",
        "unreachable": "ClickHouse unreachable at {target}", "refused": "ClickHouse answers with an error at {target}",
        "retrying": " — retrying every {s} s", "last_good": "showing the last good refresh · ",
        "unit": "unit", "baseline": "baseline", "path": "path", "from_data": "from data",
    },
}


def label(lang: Lang, key: str, **values: object) -> str:
    return LABELS[lang][key].format(**values)


def status_word(lang: Lang, status: str) -> str:
    return STATUS[lang].get(status, status)


def kind_word(lang: Lang, kind: str) -> str:
    return ALERT_KIND[lang].get(kind, kind)


def indicator_name(catalog: Catalog, code: str, lang: Lang) -> str:
    """The catalog's Chinese name in ``zh``; the code in ``en`` (what the English docs and logs use)."""
    ind = catalog.indicator(code)
    return ind.name_zh if lang == "zh" and ind is not None else code


def agency_name(catalog: Catalog, code: str, lang: Lang) -> str:
    if lang == "zh":
        return next((a.name_zh for a in catalog.agencies if a.code == code), code)
    return code


def region_name(catalog: Catalog, code: str, lang: Lang) -> str:
    if lang == "zh":
        if code == CITY_WIDE:
            return "全市"
        return next((d.name_zh for d in catalog.districts if d.code == code), code)
    return code


# --- times -------------------------------------------------------------------------------------------

def aware(value: datetime | str) -> datetime:
    """An instant from storage. The stores hand out aware UTC datetimes (sinks read ``toTimeZone(…,
    'UTC')``); a naive one is an old caller's UTC."""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def local(value: datetime | str, tz: str) -> datetime:
    return aware(value).astimezone(ZoneInfo(tz))


def local_time(value: datetime | str, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """The instant in the plan's zone, formatted (the zone is named by the caller's header)."""
    return local(value, tz).strftime(fmt)


def zone_note(lang: Lang, tz: str) -> str:
    """The zone as a header names it: 北京时间 for Asia/Shanghai in Chinese, else the zone's name."""
    return ZONE_NAME[lang] if tz == "Asia/Shanghai" else tz


def report_day(value: datetime | str, tz: str) -> date:
    """The plan's calendar day of an instant (what "no report since" names)."""
    return local(value, tz).date()


# --- alert texts -------------------------------------------------------------------------------------

def alert_since(detail: str) -> datetime | None:
    """The last arrival a stale/fresh alert's detail names (streams/alerts.py feed_alerts)."""
    found = re.search(r"(?:since|last event) (\S+?)\)?(?: |$)", detail)
    try:
        return datetime.fromisoformat(found.group(1)) if found else None
    except ValueError:
        return None


def number(value: float | None, abbreviate: bool = False) -> str:
    """A value as every surface prints it -- `highland progress`, reports, alert texts and chat
    messages -- so a reader who compares two sees the same digits: two decimals, whole from 1,000.
    ``abbreviate=True`` (the terminal's tables): at most 8 cells for any value an event may carry (up
    to 1e15): 12.35, 4,512, 15.0M, 2.5G, 1.0T."""
    if value is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abbreviate and abs(value) >= scale:
            return f"{value / scale:,.1f}{suffix}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}"


def alert_detail(alert: dict[str, Any], catalog: Catalog, lang: Lang) -> str:
    """One line saying what an alert is about: in English the stored detail, in Chinese the
    notifier's wording (streams/notify.py) from the alert's fields, the time in the plan's zone."""
    if lang == "en":
        return str(alert["detail"])
    ind = catalog.indicator(alert["indicator"])
    unit, tz = (ind.unit if ind else ""), catalog.plan.timezone
    if alert["kind"] == "status":
        actual, wanted = alert.get("actual"), alert.get("expected")
        if actual is None or wanted is None:
            return f"截至 {alert['as_of']}"
        share = f"（完成预期的 {actual / wanted:.1%}）" if wanted else ""
        return f"实际 {number(actual)} {unit}，预期 {number(wanted)} {unit}{share}，截至 {alert['as_of']}"
    since = alert_since(str(alert["detail"]))
    when = report_day(since, tz).isoformat() if since else ""  # the plan's calendar day
    if alert["kind"] == "stale":
        cadence = f"（报送周期 {ind.cadence_days} 天）" if ind else ""
        return (f"自 {when} 起未收到数据" if since else "已超过报送周期未收到数据") + cadence
    if alert["kind"] == "fresh":
        return f"已恢复报送（最近一次 {when}）" if since else "已恢复报送"
    return f"系统自检修复：{alert['detail']}"


# --- cells -----------------------------------------------------------------------------------------

def cells(text: str) -> int:
    """Terminal cells ``text`` takes: 2 for a CJK character, 1 for ASCII."""
    return cell_len(text)
