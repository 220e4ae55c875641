"""`highland report`: a quarterly report as an official reads it, in Chinese and English, as PDF and HTML.

A known feed is written into the test's own database: one indicator slips during the quarter, one
feed stops, one stays on track. The report is rendered through the CLI, the PDF's text is read back
with poppler's pdftotext, its images counted with pdfimages and its pages turned into PNG with
pdftoppm. Statuses are derived here from the catalog's trajectory, not from dashboards/report.py.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from highland.catalog.i18n import status_word
from highland.catalog.loader import default_catalog
from highland.catalog.trajectory import expected
from highland.ingest.events import Accepted, validate
from highland.sinks.client import connect
from highland.sinks.writer import write_events
from PIL import Image

from highland.settings import Settings
from tests.integration.support import Positioned, as_batch, dumps, event, worker_env

pytestmark = pytest.mark.integration
CATALOG = default_catalog()
AS_OF = date(2019, 6, 30)  # the report's day: Q2 2019
Q1_END = date(2019, 3, 31)  # the day before the quarter began
# Debian packages the test reads the PDF with, and the fonts a Chinese PDF needs (docs/reports.md).
PACKAGES = ("poppler-utils", "fonts-noto-cjk")

SLIPPING = CATALOG.indicator("backbone_interconnect_bw")  # on track at Q1's end, off track at Q2's
STOPPING = CATALOG.indicator("direct_connect_cities")  # on track, then silent after mid-March
STEADY = CATALOG.indicator("internet_plus_index")  # on track throughout
assert SLIPPING and STOPPING and STEADY


def at(indicator_code: str, day: date, share: float) -> float:
    ind = CATALOG.indicator(indicator_code)
    assert ind is not None
    value = expected(ind, day, None)
    assert value is not None
    return round(value * share, 3)


def feed() -> list[dict]:
    return [
        event("bb-q1", SLIPPING.agency, SLIPPING.code, at(SLIPPING.code, Q1_END, 1.0), SLIPPING.unit,
              "2019-03-20T10:00:00+08:00"),
        event("bb-q2", SLIPPING.agency, SLIPPING.code, at(SLIPPING.code, AS_OF, 0.5), SLIPPING.unit,
              "2019-06-20T10:00:00+08:00"),
        event("dc-q1", STOPPING.agency, STOPPING.code, at(STOPPING.code, Q1_END, 1.2), STOPPING.unit,
              "2019-03-15T10:00:00+08:00"),
        event("ipi-q1", STEADY.agency, STEADY.code, at(STEADY.code, Q1_END, 1.1), STEADY.unit,
              "2019-03-01T09:00:00+08:00"),
        event("ipi-q2", STEADY.agency, STEADY.code, at(STEADY.code, AS_OF, 1.1), STEADY.unit,
              "2019-06-25T09:00:00+08:00"),
    ]


@pytest.fixture(scope="module")
def poppler() -> None:
    missing = [p for p, tool in zip(PACKAGES, ("pdftotext", "fc-list"), strict=True) if not shutil.which(tool)]
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout \
        if shutil.which("fc-list") else ""
    if missing or not fonts.strip():
        if not shutil.which("apt-get"):
            pytest.fail(f"the report test needs Debian packages {PACKAGES}")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], check=True,
                       capture_output=True)


def write(settings: Settings, events: list[dict] | None = None) -> None:
    batch = []
    for offset, e in enumerate(feed() if events is None else events):
        verdict = validate(dumps(e), CATALOG)
        assert isinstance(verdict, Accepted), verdict
        batch.append(Positioned(verdict, 0, offset))
    write_events(connect(settings), settings.clickhouse_database, as_batch(batch), datetime.now(UTC),
                 CATALOG.plan.timezone)


def report(settings: Settings, out: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "highland", "report", "--as-of", AS_OF.isoformat(),
                           "--period", "quarter", "--out", str(out), *args],
                          env=worker_env(settings, "report", out.parent), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def section(text: str, heading: str, next_heading: str) -> str:
    return text.split(heading, 1)[1].split(next_heading, 1)[0]


def test_a_quarterly_pdf_in_chinese_lists_the_slipped_first_the_stopped_feeds_and_a_chart_per_indicator(
        isolated: Settings, tmp_path: Path, poppler: None) -> None:
    write(isolated)
    pdf = tmp_path / "季报.pdf"
    said = report(isolated, pdf)
    assert "1 slipped, 1 stopped" in said

    text = pdf_text(pdf)
    assert f"{CATALOG.plan.title_zh} 监测季报（2019年第2季度）" in text.replace("\n", "")
    on_track, off_track, no_data = (status_word("zh", s) for s in ("on_track", "off_track", "no_data"))
    slipped = section(text, "本期进度下滑的指标", "停止报送的数据源")
    assert SLIPPING.name_zh in slipped and on_track in slipped and off_track in slipped
    assert STEADY.name_zh not in slipped and STOPPING.name_zh not in slipped
    stopped = section(text, "停止报送的数据源", "全部指标")
    assert STOPPING.name_zh in stopped and "2019-03-15" in stopped
    assert SLIPPING.name_zh not in stopped
    # Every indicator appears once in the full list, the slipped one first.
    everything = text.split("全部指标", 1)[1]
    positions = {i.code: everything.find(i.code) for i in CATALOG.indicators}
    assert all(p >= 0 for p in positions.values()), [c for c, p in positions.items() if p < 0]
    assert positions[SLIPPING.code] == min(positions.values())
    summary = section(text, "总体情况", "本期进度下滑的指标")
    assert re.search(rf"{off_track}:\s*1\b", summary) and re.search(rf"{on_track}:\s*2\b", summary), summary
    assert re.search(rf"{no_data}:\s*{len(CATALOG.indicators) - 3}\b", summary), summary

    listed = subprocess.run(["pdfimages", "-list", str(pdf)], check=True, capture_output=True,
                            text=True).stdout.splitlines()[2:]
    images = [line for line in listed if line.split()[2] == "image"]  # not their transparency masks
    assert len(images) == len(CATALOG.indicators)  # one chart per indicator

    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages
    for page in pages:
        with Image.open(page) as img:
            lo, hi = img.convert("L").getextrema()
            assert lo < 128 < hi, f"{page.name} is blank"  # something is printed on every page


def test_the_same_report_in_english_as_one_html_file(isolated: Settings, tmp_path: Path) -> None:
    write(isolated)
    html_path = tmp_path / "report.html"
    report(isolated, html_path, "--lang", "en")
    html = html_path.read_text(encoding="utf-8")
    assert f"{CATALOG.plan.title_en}: quarterly report, 2019 Q2" in html
    assert html.count('data-indicator="') == len(CATALOG.indicators)
    assert html.count("data:image/png;base64,") == len(CATALOG.indicators)
    slipped = html.split("Indicators that slipped this period", 1)[1].split("Feeds that stopped", 1)[0]
    assert SLIPPING.name_en in slipped and STEADY.name_en not in slipped


def test_an_unknown_period_or_output_is_refused_with_a_reason(isolated: Settings, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "highland", "report", "--period", "week", "--out",
                           str(tmp_path / "r.pdf")], env=worker_env(isolated, "report", tmp_path),
                          capture_output=True, text=True)
    assert done.returncode != 0 and "--period must be one of: month, quarter, year" in done.stdout + done.stderr
    nowhere = tmp_path / "no" / "such" / "folder" / "r.html"
    done = subprocess.run([sys.executable, "-m", "highland", "report", "--as-of", "2016-01-31", "--out",
                           str(nowhere)], env=worker_env(isolated, "report", tmp_path), capture_output=True,
                          text=True, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 2 and "there is no folder" in said and "Traceback" not in said, said


def test_a_slip_on_the_periods_first_day_is_this_periods_slip(isolated: Settings, tmp_path: Path) -> None:
    """The period's start status is the one on the day before it began (docs/reports.md)."""
    write(isolated, [
        event("bb-q1", SLIPPING.agency, SLIPPING.code, at(SLIPPING.code, Q1_END, 1.0), SLIPPING.unit,
              "2019-03-20T10:00:00+08:00"),
        event("bb-d1", SLIPPING.agency, SLIPPING.code, at(SLIPPING.code, AS_OF, 0.5), SLIPPING.unit,
              "2019-04-01T10:00:00+08:00"),  # the quarter's first day
    ])
    out = tmp_path / "r.html"
    said = report(isolated, out, "--lang", "en")
    assert "1 slipped" in said, said
    slipped = out.read_text(encoding="utf-8").split("Indicators that slipped this period", 1)[1]
    assert SLIPPING.name_en in slipped.split("Feeds that stopped", 1)[0]


