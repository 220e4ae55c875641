"""`highland template`: a file an agency fills in, with its indicators, units and regions.

One row per indicator it owns (city-wide and per district for a regional one), in Chinese: the headers of
``names.CHINESE_HEADERS``, the catalog's Chinese names. Left to fill: 事件编号, 数值, 观测时间.
The CSV is UTF-8 with a byte-order mark, which Excel on Chinese Windows opens as UTF-8; the .xlsx
has the data on its first sheet (what `push` reads) and the accepted units on a second.
"""

from __future__ import annotations

import csv
from pathlib import Path

from highland.catalog.models import Catalog
from highland.ingest.names import CHINESE_HEADERS, FIELDS

CITY_WIDE_NAME = "重庆市"


def template_rows(catalog: Catalog, agency: str) -> list[list[object]]:
    """The rows after the header, one per (indicator, region) the agency reports."""
    owner = next(a for a in catalog.agencies if a.code == agency)
    rows: list[list[object]] = []
    for ind in catalog.indicators:
        if ind.agency != agency:
            continue
        # A regional indicator also takes a city-wide report (docs/numbers.md, "level"): first row.
        regions = [CITY_WIDE_NAME, *(d.name_zh for d in catalog.districts)] if ind.regional else [CITY_WIDE_NAME]
        for region in regions:
            # event_id, revision, agency, indicator, region, value, unit, observed_at
            rows.append([None, 0, owner.name_zh, ind.name_zh, region, None, ind.unit, None])
    return rows


def write_template(catalog: Catalog, agency: str, fmt: str, out: Path) -> int:
    """Write the template; the number of rows to fill."""
    header = [CHINESE_HEADERS[f] for f in FIELDS]
    rows = template_rows(catalog, agency)
    if fmt == "csv":
        with out.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([["" if c is None else c for c in row] for row in rows])
    else:
        _write_xlsx(catalog, agency, header, rows, out)
    return len(rows)


def _write_xlsx(catalog: Catalog, agency: str, header: list[str], rows: list[list[object]], out: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    ws = book.active
    ws.title = "数据"
    ws.append(header)
    for row in rows:
        ws.append(row)
    for (cell,) in ws.iter_rows(min_row=2, min_col=8, max_col=8):
        cell.number_format = "yyyy-mm-dd hh:mm"  # a date typed here stays an Excel date
    ws.freeze_panes = "A2"
    units = book.create_sheet("单位")  # second: `push` reads the first sheet
    units.append(["指标", "单位", "可用单位（换算系数）", "地区"])
    for ind in catalog.indicators:
        if ind.agency == agency:
            aliases = "；".join(f"{u}（×{f:g}）" for u, f in ind.unit_aliases.items())
            where = f"{CITY_WIDE_NAME}或各区县" if ind.regional else CITY_WIDE_NAME
            units.append([ind.name_zh, ind.unit, aliases, where])
    book.save(out)
