"""Reading agency files one row at a time (a 5 GB file never sits in memory).

JSON Lines: one event per line, sent as is. Tables (CSV and .xlsx): a header row naming the event
fields (the contract's names, the Chinese ones or a variant, ``names.HEADERS``), then one event per
row. Cells are typed the way JSON would carry them (``revision`` an integer, ``value`` a number,
``observed_at`` RFC 3339, empty cells left out so defaults apply); the catalog's names of
indicators, regions and agencies become codes. A cell that does not parse stays text and fails
validation with a clear reason: ``events.validate`` is the one judge.

CSV is UTF-8 (a byte-order mark is ignored, CONTRACT §1.1) or GB18030/GBK, what Excel on Chinese
Windows writes: detected from the first MiB unless given. A file that does not decode is ONE error
naming the encoding and the line, never a page of unit mismatches made of garbled text.
A date or time without an offset (a CSV date as Excel writes it, an Excel date cell) is in the
plan's timezone (Asia/Shanghai).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from highland.ingest.events import BOM, RFC3339_PATTERN, to_json
from highland.ingest.names import FIELDS, Names, field_of

CSV_SUFFIXES = {".csv"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
XLSX_SUFFIXES = {".xlsx", ".xlsm"}
SNIFF_BYTES = 1 << 20
EXCEL_MAX_ROWS = 1_048_576  # the last row of an Excel sheet
DEFAULT_TIMEZONE = "Asia/Shanghai"  # the plan's (catalog/data/plan.yaml); used when no Names are given
# GBK and GB2312 are subsets of GB18030: reading with GB18030 also reads what Excel calls "GBK"
# when a cell holds a character beyond it.
_SUPERSETS = {"gbk": "gb18030", "gb2312": "gb18030", "utf-8": "utf-8-sig", "ascii": "utf-8-sig"}
_CODECS = ("utf-8-sig", "gb18030")  # what agencies' files are in (docs/agencies.md, Encodings)


class FileError(ValueError):
    """A file that cannot be read as a whole (encoding, headers, sheet): one message, no rows."""


class Row(NamedTuple):
    """One input row (a tuple: built for every row of multi-GB files, so it must be cheap)."""

    file: str
    line: int  # the line of a text file; for .xlsx the row number as Excel shows it
    payload: bytes  # the JSON that is validated and, if accepted, sent

    @property
    def origin(self) -> str:
        """file:line, for messages and dead letters (built only when a row is rejected)."""
        return f"{self.file}:{self.line}"


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in XLSX_SUFFIXES:
        return "xlsx"
    raise FileError(f"{path}: unknown format (use .csv, .xlsx, .jsonl or .ndjson)")


def read_rows(path: Path, *, encoding: str | None = None, sheet: str | None = None,
              names: Names | None = None) -> Iterator[Row]:
    """The rows of ``path``. ``encoding``: of a CSV (None: detected); ``sheet``: of an .xlsx (None:
    the first); ``names``: the catalog's names to map to codes (None: codes only)."""
    kind = file_format(path)
    if kind == "jsonl":
        return _jsonl_rows(path)
    cells = _Cells(names)
    if kind == "xlsx":
        return _xlsx_rows(path, sheet, cells)
    return _csv_rows(path, csv_encoding(path, encoding), cells)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    name, number = path.name, 0
    with path.open("rb") as f:
        rest = f.read(len(BOM)).removeprefix(BOM)  # a byte-order mark is not part of the first row
        # 1 MiB at a time, split in bulk: far cheaper than reading line by line.
        while chunk := f.read(1 << 20):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                line = line.strip()
                if line:
                    yield Row(name, number, line)
        if rest.strip():
            yield Row(name, number + 1, rest.strip())


# --- encodings ----------------------------------------------------------------------------------------

