"""The event contract v1: every rule of CONTRACT.md §1 gives accept, or reject with its reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest import events
from highland.ingest.events import MAX_PAYLOAD_BYTES, Accepted, Reason, Rejected, validate, validate_batch
from hypothesis import given, settings
from hypothesis import strategies as st

CATALOG = default_catalog()
NOW = datetime(2019, 6, 1, tzinfo=UTC)
GOOD = {"event_id": "e-1", "agency": "cq_commerce", "indicator": "ecommerce_turnover", "value": 12.5,
        "unit": "亿元", "observed_at": "2019-05-01T00:00:00+08:00"}


def check(**changes) -> Accepted | Rejected:
    event = {**GOOD, **changes}
    return validate(json.dumps({k: v for k, v in event.items() if v is not ...}).encode(), CATALOG, now=NOW)


def reason(**changes) -> str:
    verdict = check(**changes)
    assert isinstance(verdict, Rejected), verdict
    return verdict.reason.value


def test_a_good_event_is_accepted_with_defaults_and_utc_time():
    verdict = check()
    assert isinstance(verdict, Accepted)
    assert (verdict.region, verdict.revision) == ("chongqing", 0)
    assert verdict.observed_at == datetime(2019, 4, 30, 16, tzinfo=UTC)
    assert verdict.key == b"ecommerce_turnover|chongqing"
    assert verdict.timestamp_ms == int(datetime(2019, 4, 30, 16, tzinfo=UTC).timestamp() * 1000)


def test_unit_aliases_are_converted_by_the_catalog_factor():
    verdict = check(value=250_000, unit="万元")
    assert isinstance(verdict, Accepted)
    assert verdict.value == pytest.approx(25.0) and verdict.unit == "亿元" and verdict.raw_unit == "万元"


@pytest.mark.parametrize(("changes", "expected"), [
    ({"event_id": "has space"}, "schema_violation"),
    ({"event_id": "x" * 129}, "schema_violation"),
    ({"revision": -1}, "schema_violation"),
    ({"revision": "1"}, "schema_violation"),
    ({"value": "12"}, "schema_violation"),
    ({"value": True}, "schema_violation"),
    ({"observed_at": "2019-05-01T00:00:00"}, "schema_violation"),  # no offset
    ({"observed_at": 1556640000}, "schema_violation"),
    ({"unexpected": 1}, "schema_violation"),
    ({"agency": ...}, "schema_violation"),
    ({"indicator": "gdp"}, "unknown_indicator"),
    ({"region": "yuzhong"}, "unknown_region"),  # a city-wide indicator
    ({"unit": "kg"}, "unit_mismatch"),
    ({"value": -1}, "negative_value"),
    ({"observed_at": "2019-06-03T00:00:00+00:00"}, "future_timestamp"),
    ({"agency": "cq_transport"}, "forbidden_agency"),  # registered, but not the owner
    ({"agency": "nobody"}, "forbidden_agency"),
])
def test_each_rule_has_its_reason(changes, expected):
    assert reason(**changes) == expected


def test_regional_indicators_take_districts_and_a_city_wide_report():
    ports = {"agency": "cq_comms_admin", "indicator": "fiber_broadband_ports", "unit": "ports", "value": 10}
    assert isinstance(check(**ports, region="yuzhong"), Accepted)
    assert isinstance(check(**ports), Accepted)  # the target is city-wide, and so may the report be
    assert reason(**ports, region="atlantis") == "unknown_region"
    turnover = {"agency": "cq_commerce", "indicator": "ecommerce_turnover", "unit": "亿元", "value": 10}
    assert reason(**turnover, region="yuzhong") == "unknown_region"  # city-wide indicators take no district


def test_non_finite_values_are_named_as_such():
    raw = json.dumps(GOOD).replace("12.5", "NaN").encode()
    assert validate(raw, CATALOG, now=NOW).reason is Reason.NOT_FINITE
    raw = json.dumps(GOOD).replace("12.5", "1e999").encode()
    assert validate(raw, CATALOG, now=NOW).reason is Reason.NOT_FINITE
    # Finite as sent, infinite once converted to the indicator's unit.
    ports = {"agency": "cq_comms_admin", "indicator": "fiber_broadband_ports", "region": "yuzhong"}
    assert reason(**ports, value=1e305, unit="万个") == "not_finite"


def test_one_day_of_clock_skew_is_tolerated():
    assert isinstance(check(observed_at="2019-06-01T23:00:00+00:00"), Accepted)


def test_bad_json_and_oversized_payloads():
    assert validate(b"{", CATALOG).reason is Reason.MALFORMED_JSON
    assert validate(b"\xff\xfe", CATALOG).reason is Reason.MALFORMED_JSON
    assert validate(b"[1, 2]", CATALOG).reason is Reason.SCHEMA_VIOLATION
    big = json.dumps({**GOOD, "event_id": "e", "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    assert validate(big, CATALOG).reason is Reason.PAYLOAD_TOO_LARGE


def test_an_agency_may_only_push_in_its_own_name():
    verdict = validate(json.dumps(GOOD).encode(), CATALOG, now=NOW, pushed_by="cq_transport")
    assert verdict.reason is Reason.FORBIDDEN_AGENCY and verdict.agency == "cq_transport"


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=8),
    max_leaves=30,
)
field_values = st.fixed_dictionaries({}, optional={k: json_values | st.just(v) for k, v in GOOD.items()})


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) |
       field_values.map(lambda v: json.dumps(v).encode()))
def test_any_input_is_accepted_or_rejected_with_a_reason_never_a_crash(payload):
    verdict = validate(payload, CATALOG, now=NOW)
    if isinstance(verdict, Rejected):
        assert verdict.reason in set(Reason) and verdict.detail
    else:
        assert isinstance(verdict, Accepted)


@contextmanager
def one_at_a_time_forbidden() -> Iterator[None]:
    original = events.validate

    def one_at_a_time(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate_batch fell back to validating one payload at a time")

    events.validate = one_at_a_time
    try:
        yield
    finally:
        events.validate = original


# The worker validates a batch at a time (validate_batch); every verdict must be validate's own.
schema_valid = st.fixed_dictionaries({
    "event_id": st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True),
    "agency": st.sampled_from(["cq_commerce", "cq_comms_admin", "cq_transport", "nobody"]),
    "indicator": st.sampled_from(["ecommerce_turnover", "fiber_broadband_ports", "gdp"]),
    "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10, 10**6),
    "unit": st.sampled_from(["亿元", "万元", "ports", "万个", "kg"]),
    "observed_at": st.sampled_from(["2019-05-01T00:00:00+08:00", "2019-06-01T23:00:00Z", "2019-06-03T00:00:00+00:00",
                                    "2017-01-31T12:30:00-05:00"]),
}, optional={"revision": st.integers(0, 2**32 - 1),
             "region": st.sampled_from(["chongqing", "yuzhong", "atlantis"])})


@settings(max_examples=200, deadline=None)
@given(st.lists(schema_valid.map(lambda v: json.dumps(v, ensure_ascii=False).encode()), max_size=20))
def test_a_batch_that_fits_the_schema_gets_each_events_own_verdict_in_one_call(payloads):
    with one_at_a_time_forbidden():
        verdicts = validate_batch(payloads, CATALOG, now=NOW)
    assert verdicts == [validate(p, CATALOG, now=NOW) for p in payloads]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=100) | field_values.map(lambda v: json.dumps(v).encode()) |
                st.just(json.dumps(GOOD).encode()), max_size=12))
def test_a_batch_with_any_input_gets_each_events_own_verdict(payloads):
    assert validate_batch(payloads, CATALOG, now=NOW) == [validate(p, CATALOG, now=NOW) for p in payloads]


def test_an_oversized_payload_in_a_batch_is_rejected_as_such_and_the_rest_accepted():
    big = json.dumps({**GOOD, "event_id": "e", "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    first, second = validate_batch([big, json.dumps(GOOD).encode()], CATALOG, now=NOW)
    assert first.reason is Reason.PAYLOAD_TOO_LARGE and isinstance(second, Accepted)
