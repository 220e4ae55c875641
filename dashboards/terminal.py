"""The CLI's tables as a person reads them: `progress`, `alerts`, `dlq` and `stack status`.

In the reader's language (``HIGHLAND_LANG``, catalog/i18n.py), with the catalog's Chinese names, times
in the plan's zone with the zone named in the header, and every width in terminal cells, so the
columns line up at 80 columns with CJK text in them. rich measures cells (``cell_len``); names that
do not fit fold onto a second line instead of being cut: the reader sees the whole name.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from highland.catalog import i18n
from highland.catalog.domain import ProgressRow
from highland.catalog.i18n import Lang
from highland.catalog.models import Catalog
from rich import box
from rich.table import Table
from rich.text import Text

STATUS_COLOUR = {"on_track": "green", "at_risk": "yellow", "off_track": "red", "pending": "cyan", "no_data": "dim"}
NUMBER_WIDTH = 8  # "4,512.00", "123.4M"


def plain(value: object) -> Text:
    """A cell from stored data, shown as it is: never read as rich markup, control characters
    (which could move the cursor or recolour the terminal) shown as U+FFFD."""
    return Text("".join(ch if ch.isprintable() else "\ufffd" for ch in str(value)))


def number(v: float | None) -> str:
    """The one number format (catalog/i18n.py), abbreviated to fit the tables' columns."""
    return i18n.number(v, abbreviate=True)


def _table(title: str | None = None) -> Table:
    # The box's one-space divider between columns, no padding and no edges: every cell of 80 columns
    # goes to the text (a padding would add a second space per column).
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=0, show_edge=False)


def last_report(row: ProgressRow, tz: str, lang: Lang) -> Text:
    """The day of the latest report in the plan's calendar; a stopped feed says so, in red."""
    if row.last_observed_at is None:
        return Text("—", style="dim")
    day = i18n.report_day(row.last_observed_at, tz).isoformat()
    if row.stale:
        return Text(f"{day} {i18n.status_word(lang, 'stale')}", style="red")
    return Text(day)


def progress_table(rows: list[ProgressRow], catalog: Catalog, lang: Lang, day: date) -> Table:
    table = _table(i18n.label(lang, "progress_title", day=day.isoformat()))
    table.add_column(i18n.label(lang, "indicator"), overflow="fold")
    # Fixed widths in cells: whatever is left of the terminal goes to the name.
    for key in ("actual", "expected", "target"):
        table.add_column(i18n.label(lang, key), justify="right", no_wrap=True, width=NUMBER_WIDTH)
    table.add_column(i18n.label(lang, "pct"), justify="right", no_wrap=True, width=4)
    status_width = max(i18n.cells(i18n.status_word(lang, k)) for k in STATUS_COLOUR)
    table.add_column(i18n.label(lang, "status"), no_wrap=True, width=status_width)
    table.add_column(i18n.label(lang, "last_report"), no_wrap=True,
                     width=i18n.cells(f"2020-12-31 {i18n.status_word(lang, 'stale')}"))
    tz = catalog.plan.timezone
    for r in rows:
        table.add_row(i18n.indicator_name(catalog, r.indicator, lang), number(r.actual), number(r.expected),
                      number(r.target), "—" if r.pct_of_target is None else f"{r.pct_of_target:.0f}",
                      Text(i18n.status_word(lang, r.status), style=STATUS_COLOUR[r.status]),
                      last_report(r, tz, lang))
    return table


def progress_summary(rows: list[ProgressRow], lang: Lang) -> str:
    """Counts per status, then the stopped feeds (a stopped feed may still show an older status)."""
    counts = Counter(r.status for r in rows)
    parts = [f"{i18n.status_word(lang, k)} {counts[k]}" for k in STATUS_COLOUR if counts[k]]
    stale = sum(r.stale for r in rows)
    if stale:
        parts.append(i18n.label(lang, "stale_count", n=stale))
    sep = "，" if lang == "zh" else ", "
    return sep.join(parts) + "  (" + i18n.label(lang, "details") + ")"


