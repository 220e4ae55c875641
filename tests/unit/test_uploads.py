"""Tables uploaded to the gateway are read as `push` reads files, and an .xlsx that would expand
beyond its bound (a zip bomb) is refused before any of it is unpacked."""

from __future__ import annotations

import io
import zipfile

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.files import FileError
from highland.ingest.names import Names
from highland.ingest.uploads import CSV_TYPES, MAX_XLSX_EXPANDED_BYTES, XLSX_TYPE, TooManyRows, table_rows

from tests.unit.test_files import CHINESE_HEADER, excel_workbook

ROW = "u1,0,重庆市商务委员会,电子商务交易额,重庆市,1200,亿元,2019/1/31\n"


def read(body: bytes, content_type: str, **kw) -> list:
    options = {"charset": None, "sheet": None, "max_rows": 100, "names": Names.of(default_catalog()), **kw}
    return table_rows(body, content_type, **options)


def test_a_gb18030_csv_upload_is_read_with_chinese_names_as_codes():
    [row] = read((CHINESE_HEADER + ROW).encode("gb18030"), CSV_TYPES[0])
    assert row.line == 2 and b'"agency":"cq_commerce"' in row.payload.replace(b" ", b"")


def test_rows_past_the_limit_stop_the_read():
    with pytest.raises(TooManyRows):
        read((CHINESE_HEADER + ROW * 4).encode(), CSV_TYPES[0], max_rows=3)


def test_an_xlsx_upload_is_read_like_a_file(tmp_path):
    row = ["x1", 0, "重庆市商务委员会", "电子商务交易额", None, 3, "亿元", "2019-03-01"]
    book = excel_workbook(tmp_path / "b.xlsx", [row])
    [row] = read(book.read_bytes(), XLSX_TYPE)
    assert row.line == 2


def test_a_zip_bomb_posing_as_a_workbook_is_refused_before_it_is_unpacked():
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/sharedStrings.xml", b"\0" * (MAX_XLSX_EXPANDED_BYTES + 1))
    assert len(bomb.getvalue()) < 1024 * 1024  # well under the gateway's body limit
    with pytest.raises(FileError, match="expands to"):
        read(bomb.getvalue(), XLSX_TYPE)
