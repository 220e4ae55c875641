"""A report (dashboards/report.py) as one self-contained HTML page, or a PDF made from that page.

Charts are small PNGs drawn with matplotlib and embedded in the page, so the HTML travels as one
file (e-mail, WeCom) and the PDF holds one image per indicator. The charts carry no text but axis
numbers: the legend is written once in the page, in the reader's language, so no CJK font is needed
inside matplotlib. The PDF is WeasyPrint's rendering of the same HTML; it needs a font with Chinese
glyphs on the machine (Debian: fonts-noto-cjk, docs/reports.md).
"""

from __future__ import annotations

import base64
import io
from datetime import datetime
from importlib import resources
from typing import Any

from highland.catalog.i18n import Lang, agency_name, indicator_name, local_time, status_word, zone_note
from highland.catalog.i18n import number as one_number
from highland.catalog.models import Catalog
from highland.dashboards.report import STATUSES, Entry, Period, Report
from jinja2 import Environment, StrictUndefined
from matplotlib.dates import DateFormatter, YearLocator
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ACTUAL_COLOUR = "#1f5fa8"
EXPECTED_COLOUR = "#888888"

TEXTS: dict[str, dict[str, Any]] = {
    "zh": {
        "html_lang": "zh-CN",
        "kind": {Period.MONTH: "月报", Period.QUARTER: "季报", Period.YEAR: "年报"},
        "as_of": "截至", "period": "报告期", "zone": "日期均为{zone}", "generated": "生成于",
        "summary": "总体情况", "stopped_count": "停报数据源",
        "slipped": "本期进度下滑的指标", "none_slipped": "本期没有进度下滑的指标。",
        "stopped": "停止报送的数据源", "none_stopped": "所有数据源均按期报送。",
        "all": "全部指标", "indicator": "指标", "agency": "报送单位", "before": "期初状态", "now": "当前状态",
        "actual": "实际", "expected": "应达", "target": "目标", "status_label": "状态",
        "last_report": "最后报送", "cadence": "报送周期（天）", "slipped_mark": "本期下滑",
        "legend": "图例：蓝色实线为实际值，灰色虚线为规划轨迹（流量型指标为当年累计）。",
    },
    "en": {
        "html_lang": "en",
        "kind": {Period.MONTH: "monthly report", Period.QUARTER: "quarterly report", Period.YEAR: "annual report"},
        "as_of": "As of", "period": "Period", "zone": "dates in {zone}",
        "generated": "generated", "summary": "Summary", "stopped_count": "stopped feeds",
        "slipped": "Indicators that slipped this period", "none_slipped": "No indicator slipped this period.",
        "stopped": "Feeds that stopped reporting", "none_stopped": "Every feed reports on time.",
        "all": "All indicators", "indicator": "Indicator", "agency": "Agency", "before": "At start",
        "now": "Now", "actual": "actual", "expected": "expected", "target": "target", "status_label": "status",
        "last_report": "last report", "cadence": "cadence (days)", "slipped_mark": "slipped this period",
        "legend": "Legend: solid blue = actual, dashed grey = the plan's trajectory (flows: year to date).",
    },
}
LANGUAGES: tuple[Lang, ...] = ("zh", "en")


def period_label(report: Report, lang: str) -> str:
    d = report.as_of
    if lang == "zh":
        return {Period.MONTH: f"{d.year}年{d.month}月", Period.QUARTER: f"{d.year}年第{(d.month - 1) // 3 + 1}季度",
                Period.YEAR: f"{d.year}年"}[report.period]
    return {Period.MONTH: d.strftime("%B %Y"), Period.QUARTER: f"{d.year} Q{(d.month - 1) // 3 + 1}",
            Period.YEAR: str(d.year)}[report.period]


def title(report: Report, catalog: Catalog, lang: str) -> str:
    kind = TEXTS[lang]["kind"][report.period]
    if lang == "zh":
        return f"{catalog.plan.title_zh} 监测{kind}（{period_label(report, lang)}）"
    return f"{catalog.plan.title_en}: {kind}, {period_label(report, lang)}"


def number(value: float | None) -> str:
    """As `highland progress` prints it (two decimals, whole from 1,000), so a reader who checks a
    report against the terminal sees the same digits; never abbreviated (15,012,345, not 15.0M)."""
    return one_number(value)


def chart_png(entry: Entry) -> bytes:
    """Actual against the trajectory up to the report's day, as a small PNG without words."""
    fig = Figure(figsize=(3.0, 1.25), dpi=110)
    ax = fig.add_axes((0.16, 0.2, 0.82, 0.74))
    days = [p.day for p in entry.path]
    ax.plot(days, [p.expected for p in entry.path], linestyle="--", color=EXPECTED_COLOUR, linewidth=1)
    ax.plot(days, [p.actual for p in entry.path], color=ACTUAL_COLOUR, linewidth=1.4)
    ax.tick_params(labelsize=6, length=2)
    ax.yaxis.set_major_locator(MaxNLocator(3))
    ax.xaxis.set_major_locator(YearLocator())
    ax.xaxis.set_major_formatter(DateFormatter("%Y"))
    ax.margins(x=0.01)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def render_html(report: Report, catalog: Catalog, lang: Lang, now: datetime) -> str:
    """The page. Status words, Chinese names and the zone's name are the ones duty staff read on the
    board and in alerts (catalog/i18n.py); English names the indicators and agencies in full."""
    tz = catalog.plan.timezone
    t = {**TEXTS[lang], "zone": TEXTS[lang]["zone"].format(zone=zone_note(lang, tz)),
         "status": {s: status_word(lang, s) for s in STATUSES}}
    env = Environment(autoescape=True, undefined=StrictUndefined)
    template = env.from_string(resources.files("highland.dashboards").joinpath("templates/report.html.j2")
                               .read_text(encoding="utf-8"))

    def name(e: Entry) -> str:
        ind = catalog.indicator(e.row.indicator)
        return ind.name_en if lang == "en" and ind else indicator_name(catalog, e.row.indicator, lang)

    def agency(e: Entry) -> str:
        found = next((a for a in catalog.agencies if a.code == e.row.agency), None)
        return found.name_en if lang == "en" and found else agency_name(catalog, e.row.agency, lang)

    def cadence(e: Entry) -> str:
        ind = catalog.indicator(e.row.indicator)
        return str(ind.cadence_days) if ind else "—"

    return template.render(
        t=t, report=report, title=title(report, catalog, lang),
        counts=list(report.counts().items()),
        generated=local_time(now, tz),
        charts={e.row.indicator: base64.b64encode(chart_png(e)).decode() for e in report.entries},
        name=name, agency=agency, cadence=cadence, num=number,
    )


def render_pdf(html: str) -> bytes:
    from weasyprint import HTML  # imported late: it loads Pango, which only reports need

    return HTML(string=html).write_pdf()
