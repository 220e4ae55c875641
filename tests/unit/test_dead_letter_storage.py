"""Storing the dead-letter topic (sinks/dead_letters.py, ingest/dead_letters.py) with a fake
ClickHouse client: whatever is on the topic, forged or corrupt, is stored -- as sent, sanitized,
or as an unreadable record of its own -- or skipped with a log line; it never holds up the rest."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_driver.errors import ServerException, TypeMismatchError
from highland.ingest.dead_letters import DeadLetter, unreadable
from highland.ingest.events import Reason
from highland.sinks.dead_letters import store_isolated

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def letter(detail: str, received_at: datetime = NOW, payload: str = "{}") -> DeadLetter:
    return DeadLetter(reason=Reason.UNKNOWN_INDICATOR, detail=detail, agency="cq_commerce", received_at=received_at,
                      source="push", origin="f.jsonl:1", payload=payload)


class FakeClient:
    """Takes INSERTs of dead-letter rows like the driver would: a received_at a DateTime can't hold
    and text that is not valid Unicode are refused; ``refuse`` refuses rows by their detail."""

    def __init__(self, refuse: dict[str, Exception] | None = None) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.refuse = refuse or {}

    def execute(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            received_at, detail = row[7], row[3]
            if not 0 <= received_at.timestamp() < 2**32:
                raise TypeMismatchError("Column received_at: argument out of range")
            for field in row:
                if isinstance(field, str):
                    field.encode()
            for marker, exc in self.refuse.items():
                if marker in detail:
                    raise exc
        self.rows += rows


def test_good_dead_letters_are_stored_as_sent():
    client = FakeClient()
    report = store_isolated(client, "db", [(0, 1, letter("a")), (0, 2, letter("b"))], NOW)
    assert report == (2, 0, 0) and [r[3] for r in client.rows] == ["a", "b"]


@pytest.mark.parametrize("received_at", [datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC),
                                         datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59)])
def test_a_received_at_no_datetime_can_hold_is_replaced_by_now_and_kept_in_the_detail(received_at: datetime):
    client = FakeClient()
    report = store_isolated(client, "db", [(0, 1, letter("forged", received_at)), (0, 2, letter("good"))], NOW)
    assert report == (1, 1, 0)
    by_detail = {r[3].split(" [")[0]: r for r in client.rows}
    assert by_detail["good"][7] == NOW and by_detail["forged"][7] == NOW
    assert "stored sanitized" in by_detail["forged"][3] and received_at.isoformat() in by_detail["forged"][3]
    assert by_detail["forged"][2] == "unknown_indicator"  # the reason is kept


def test_text_that_is_not_valid_unicode_is_stored_escaped_and_the_rest_as_sent():
    client = FakeClient()
    records = [(0, o, letter(f"ok-{o}")) for o in range(6)] + [(0, 6, letter("lone \ud800", payload="x\udfff"))]
    report = store_isolated(client, "db", records, NOW)
    assert report == (6, 1, 0)
    sanitized = [r for r in client.rows if "lone" in r[3]]
    assert sanitized[0][3].startswith("lone \\ud800") and sanitized[0][8] == "x\\udfff"


def test_a_dead_letter_not_storable_even_sanitized_is_skipped_with_a_log_line(caplog: Any):
    client = FakeClient({"cursed": TypeMismatchError("Column detail: whatever")})
    report = store_isolated(client, "db", [(0, 1, letter("cursed")), (0, 2, letter("good"))], NOW)
    assert report == (1, 0, 1) and [r[3] for r in client.rows] == ["good"]
    assert "partition 0 offset 1 skipped" in caplog.text


def test_the_infrastructure_failing_is_raised_for_the_caller_to_retry():
    client = FakeClient({"a": ServerException("Table is in readonly mode", code=242)})
    with pytest.raises(ServerException):
        store_isolated(client, "db", [(0, 1, letter("a"))], NOW)


@pytest.mark.parametrize(("raw", "reason", "encoding"), [
    (b"\xff\xfe garbage", "malformed_json", "base64"), (b"not json", "malformed_json", "utf-8"),
    (b'{"reason": 5}', "schema_violation", "utf-8"), (b"", "malformed_json", "utf-8"),
])
def test_a_record_that_is_no_dead_letter_becomes_one_of_its_own_with_its_bytes(raw: bytes, reason: str,
                                                                               encoding: str):
    kept = unreadable(raw, "not a dead letter", "t.dlq/0/7", NOW)
    assert kept.reason == reason and kept.received_at == NOW and kept.origin == "t.dlq/0/7"
    assert kept.payload_encoding == encoding and kept.raw_payload() == raw
    if encoding == "base64":
        assert base64.b64decode(kept.payload) == raw
