"""Reading agency files: line numbers stay right across chunk boundaries, blank lines and a missing
final newline; CSV cells are typed the way JSON would carry them."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from highland.ingest.files import read_rows


def test_jsonl_rows_keep_their_line_numbers(tmp_path):
    path = tmp_path / "feed.jsonl"
    lines = [json.dumps({"event_id": f"e{i}", "pad": "x" * 300_000}) for i in range(8)]  # spans chunks
    lines.insert(3, "   ")
    path.write_bytes(("\r\n".join(lines)).encode())  # CRLF, no final newline
    rows = list(read_rows(path))
    assert [r.line for r in rows] == [1, 2, 3, 5, 6, 7, 8, 9]
    assert [json.loads(r.payload)["event_id"] for r in rows] == [f"e{i}" for i in range(8)]
    assert rows[3].origin == "feed.jsonl:5"


def test_csv_cells_are_typed(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text("event_id,revision,value,region,unit\na,1,2.5,,亿元\nb,x,abc,yuzhong,亿元\n")
    first, second = (json.loads(r.payload) for r in read_rows(path))
    assert first == {"event_id": "a", "revision": 1, "value": 2.5, "unit": "亿元"}
    assert second["revision"] == "x" and second["value"] == "abc"  # left as text: validation says why


# --- files as agencies have them (issue 16) ------------------------------------------------------------

CHINESE_HEADER = "事件编号,修订版本,机构,指标,地区,数值,单位,观测时间\n"
# What a statistician on Chinese Windows saves: Chinese names, dates as Excel writes them in a CSV,
# a number with a thousands separator (quoted by Excel), a trailing empty row.
GB_ROWS = ("t1,0,重庆市商务委员会,电子商务交易额,重庆市,1200,亿元,2019/1/31\n"
           't2,0,重庆市商务委员会,电子商务交易额,全市,"50,000",万元,2019/2/28 0:00\n'
           "p1,0,重庆市通信管理局,光纤宽带接入端口数,渝中区,0.12,万个,2019-06-30\n"
           ",,,,,,,\n")


def _events(path, **kwargs) -> list[dict]:
    from highland.catalog.loader import default_catalog
    from highland.ingest.names import Names

    return [json.loads(r.payload) for r in read_rows(path, names=Names.of(default_catalog()), **kwargs)]


def test_a_gb18030_csv_with_chinese_headers_and_names_reads_as_codes(tmp_path):
    path = tmp_path / "报表.csv"
    path.write_bytes((CHINESE_HEADER + GB_ROWS).encode("gb18030"))
    assert _events(path) == [
        {"event_id": "t1", "revision": 0, "agency": "cq_commerce", "indicator": "ecommerce_turnover",
         "region": "chongqing", "value": 1200.0, "unit": "亿元", "observed_at": "2019-01-31T00:00:00+08:00"},
        {"event_id": "t2", "revision": 0, "agency": "cq_commerce", "indicator": "ecommerce_turnover",
         "region": "chongqing", "value": 50000.0, "unit": "万元", "observed_at": "2019-02-28T00:00:00+08:00"},
        {"event_id": "p1", "revision": 0, "agency": "cq_comms_admin", "indicator": "fiber_broadband_ports",
         "region": "yuzhong", "value": 0.12, "unit": "万个", "observed_at": "2019-06-30T00:00:00+08:00"},
    ]


def test_a_gb18030_character_outside_gbk_is_read_as_itself_and_leaves_the_other_rows_alone(tmp_path):
    """GB18030's four-byte characters (CJK Extension A and B, minority scripts) are not in GBK: read
    as GBK, one such character made the whole file unreadable instead of one row unknown."""
    path = tmp_path / "报表.csv"
    rare = "t3,0,重庆市商务委员会,电子商务交易额,㐀𠀀区,7,亿元,2019/3/31\n"
    path.write_bytes((CHINESE_HEADER + GB_ROWS.replace(",,,,,,,\n", rare)).encode("gb18030"))
    events = _events(path)
    assert [e["event_id"] for e in events] == ["t1", "t2", "p1", "t3"]
    assert events[-1]["region"] == "㐀𠀀区"  # as written: the validator names it unknown_region


def test_utf8_with_or_without_bom_and_header_variants(tmp_path):
    text = ("编号,版本,单位名称,指标名称,区县,指标值,计量单位,日期\n"
            "v1,1,cq_commerce,ecommerce_turnover,,3,亿元,2019年5月1日\n")
    for name, data in [("plain.csv", text.encode()), ("bom.csv", b"\xef\xbb\xbf" + text.encode())]:
        path = tmp_path / name
        path.write_bytes(data)
        assert _events(path) == [{"event_id": "v1", "revision": 1, "agency": "cq_commerce",
                                  "indicator": "ecommerce_turnover", "value": 3.0, "unit": "亿元",
                                  "observed_at": "2019-05-01T00:00:00+08:00"}]


def test_a_wrong_encoding_is_one_clear_error(tmp_path):
    from highland.ingest.files import FileError, csv_encoding

    gb = tmp_path / "gb.csv"
    gb.write_bytes((CHINESE_HEADER + GB_ROWS).encode("gb18030"))
    with pytest.raises(FileError, match=r"gb.csv: line 1 is not utf-8 text.*--encoding gb18030"):
        list(read_rows(gb, encoding="utf-8-sig"))
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text(CHINESE_HEADER + GB_ROWS)
    with pytest.raises(FileError, match="the file is UTF-8, not gbk"):
        csv_encoding(utf8, "gbk")
    assert csv_encoding(gb) == "gb18030" and csv_encoding(utf8) == "utf-8-sig"


def test_unknown_headers_are_one_error_not_a_rejection_per_row(tmp_path):
    from highland.ingest.files import FileError

    path = tmp_path / "typo.csv"
    path.write_text("event_id,vaule\na,1\n")
    with pytest.raises(FileError, match=r"unknown column header.*'vaule'"):
        list(read_rows(path))


def excel_workbook(path, rows: list[list], sheet: str = "数据"):
    """An .xlsx as Excel writes it: date cells are datetimes with a date format, numbers are numbers."""
    from openpyxl import Workbook

    book = Workbook()
    ws = book.active
    ws.title = sheet
    ws.append(CHINESE_HEADER.strip().split(","))
    for row in rows:
        ws.append(row)
    for (cell,) in ws.iter_rows(min_row=2, min_col=8, max_col=8):
        cell.number_format = "yyyy/m/d"
    book.create_sheet("说明").append(["填报说明"])
    book.save(path)
    return path


XLSX_ROWS = [
    [1, 0, "重庆市商务委员会", "电子商务交易额", "重庆市", 1200, "亿元", datetime(2019, 1, 31)],
    ["t2", 0, "重庆市商务委员会", "电子商务交易额", None, 2.5, "亿元", datetime(2019, 3, 1, 12, 30)],
    [None] * 8,
]


def test_an_xlsx_reads_excel_dates_and_numbers(tmp_path):
    path = excel_workbook(tmp_path / "报表.xlsx", XLSX_ROWS)
    rows = list(read_rows(path))
    assert [r.line for r in rows] == [2, 3]  # the row numbers Excel shows
    assert _events(path) == [
        {"event_id": "1", "revision": 0, "agency": "cq_commerce", "indicator": "ecommerce_turnover",
         "region": "chongqing", "value": 1200.0, "unit": "亿元", "observed_at": "2019-01-31T00:00:00+08:00"},
        {"event_id": "t2", "revision": 0, "agency": "cq_commerce", "indicator": "ecommerce_turnover",
         "value": 2.5, "unit": "亿元", "observed_at": "2019-03-01T12:30:00+08:00"},
    ]


def test_an_xlsx_sheet_by_name_or_number(tmp_path):
    from highland.ingest.files import FileError

    path = excel_workbook(tmp_path / "book.xlsx", XLSX_ROWS)
    assert len(_events(path, sheet="数据")) == 2 and len(_events(path, sheet="1")) == 2
    with pytest.raises(FileError, match=r"unknown column header.*填报说明"):
        _events(path, sheet="说明")
    with pytest.raises(FileError, match=r"no sheet 'x'.*数据, 说明"):
        _events(path, sheet="x")