def alerts_table(rows: list[dict[str, Any]], catalog: Catalog, lang: Lang) -> Table:
    tz = catalog.plan.timezone
    table = _table(i18n.label(lang, "alerts_title"))
    table.add_column(f"{i18n.label(lang, 'when')} ({i18n.zone_note(lang, tz)})", no_wrap=True)
    table.add_column(i18n.label(lang, "kind"), no_wrap=True)
    table.add_column(i18n.label(lang, "indicator"), overflow="fold")
    table.add_column(i18n.label(lang, "change"), no_wrap=True)
    table.add_column(i18n.label(lang, "detail"), ratio=2, overflow="fold")
    for r in rows:
        change = f"{i18n.status_word(lang, r['old_status'])} → {i18n.status_word(lang, r['new_status'])}"
        table.add_row(i18n.local_time(r["created_at"], tz), i18n.kind_word(lang, r["kind"]),
                      plain(i18n.indicator_name(catalog, r["indicator"], lang)), change,
                      plain(i18n.alert_detail(r, catalog, lang)))
    return table


def dlq_table(rows: list[dict[str, Any]], catalog: Catalog, lang: Lang, reason_zh: dict[str, str]) -> Table:
    tz = catalog.plan.timezone
    table = _table(i18n.label(lang, "dlq_title"))
    table.add_column(f"{i18n.label(lang, 'received')} ({i18n.zone_note(lang, tz)})", no_wrap=True)
    table.add_column(i18n.label(lang, "reason"), overflow="fold")
    table.add_column(i18n.label(lang, "agency"), overflow="fold")
    table.add_column(i18n.label(lang, "source"), overflow="fold")
    table.add_column(i18n.label(lang, "detail"), ratio=1, overflow="fold")
    for r in rows:
        reason = reason_zh.get(r["reason"], r["reason"]) if lang == "zh" else r["reason"]
        origin = f" ({r['origin']})" if r.get("origin") else ""
        table.add_row(i18n.local_time(r["received_at"], tz), plain(reason),
                      plain(i18n.agency_name(catalog, r["agency"], lang)), plain(f"{r['source']}{origin}"),
                      plain(r["detail"]))
    return table


def dlq_summary(counts: dict[str, int], lang: Lang, reason_zh: dict[str, str]) -> str:
    name = (lambda k: reason_zh.get(k, k)) if lang == "zh" else (lambda k: k)
    sep = "，" if lang == "zh" else ", "
    listed = sep.join(f"{name(k)} {v}" for k, v in counts.items()) or i18n.label(lang, "none")
    return f"{i18n.label(lang, 'by_reason')}: {listed}"


def status_table(rows: list[dict[str, Any]], lang: Lang) -> Table:
    table = _table()
    for key in ("component", "address", "pid", "answers"):
        table.add_column(i18n.label(lang, key), overflow="fold")
    table.add_column(i18n.label(lang, "detail"), ratio=1, overflow="fold")
    for r in rows:
        answers = i18n.label(lang, "yes" if r["answers"] else "no")
        table.add_row(plain(r["component"]), plain(r["address"]), plain(r["pid"]), answers, plain(r["detail"]))
    return table


def catalog_table(catalog: Catalog, lang: Lang) -> Table:
    """The plan's indicators: name, unit, baseline, target, path shape and owning agency (the kind and
    everything else: --json). Fixed widths in cells; the name takes the rest and folds."""
    table = _table()
    table.add_column(i18n.label(lang, "indicator"), overflow="fold")
    table.add_column(i18n.label(lang, "unit"), overflow="fold", width=8)
    table.add_column(i18n.label(lang, "baseline"), no_wrap=True, justify="right", width=16)
    table.add_column(i18n.label(lang, "target"), no_wrap=True, justify="right", width=14)
    table.add_column(i18n.label(lang, "path"), no_wrap=True, width=8)
    table.add_column(i18n.label(lang, "agency"), overflow="fold", width=12)
    for ind in catalog.indicators:
        stated = ind.baseline.stated
        base = number(stated) if stated is not None else i18n.label(lang, "from_data")
        table.add_row(plain(i18n.indicator_name(catalog, ind.code, lang)), plain(ind.unit),
                      f"{base} ({ind.baseline.year})", f"{number(ind.target.value)} ({ind.target.year})",
                      ind.trajectory.value, plain(i18n.agency_name(catalog, ind.agency, lang)))
    return table
