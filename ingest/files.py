"""Reading agency files one row at a time (a 5 GB file never sits in memory).

CSV: a header row of event fields; cells are typed the way JSON would carry them (``revision`` an
integer, ``value`` a number, empty cells left out so defaults apply); a cell that does not parse
stays text and fails validation with a clear reason. JSON Lines: one event per line, sent as is.
A UTF-8 byte-order mark at the start of either is ignored (CONTRACT §1.1).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from highland.ingest.events import BOM, to_json

CSV_SUFFIXES = {".csv"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


class Row(NamedTuple):
    """One input row (a tuple: built for every row of multi-GB files, so it must be cheap)."""

    file: str
    line: int
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
    raise ValueError(f"{path}: unknown format (use .csv, .jsonl or .ndjson)")


def read_rows(path: Path) -> Iterator[Row]:
    return _csv_rows(path) if file_format(path) == "csv" else _jsonl_rows(path)


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


def _typed(cell: str, kind: type) -> object:
    try:
        return kind(cell)
    except ValueError:
        return cell


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.DictReader(text)
        for record in reader:
            event: dict[str, object] = {}
            for key, cell in record.items():
                if key is None:  # more cells than header columns
                    event["_extra_cells"] = cell
                elif cell is None or cell == "":
                    continue
                elif key == "value":
                    event[key] = _typed(cell.strip(), float)
                elif key == "revision":
                    event[key] = _typed(cell.strip(), int)
                else:
                    event[key] = cell
            yield Row(path.name, reader.line_num, to_json(event))
