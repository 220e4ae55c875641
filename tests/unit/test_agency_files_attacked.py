"""Files as a careless agency has them, read the way Excel shows them (issue 16, attacked): a
percentage cell is the number the agency sees, a district merged over several rows belongs to each
of them, and an encoding that is neither UTF-8 nor GB18030 is one clear error."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.files import FileError, read_rows
from highland.ingest.names import Names

from tests.unit.test_files import CHINESE_HEADER

HEADER = CHINESE_HEADER.strip().split(",")


def events(path, **kwargs) -> list[dict]:
    return [json.loads(r.payload) for r in read_rows(path, names=Names.of(default_catalog()), **kwargs)]


def workbook(path, rows: list[list], formats: dict[str, str] = {}, merged: tuple[str, ...] = ()):  # noqa: B006
    from openpyxl import Workbook

    book = Workbook()
    ws = book.active
    ws.append(HEADER)
    for row in rows:
        ws.append(row)
    for cell, number_format in formats.items():
        ws[cell].number_format = number_format
    for cells in merged:
        ws.merge_cells(cells)
    book.save(path)
    return path


def test_a_percentage_cell_is_the_number_excel_shows_in_the_unit_percent(tmp_path):
    # Excel keeps 80.3% as 0.803; read as 0.803 %, a penetration of 80.3% would be stored as 0.803%.
    day = datetime(2019, 12, 31)
    path = workbook(tmp_path / "普及率.xlsx", [
        ["p1", 0, "重庆市通信管理局", "互联网普及率", "重庆市", 0.803, "%", day],
        ["p2", 0, "重庆市通信管理局", "互联网普及率", "重庆市", 0.07, "%", day],
        ["p3", 0, "重庆市通信管理局", "互联网普及率", "重庆市", 0.803, "fraction", day],  # the fraction, as kept
        ["p4", 0, "重庆市通信管理局", "互联网普及率", "重庆市", 80.3, "%", day],  # a literal "%" does not scale
    ], formats={"F2": "0.0%", "F3": "0%", "F4": "0.0%", "F5": '0.0"%"'})
    assert [(e["value"], e["unit"]) for e in events(path)] == [(80.3, "%"), (7.0, "%"), (0.803, "fraction"),
                                                               (80.3, "%")]


def test_a_district_merged_over_several_rows_is_each_rows_district(tmp_path):
    # A report form merges 渝中区 over its rows; Excel shows it on each. Read as empty, the second
    # row would be the whole city's ports (the contract's default region): a wrong number.
    path = workbook(tmp_path / "端口.xlsx", [
        ["m1", 0, "重庆市通信管理局", "光纤宽带接入端口数", "渝中区", 100, "ports", datetime(2019, 12, 31)],
        ["m2", 0, None, None, None, 200, None, datetime(2018, 12, 31)],
        ["m3", 0, "重庆市通信管理局", "光纤宽带接入端口数", "江北区", 300, "ports", datetime(2019, 12, 31)],
        ["m4", 0, "重庆市通信管理局", "光纤宽带接入端口数", "江北区", None, "ports", datetime(2018, 12, 31)],
    ], merged=("C2:C3", "D2:D3", "E2:E3", "G2:G3", "F4:F5"))
    got = events(path)
    assert [(e["event_id"], e.get("agency"), e.get("indicator"), e.get("region"), e.get("value"), e.get("unit"))
            for e in got] == [
        ("m1", "cq_comms_admin", "fiber_broadband_ports", "yuzhong", 100.0, "ports"),
        ("m2", "cq_comms_admin", "fiber_broadband_ports", "yuzhong", 200.0, "ports"),
        ("m3", "cq_comms_admin", "fiber_broadband_ports", "jiangbei", 300.0, "ports"),
        # a value merged over two rows is one number, not two: the second row lacks it (rejected)
        ("m4", "cq_comms_admin", "fiber_broadband_ports", "jiangbei", None, "ports"),
    ]


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16"])
def test_an_encoding_other_than_utf8_or_gb18030_is_refused_as_one_error(tmp_path, encoding):
    # Read as Latin-1, a GB18030 unit 亿元 is 'ÒÚÔª': one unit_mismatch per row, what issue 16 forbids.
    path = tmp_path / "a.csv"
    path.write_bytes(("event_id,agency,indicator,value,unit,observed_at\n"
                      "x,cq_commerce,ecommerce_turnover,1,亿元,2019/5/1\n").encode("gb18030"))
    with pytest.raises(FileError, match="utf-8 or gb18030"):
        events(path, encoding=encoding)


def test_a_gb18030_file_behind_a_utf8_byte_order_mark_is_read_as_gb18030(tmp_path):
    # Before: detected as UTF-8 (the mark), "pass --encoding gb18030", which was then refused as
    # "the file is UTF-8": no way to read it.
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (CHINESE_HEADER + "x,0,重庆市商务委员会,电子商务交易额,重庆市,1,亿元,"
                                                         "2019/1/31\n").encode("gb18030"))
    assert [e["unit"] for e in events(path)] == ["亿元"]
    assert [e["unit"] for e in events(path, encoding="gb18030")] == ["亿元"]


def rewritten(book, path, sheet_xml) -> object:
    """``book`` saved to ``path`` with its first sheet's XML passed through ``sheet_xml``: files as
    other writers than Excel make them."""
    import io
    import zipfile

    original = io.BytesIO()
    book.save(original)
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            target.writestr(info, sheet_xml(data) if info.filename == "xl/worksheets/sheet1.xml" else data)
    return path


def test_rows_below_a_stale_declared_dimension_are_read_not_dropped(tmp_path):
    # A writer that leaves <dimension ref="A1:H2"/> behind: read-only openpyxl stopped there and the
    # other rows vanished without an error (a sum short by them).
    import re

    from openpyxl import Workbook

    book = Workbook()
    book.active.append(HEADER)
    for i in range(1, 4):
        book.active.append([f"d{i}", 0, "重庆市商务委员会", "电子商务交易额", "重庆市", i, "亿元", "2019/1/31"])
    path = rewritten(book, tmp_path / "stale.xlsx",
                     lambda xml: re.sub(rb'<dimension ref="[^"]*" ?/>', b'<dimension ref="A1:H2"/>', xml))
    assert [e["value"] for e in events(path)] == [1.0, 2.0, 3.0]


def test_a_row_past_excels_last_row_is_refused_not_walked_to(tmp_path):
    # A few KiB naming row 1,048,577 made the reader walk a million empty rows (seconds of CPU per
    # upload; r="50000000": minutes) within every byte limit.
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(HEADER)
    book.active.append(["far", 0, "重庆市商务委员会", "电子商务交易额", "重庆市", 1, "亿元", "2019/1/31"])
    path = rewritten(book, tmp_path / "far.xlsx", lambda xml: xml.replace(b'"A1:H2"', b'"A1:H1048577"')
                     .replace(b'<row r="2"', b'<row r="1048577"').replace(b'2"', b'1048577"'))
    with pytest.raises(FileError, match="past Excel's last row"):
        events(path)


def test_long_event_numbers_excel_could_not_keep_are_refused_not_merged(tmp_path):
    # Typed as numbers, 20190531000000000001 and ...02 are one number to Excel (15 digits): as the
    # same event number the second counted as the first's duplicate, its value lost from the sum.
    # In a CSV Excel writes both as "2.01905E+19".
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(HEADER)
    for number in (20190531000000000001, 20190531000000000002, 201905310001):
        book.active.append([float(number), 0, "重庆市商务委员会", "电子商务交易额", "重庆市", 1, "亿元", "2019/1/31"])
    book.save(workbook_path := tmp_path / "ids.xlsx")
    assert [e["event_id"] for e in events(workbook_path)] == [2.0190531e19, 2.0190531e19, "201905310001"]
    csv = tmp_path / "ids.csv"
    csv.write_text(CHINESE_HEADER + "".join(f"{n},0,重庆市商务委员会,电子商务交易额,重庆市,1,亿元,2019/1/31\n"
                                            for n in ("2.01905E+19", "2.01905E+19", "201905310001")))
    assert [e["event_id"] for e in events(csv)] == [2.01905e19, 2.01905e19, "201905310001"]
    from tests.unit.test_push_report import highland

    report = json.loads(highland("push", str(csv), "--agency", "cq_commerce", "--dry-run", "--json").stdout)
    assert (report["accepted"], [(r["line"], r["reason"]) for r in report["rejections"]]) == (
        1, [(2, "schema_violation"), (3, "schema_violation")])


def test_a_csv_row_is_named_by_the_line_it_starts_on_when_a_quoted_cell_breaks_lines(tmp_path):
    # Excel writes a cell typed with Alt+Enter as a quoted cell with a line break: the rows after it
    # were reported one line late (at the line the row ends on), pointing at the wrong row.
    from tests.unit.test_push_report import highland

    path = tmp_path / "breaks.csv"
    path.write_text(CHINESE_HEADER
                    + 'a,0,重庆市商务委员会,"电子商务\n交易额",重庆市,1,kg,2019/1/31\n'
                    + "b,0,重庆市商务委员会,电子商务交易额,重庆市,1,kg,2019/1/31\n")
    report = json.loads(highland("push", str(path), "--agency", "cq_commerce", "--dry-run", "--json").stdout)
    assert [(r["line"], r["reason"]) for r in report["rejections"]] == [(2, "unit_mismatch"), (4, "unit_mismatch")]