def _is_utf8(head: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut last character is fine
    except UnicodeDecodeError:
        return False
    return True


def csv_encoding(path: Path, given: str | None = None) -> str:
    """The codec a CSV is read with: ``given`` (checked), else UTF-8 if the first MiB decodes as
    UTF-8, else GB18030. Raises FileError for an unknown codec, or for a non-UTF-8 codec given for
    a file that is plainly UTF-8 (it would be read as garbled text)."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    # A byte-order mark is UTF-8 itself: a GB18030 file behind one (some tools add it) is GB18030.
    if given is None:
        return "utf-8-sig" if _is_utf8(head) else "gb18030"
    try:
        name = codecs.lookup(given).name
    except LookupError:
        name = ""
    name = _SUPERSETS.get(name, name)
    if name not in _CODECS:  # Latin-1 & co. read anything: garbled units, one unit_mismatch per row
        raise FileError(f"{path.name}: unknown encoding {given!r} (use utf-8 or gb18030)")
    if name != "utf-8-sig" and not head.isascii() and _is_utf8(head):
        raise FileError(f"{path.name}: the file is UTF-8, not {given}: drop --encoding (or pass utf-8)")
    return name


def encoding_label(codec: str) -> str:
    return "utf-8" if codec == "utf-8-sig" else codec


# --- tables ----------------------------------------------------------------------------------------------

def _columns(file: str, header: Iterable[object], hint: str) -> list[str | None]:
    """The event field of each column (None: a column without a header). Unknown or repeated
    headers are one error for the file: the alternative is the same rejection on every row."""
    fields: list[str | None] = []
    unknown: list[str] = []
    for cell in header:
        text = "" if cell is None else str(cell).strip()
        field = field_of(text) if text else None
        if text and field is None:
            unknown.append(text)
        fields.append(field)
    if unknown:
        garbled = any(not t.isascii() for t in unknown)
        raise FileError(f"{file}: unknown column header(s) {', '.join(map(repr, unknown))}"
                        + (f" ({hint})" if garbled and hint else "")
                        + f"; expected the event fields ({', '.join(FIELDS)}) or their Chinese names "
                        "(docs/agencies.md, Files)")
    named = [f for f in fields if f]
    repeated = sorted({f for f in named if named.count(f) > 1})
    if repeated:
        raise FileError(f"{file}: more than one column means {', '.join(repeated)}")
    return fields


EXCEL_EXACT_INTEGERS = 10**15  # Excel keeps 15 significant digits
_EXCEL_SCIENTIFIC = re.compile(r"^[0-9](\.[0-9]+)?E\+[0-9]+$")  # how Excel shows a long number
_THOUSANDS = re.compile(r"^[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$")
_RFC3339 = re.compile(RFC3339_PATTERN)
# Dates as people and Excel write them: 2019-05-31, 2019/5/31, 2019.5.31, 2019年5月31日, with an
# optional time (Excel's CSV writes "2019/5/31 0:00").
_LOCAL_DATE = re.compile(r"^([0-9]{4})[-/.年]([0-9]{1,2})[-/.月]([0-9]{1,2})日?"
                         r"(?:[ T]+([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?)?$")


class _Cells:
    """Cells of one table to the JSON an event carries."""

    def __init__(self, names: Names | None) -> None:
        self.names = names
        self.zone = ZoneInfo(names.timezone if names else DEFAULT_TIMEZONE)

    def event(self, fields: list[str | None], row: Iterable[object]) -> dict[str, object] | None:
        """The event of one row; None for a row with nothing in it (Excel leaves many)."""
        event: dict[str, object] = {}
        empty = True
        percent: _Percent | None = None
        for i, cell in enumerate(row):
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                continue
            empty = False
            field = fields[i] if i < len(fields) else None
            if field is None:  # a cell outside the named columns: refused, never silently dropped
                event["_extra_cells"] = str(cell)
            else:
                event[field] = self.typed(field, cell)
                if field == "value" and isinstance(cell, _Percent):
                    percent = cell
        if percent is not None and event.get("unit") == "%":
            # Excel keeps 80.3% as 0.803 and shows 80.3: in the unit "%" the number is the one shown.
            event["value"] = float(Decimal(repr(float(percent))) * 100)
        return None if empty else event

    def typed(self, field: str, cell: object) -> object:
        if isinstance(cell, str):
            return self._text(field, cell.strip())
        if isinstance(cell, bool):
            return cell  # TRUE in a number column: the validator names it
        if isinstance(cell, datetime | date):
            return self._moment(cell) if field == "observed_at" else cell.isoformat()
        if isinstance(cell, int | float):
            return self._number(field, cell)
        return str(cell)  # a time of day, an error cell: text the validator will refuse

    def _text(self, field: str, text: str) -> object:
        if field == "event_id" and _EXCEL_SCIENTIFIC.match(text):
            return float(text)  # 2.01905E+19: Excel's display of a long number, not the one typed: refused
        if field == "value":
            return _parsed(text.replace(",", "") if _THOUSANDS.match(text) else text, float)
        if field == "revision":
            return _parsed(text, int)
        if field == "observed_at":
            return text if _RFC3339.match(text) else self._local_date(text)
        if self.names is not None:
            return self.names.code(field, text)
        return text

    def _number(self, field: str, number: float) -> object:
        integral = isinstance(number, int) or number.is_integer()
        if field == "value":
            return float(number)
        if field == "revision":
            return int(number) if integral else number
        # An event number typed as 17 in Excel is the text "17"; a number anywhere else is refused,
        # and so is one past Excel's 15 digits: Excel kept another number than the one typed, and
        # two such events would share a number (the second counted as the first's duplicate).
        if field == "event_id" and integral and abs(number) < EXCEL_EXACT_INTEGERS:
            return str(int(number))
        return number

    def _local_date(self, text: str) -> str:
        m = _LOCAL_DATE.match(text)
        if not m:
            return text
        year, month, day, hour, minute, second, fraction = m.groups()
        try:
            moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                              int(second or 0), int((fraction or "0").ljust(6, "0")))
        except ValueError:  # 2019-02-30: left as text, a schema violation
            return text
        return self._moment(moment)

    def _moment(self, moment: date) -> str:
        if not isinstance(moment, datetime):
            moment = datetime.combine(moment, time())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return moment.isoformat()


def _parsed(cell: str, kind: type) -> object:
    try:
        return kind(cell)
    except ValueError:
        return cell


def _csv_rows(path: Path, codec: str, cells: _Cells) -> Iterator[Row]:
    with path.open("rb") as raw:
        if raw.read(len(BOM)) != BOM or codec.startswith("utf"):  # a mark before GB18030 is no text
            raw.seek(0)
        text = io.TextIOWrapper(raw, encoding=codec, errors="strict", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader, None)
            if header is None:
                return
            fields = _columns(path.name, header, f"is the file {'GB18030' if codec.startswith('utf') else 'UTF-8'}? "
                                                 "pass --encoding")
            ended = reader.line_num
            for record in reader:
                # A quoted cell may hold line breaks: a row is named by the line it starts on.
                started, ended = ended + 1, reader.line_num
                event = cells.event(fields, record)
                if event is not None:
                    yield Row(path.name, started, to_json(event))
        except UnicodeDecodeError:
            line, sample = _first_undecodable_line(path, codec)
            raise FileError(f"{path.name}: line {line} is not {encoding_label(codec)} text ({sample!r}); save the "
                            f"file as UTF-8, or pass --encoding {'gb18030' if codec.startswith('utf') else 'utf-8'}"
                            ) from None


def _first_undecodable_line(path: Path, codec: str) -> tuple[int, bytes]:
    """Where a file stops decoding (the reader decodes in blocks, so its own line count is off).
    Only on the error path: it reads the file again."""
    decoder = codecs.getincrementaldecoder(codec)()
    number = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as exc:
                return number, line[max(exc.start - 8, 0):exc.end + 8]
    return number, b""


def _xlsx_rows(path: Path, sheet: str | None, cells: _Cells) -> Iterator[Row]:
    from openpyxl import load_workbook  # only when a workbook is read

    try:
        book = load_workbook(path, read_only=True, data_only=True)  # data_only: a formula's value
    except Exception as exc:  # a corrupt or non-xlsx file: openpyxl raises many kinds
        raise FileError(f"{path.name}: not a readable .xlsx workbook ({exc})") from None
    try:
        ws = book[_sheet_name(path.name, book.sheetnames, sheet)]
        # The dimension a file declares may be stale (some writers never update it): read-only
        # openpyxl would silently stop at it, dropping the rows below. Read every row there is.
        ws.reset_dimensions()
        merged = _Merged(_merge_ranges(ws))
        fields: list[str | None] | None = None
        padding: object = None
        for number, row in enumerate(ws.iter_rows(min_row=1), 1):
            if number > EXCEL_MAX_ROWS:  # a row number no Excel writes: a gap of millions to walk
                raise FileError(f"{path.name}: row {number} is past Excel's last row ({EXCEL_MAX_ROWS})")
            if row is padding:  # openpyxl yields one shared tuple for each row missing in the file
                continue
            values = [_cell_value(c) for c in row]
            if not any(v is not None and (not isinstance(v, str) or v.strip()) for v in values):
                padding = row
                continue
            values = merged.fill(number, values, fields)
            if fields is None:  # the first non-empty row is the header
                fields = _columns(path.name, values, "")
                continue
            event = cells.event(fields, values)
            if event is not None:
                yield Row(path.name, number, to_json(event))
    finally:
        book.close()


class _Percent(float):
    """A number cell Excel shows as a percentage (0.803 shown as 80.3%)."""


_QUOTED_OR_ESCAPED = re.compile(r'"[^"]*"|\\.')


def _cell_value(cell: object) -> object:
    value = getattr(cell, "value", None)
    number = isinstance(value, float | int) and not isinstance(value, bool)
    # A "%" in a number format scales what Excel shows by 100, unless quoted or escaped (literal).
    if number and "%" in _QUOTED_OR_ESCAPED.sub("", getattr(cell, "number_format", None) or ""):
        return _Percent(value)  # type: ignore[arg-type]
    return value


# Merged cells: Excel keeps the value in the first cell only and shows it across the range, and
# report forms merge a district or an indicator over the rows that share it. Read as shown, those
# rows carry it; left empty, a row without its district would be the whole city's (the contract's
# default region). Never copied: an event number (a second row would be the first's duplicate) or a
# value (one number is not two): such rows are rejected as missing it.
_NOT_COPIED = {"event_id", "value"}


def _merge_ranges(ws: object) -> list[tuple[int, int, int, int]]:
    """(first row, last row, first column, last column) of each merged range of a read-only sheet:
    read from its XML (openpyxl's read-only mode does not), which keeps them after the rows."""
    from xml.etree.ElementTree import iterparse

    from openpyxl.utils.cell import range_boundaries

    ranges = []
    with ws._get_source() as source:  # type: ignore[attr-defined]
        for _, element in iterparse(source):
            if element.tag.endswith("}mergeCell") and element.get("ref"):
                min_col, min_row, max_col, max_row = range_boundaries(element.get("ref"))
                ranges.append((min_row, max_row, min_col, max_col))
            element.clear()
    return sorted(ranges)


class _Merged:
    """Fills each row's merged cells from the first cell of their range, row by row: down the
    range's first column (a merge across columns joins cells of one row, which copying would turn
    into two fields). What covers a cell is kept per column, so the work is one step per range plus
    the row's cells per row, however many ranges a file declares."""

    def __init__(self, ranges: list[tuple[int, int, int, int]]) -> None:
        self._pending, self._next = ranges, 0  # sorted by first row
        self._cover: dict[int, tuple[int, int, object]] = {}  # column -> (first row, last row, anchor)

    def fill(self, number: int, values: list[object], fields: list[str | None] | None) -> list[object]:
        while self._next < len(self._pending) and self._pending[self._next][0] <= number:
            first, last, left, _right = self._pending[self._next]
            self._next += 1
            # (an empty first row is skipped before it gets here: then there is nothing to copy)
            anchor = values[left - 1] if first == number and left - 1 < len(values) else None
            if left <= len(values):
                self._cover[left] = (first, last, anchor)
        if not self._cover:
            return values
        values = list(values)
        for column, (first, last, anchor) in list(self._cover.items()):
            if last < number:
                del self._cover[column]
                continue
            field = fields[column - 1] if fields is not None and column - 1 < len(fields) else None
            if number != first and values[column - 1] is None and field not in _NOT_COPIED:
                values[column - 1] = anchor
        return values


def _sheet_name(file: str, names: list[str], wanted: str | None) -> str:
    if wanted is None:
        return names[0]
    if wanted in names:
        return wanted
    if wanted.isdigit() and 1 <= int(wanted) <= len(names):
        return names[int(wanted) - 1]
    raise FileError(f"{file}: no sheet {wanted!r} (sheets: {', '.join(names)})")
