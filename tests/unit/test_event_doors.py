"""CONTRACT §1.1 at each door: a byte-order mark, repeated member names and lone surrogates in
files and request bodies, the ``schema`` header of a Kafka record, and strict JSON out."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from typing import Any

from aiokafka import ConsumerRecord
from highland.catalog.domain import ProgressRow
from highland.catalog.loader import default_catalog
from highland.ingest.events import Accepted, Reason, schema_of, validate, validate_batch
from highland.ingest.files import read_rows
from highland.ingest.gateway import split_body
from highland.sinks.writer import BatchShares
from highland.streams.app import split
from typer.testing import CliRunner

from highland.cli import app as cli

CATALOG = default_catalog()
NOW = datetime(2019, 6, 1, tzinfo=UTC)
GOOD = {"event_id": "e-1", "agency": "cq_commerce", "indicator": "ecommerce_turnover", "value": 12.5,
        "unit": "亿元", "observed_at": "2019-05-01T00:00:00+08:00"}
GOOD_JSON = json.dumps(GOOD, ensure_ascii=False).encode()
BOM = "\ufeff".encode()
V1 = ("schema", b"metric-event/1")


def reasons(payloads: list[bytes]) -> list[str]:
    return ["accepted" if isinstance(v, Accepted) else v.reason.value
            for v in (validate(p, CATALOG, now=NOW, pushed_by="cq_commerce") for p in payloads)]


# --- byte-order marks -------------------------------------------------------------------------------

def test_a_byte_order_mark_before_an_event_is_ignored():
    assert reasons([BOM + GOOD_JSON]) == ["accepted"]
    assert isinstance(validate("\ufeff" + GOOD_JSON.decode(), CATALOG, now=NOW), Accepted)
    assert reasons([BOM + b"{"]) == ["malformed_json"]  # whatever follows it is read as it is


def test_a_byte_order_mark_at_the_start_of_a_file_is_ignored(tmp_path):
    jsonl = tmp_path / "feed.jsonl"
    jsonl.write_bytes(BOM + GOOD_JSON + b"\n" + GOOD_JSON + b"\n")
    csv = tmp_path / "feed.csv"
    csv.write_bytes(BOM + "event_id,agency,indicator,value,unit,observed_at\n"
                          "e-1,cq_commerce,ecommerce_turnover,12.5,亿元,2019-05-01T00:00:00+08:00\n".encode())
    for path in (jsonl, csv):
        assert reasons([row.payload for row in read_rows(path)]) == ["accepted"] * (2 if path == jsonl else 1)


def test_a_byte_order_mark_at_the_start_of_a_request_body_is_ignored():
    for content_type, body in [("application/json", GOOD_JSON), ("application/json", b"[" + GOOD_JSON + b"]"),
                               ("application/x-ndjson", GOOD_JSON + b"\n" + GOOD_JSON)]:
        payloads = split_body(BOM + body, content_type)
        assert payloads is not None and set(reasons(payloads)) == {"accepted"}


# --- repeated member names and lone surrogates in a request body --------------------------------------

def test_each_element_of_a_json_array_body_is_judged_as_sent():
    repeated = GOOD_JSON[:-1] + b', "value": 13}'
    surrogate = GOOD_JSON.replace(b'"e-1"', b'"\\ud800"')
    nested = GOOD_JSON[:-1] + b', "x": {"a": 1, "a": 2}}'
    body = b"[" + b", ".join([GOOD_JSON, repeated, surrogate, nested, b"7"]) + b"]"
    assert reasons(split_body(body, "application/json") or []) == [
        "accepted", "malformed_json", "malformed_json", "malformed_json", "schema_violation"]


def test_a_body_that_is_not_json_is_refused_whole():
    for body in [b"", b"[1,]", b"[1] x", b"\xff[]", "[]".encode("utf-16")]:
        assert split_body(body, "application/json") is None


# --- the schema header of a Kafka record ----------------------------------------------------------

def test_a_record_is_version_1_unless_its_schema_header_names_another():
    assert schema_of([]) == b"metric-event/1"
    assert schema_of([("trace", b"x"), V1]) == b"metric-event/1"
    assert schema_of([V1, ("schema", b"metric-event/2")]) == b"metric-event/2"
    assert schema_of([("schema", None)]) is None


def test_a_record_of_another_schema_is_a_schema_violation_unread():
    verdicts = validate_batch([GOOD_JSON, GOOD_JSON, GOOD_JSON, b"{"], CATALOG, now=NOW,
                              headers=[[], [V1], [("schema", b"dead-letter/1")], [("schema", b"metric-event/2")]])
    assert [v if isinstance(v, Accepted) else v.reason for v in verdicts][2:] == [Reason.SCHEMA_VIOLATION] * 2
    assert all(isinstance(v, Accepted) for v in verdicts[:2])


def record(offset: int, value: bytes, headers: list[tuple[str, bytes]]) -> ConsumerRecord:
    return ConsumerRecord("highland.events", 0, offset, 0, 0, b"k", value, None, 1, len(value), tuple(headers))


def test_the_worker_dead_letters_a_record_of_another_schema():
    records = [record(0, GOOD_JSON, []), record(1, GOOD_JSON, [V1]), record(2, GOOD_JSON, [("schema", b"x/9")])]
    letters = split(records, CATALOG, NOW, BatchShares(1))
    assert [(letter.reason, letter.origin) for letter in letters] == [(Reason.SCHEMA_VIOLATION, "highland.events/0/2")]


# --- strict JSON out -----------------------------------------------------------------------------------

def strict_loads(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_progress_json_is_strict_json_even_when_a_stored_sum_is_not_finite(monkeypatch):
    row = ProgressRow("ecommerce_turnover", "E-commerce", "flow", "亿元", "cq_commerce", "2019", math.inf,
                      1.0, 18000.0, 2020, 6000.0, math.nan, "on_track", -math.inf, None)
    monkeypatch.setattr("highland.sinks.client.connect", lambda settings, **_: None)
    monkeypatch.setattr("highland.sinks.progress.progress", lambda client, db, catalog, day: [row])
    result = CliRunner().invoke(cli, ["progress", "--as-of", "2019-06-30", "--json"])
    assert result.exit_code == 0, result.output
    (printed,) = strict_loads(result.stdout)["indicators"]
    assert (printed["actual"], printed["pct_of_target"], printed["projected"], printed["expected"]) == (
        None, None, None, 1.0)
    assert date.fromisoformat(strict_loads(result.stdout)["as_of"]) == date(2019, 6, 30)
