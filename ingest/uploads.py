"""Tables uploaded to the gateway: the CSV and .xlsx files `highland push` reads, read the same way.

``POST /v1/events`` with ``Content-Type: text/csv`` (``charset=utf-8`` or ``gb18030``/``gbk``; none:
detected as `push` detects it) or the .xlsx media type (``?sheet=NAME`` or its number; none: the
first sheet). The body is written to a private temporary file (mode 600) and read by
ingest/files.py, so headers, Chinese names, dates in Chongqing time and encodings mean exactly what
they mean to `push` (docs/agencies.md, "Files"). JSON and NDJSON bodies are split by the gateway.

Bounded as every body is: the bytes by the gateway before this runs, the rows here (``TooManyRows``
as soon as the count passes the limit, before the rest is read), and an .xlsx, which is a zip
archive, by what it expands to: an archive declaring more than ``MAX_XLSX_EXPANDED_BYTES`` in all
is refused before it is opened (a few MiB of zeros compress to a few KiB; Python's zipfile never
yields more than a member declares, so the declared sizes bound what openpyxl reads).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from highland.ingest.files import FileError, Row, read_rows
from highland.ingest.names import Names

CSV_TYPES = ("text/csv", "application/csv")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_SUFFIX = {**dict.fromkeys(CSV_TYPES, ".csv"), XLSX_TYPE: ".xlsx"}
MAX_XLSX_EXPANDED_BYTES = 256 * 1024 * 1024  # a 10,000-row sheet expands to a few MiB


class TooManyRows(Exception):
    pass


def is_table(content_type: str) -> bool:
    return content_type in _SUFFIX


def table_rows(body: bytes, content_type: str, *, charset: str | None, sheet: str | None,
               max_rows: int, names: Names) -> list[Row]:
    """The rows of an uploaded CSV or .xlsx, each with its line (as Excel shows it) and its event as
    JSON. Raises FileError for a table that cannot be read as a whole (encoding, headers, sheet) and
    TooManyRows past ``max_rows``. CPU-bound: the gateway runs it in a worker thread."""
    if content_type == XLSX_TYPE:
        _check_expansion(body)
    with tempfile.TemporaryDirectory(prefix="highland-upload-") as folder:  # 700, removed at once
        path = Path(folder) / f"upload{_SUFFIX[content_type]}"
        path.write_bytes(body)
        rows: list[Row] = []
        for row in read_rows(path, encoding=charset, sheet=sheet, names=names):
            rows.append(row)
            if len(rows) > max_rows:
                raise TooManyRows(f"more than {max_rows} events in one request")
        return rows


def _check_expansion(body: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            expanded = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise FileError(f"upload.xlsx: not a readable .xlsx workbook ({exc})") from None
    if expanded > MAX_XLSX_EXPANDED_BYTES:
        raise FileError(f"upload.xlsx: the workbook expands to {expanded} bytes, more than "
                        f"{MAX_XLSX_EXPANDED_BYTES}; split it")


__all__ = ["CSV_TYPES", "XLSX_TYPE", "FileError", "Row", "TooManyRows", "is_table", "table_rows"]