# --- the report's numbers are `highland progress`'s ---------------------------------------------

FLOW = CATALOG.indicator("ecommerce_turnover")  # year to date: its sum restarts each January
assert FLOW


def flow_feed() -> list[dict]:
    """Turnover with fractions a rounding to four digits would change, over two years."""
    return [event(f"et-{day}", FLOW.agency, FLOW.code, value, FLOW.unit, f"{day}T12:00:00+08:00")
            for day, value in (("2019-01-31", 1234.5678), ("2019-02-28", 987.654), ("2019-12-31", 12.345),
                               ("2020-02-29", 345.678), ("2020-03-01", 0.125))]


def shown(value: float | None) -> str:
    """A number as `highland progress` prints it (docs/reports.md: the report shows the same digits)."""
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}"


def progress_json(settings: Settings, day: date, tmp: Path) -> dict[str, dict]:
    done = subprocess.run([sys.executable, "-m", "highland", "progress", "--as-of", day.isoformat(), "--json"],
                          env=worker_env(settings, "progress", tmp), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {row["indicator"]: row for row in json.loads(done.stdout)["indicators"]}


def html_entries(page: str) -> dict[str, str]:
    """Each indicator's block of the full list, as text."""
    return {code: html.unescape(re.sub(r"<[^>]+>", "", block))
            for code, block in re.findall(r'data-indicator="([^"]+)">(.*?)</table>', page, re.S)}


@pytest.mark.parametrize("day", [
    date(2020, 2, 29),  # a leap day
    date(2019, 4, 1),  # a quarter's first day: the period is one day long
    date(2015, 6, 30),  # before the plan: only its baseline year
    date(9999, 12, 31),  # long after the plan: the last day a date can be (its chart stops at the plan's end)
], ids=str)
def test_every_number_and_status_in_a_report_is_the_one_progress_gives_for_that_day(
        isolated: Settings, tmp_path: Path, day: date) -> None:
    write(isolated, feed() + flow_feed())
    out = tmp_path / "r.html"
    done = subprocess.run([sys.executable, "-m", "highland", "report", "--as-of", day.isoformat(), "--period",
                           "quarter", "--lang", "en", "--out", str(out)],
                          env=worker_env(isolated, "report", tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = progress_json(isolated, day, tmp_path)
    entries = html_entries(out.read_text(encoding="utf-8"))
    assert sorted(entries) == sorted(rows)
    for code, text in entries.items():
        r = rows[code]
        numbers = (f"actual: {shown(r['actual'])} · expected: {shown(r['expected'])} · "
                   f"target ({r['target_year']}): {shown(r['target'])}")
        assert numbers in text, (code, numbers, text)
        assert f"status: {status_word('en', r['status'])}" in text, (code, r["status"], text)
        assert ("last report" in text) == bool(r["stale"]), (code, r["stale"], text)
    page = out.read_text(encoding="utf-8")
    for status in ("on_track", "at_risk", "off_track", "no_data"):
        count = sum(r["status"] == status for r in rows.values())
        assert re.search(rf"{re.escape(status_word('en', status))}: <b>{count}</b>", page), (status, count)
    assert f"stopped feeds: <b>{sum(bool(r['stale']) for r in rows.values())}</b>" in page


def test_a_report_is_made_with_the_read_only_users_rights_as_progress_is(isolated: Settings, tmp_path: Path) -> None:
    write(isolated)
    out = tmp_path / "r.html"
    env = {**worker_env(isolated, "report", tmp_path), "HIGHLAND_CLICKHOUSE_PASSWORD": "not-the-writers"}
    done = subprocess.run([sys.executable, "-m", "highland", "report", "--as-of", AS_OF.isoformat(), "--out",
                           str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_text(encoding="utf-8").count('data-indicator="') == len(CATALOG.indicators)


# --- a plan folder's strings are text, never markup -----------------------------------------------

HOSTILE = {
    "plan.yaml": """\
plan:
  code: hostile_plan_made_for_this_test
  title_zh: "规划</title><script>alert('zh')</script>"
  title_en: "Plan <script>alert(1)</script> & \\"co\\""
  document: none
  published: 2021-03-01
  timezone: Asia/Shanghai
  baseline_year: 2020
  target_year: 2025
  default_thresholds: {on_track: 0.95, at_risk: 0.85}
indicators:
  - code: widget_sales
    name_zh: "小部件<img src=x onerror=alert(2)>"
    name_en: "Widget </td><script>alert(3)</script>"
    section: test
    unit: "<b>亿元</b>"
    unit_aliases: {}
    kind: flow
    baseline: {year: 2020, value: 100}
    target: {year: 2025, value: 200}
    agency: test_office
    cadence_days: 31
""",
    "agencies.yaml": """\
agencies:
  - {code: test_office, name_zh: "测试办<script>alert(4)</script>", name_en: "Office <iframe src=//x>"}
""",
    "districts.yaml": """\
districts:
  - {code: one, name_zh: 一区, name_en: "District <1>"}
""",
}


def test_markup_in_a_plan_folders_names_and_units_is_printed_as_text_in_both_languages(
        isolated: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "plan"
    folder.mkdir()
    for name, text in HOSTILE.items():
        (folder / name).write_text(text, encoding="utf-8")
    env = {**worker_env(isolated, "report", tmp_path), "HIGHLAND_CATALOG_DIR": str(folder)}
    checked = subprocess.run([sys.executable, "-m", "highland", "catalog", "validate", str(folder)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # a valid plan: names are free text
    for lang in ("zh", "en"):
        out = tmp_path / f"{lang}.html"
        done = subprocess.run([sys.executable, "-m", "highland", "report", "--as-of", "2022-02-28", "--lang", lang,
                               "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        page = out.read_text(encoding="utf-8")
        for tag in ("<script", "<img src=x", "<iframe", "<b>亿元", "</title><"):
            assert tag not in page, (lang, tag)
        title = "规划&lt;/title&gt;&lt;script&gt;" if lang == "zh" else "Plan &lt;script&gt;alert(1)&lt;/script&gt;"
        name = "小部件&lt;img src=x" if lang == "zh" else "Widget &lt;/td&gt;&lt;script&gt;"
        assert f"<title>{title}" in page and f"<h1>{title}" in page and name in page, lang
        assert "&lt;b&gt;亿元&lt;/b&gt;" in page
        assert page.count('data-indicator="') == 1  # a plan of one indicator
