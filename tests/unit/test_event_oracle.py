"""CONTRACT §1 and §1.1, stated once more in this file as an oracle, and checked against the one
validator for inputs from the full ranges: every date-time of the calendar at every offset, every
float, every Unicode string (lone surrogates too), repeated member names, byte-order marks.

The oracle reads only the catalog's data (codes, units, factors, bounds); it shares no code with
the validator: its own JSON writer, its own RFC 3339 grammar and calendar, its own arithmetic for
the instant. Where the contract leaves a choice, the oracle follows docs/events.md (the order in
which rules are checked, a leap second, more than six digits of a second).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.catalog.models import Catalog
from highland.ingest.events import Accepted, Rejected, validate, validate_batch
from hypothesis import example, given, settings
from hypothesis import strategies as st

# --- the catalog: the plan's, plus an indicator that allows negatives within a small bound --------


def _catalog() -> Catalog:
    data = default_catalog().model_dump()
    balance = {**next(i for i in data["indicators"] if i["code"] == "ecommerce_turnover"),
               "code": "trade_balance", "allow_negative": True, "max_value": 1e6}
    data["indicators"] = [*data["indicators"], balance]
    return Catalog.model_validate(data)


CATALOG = _catalog()
NOW = datetime(2019, 6, 1, tzinfo=UTC)
AGENCIES = {a.code for a in CATALOG.agencies}
DISTRICTS = {d.code for d in CATALOG.districts}
INDICATORS = {i.code: i for i in CATALOG.indicators}
FIELDS = ("event_id", "revision", "agency", "indicator", "region", "value", "unit", "observed_at")
REQUIRED = {"event_id", "agency", "indicator", "value", "unit", "observed_at"}


# --- JSON, written by hand: repeated names, escapes and lone surrogates are the test's to choose ---

@dataclass(frozen=True)
class Obj:
    """A JSON object as its members in order: a name may repeat."""

    members: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Style:
    ascii_only: bool = False  # every non-ASCII character as a \u escape, as json.dumps writes it
    spaced: bool = False
    bom: bool = False


def _string(text: str, style: Style) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF or (style.ascii_only and 0x7F <= code <= 0xFFFF):
            out.append(f"\\u{code:04x}")
        elif style.ascii_only and code > 0xFFFF:
            high, low = divmod(code - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def _number(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return repr(number)


def write(value: Any, style: Style) -> str:
    comma, colon = (", ", ": ") if style.spaced else (",", ":")
    if isinstance(value, Obj):
        return "{" + comma.join(_string(k, style) + colon + write(v, style) for k, v in value.members) + "}"
    if isinstance(value, list):
        return "[" + comma.join(write(v, style) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    return _string(value, style)


def encode(value: Any, style: Style) -> bytes:
    return (b"\xef\xbb\xbf" if style.bom else b"") + write(value, style).encode("utf-8")


# --- the oracle ------------------------------------------------------------------------------------

def _decoded(text: str) -> str | None:
    """A JSON string as a reader gets it: escaped surrogate pairs join; None if one stays alone."""
    try:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return None


def _json_is_sound(value: Any) -> bool:
    """No repeated member name in any object, no lone surrogate in any string (§1.1)."""
    if isinstance(value, str):
        return _decoded(value) is not None
    if isinstance(value, list):
        return all(_json_is_sound(v) for v in value)
    if isinstance(value, Obj):
        names = [_decoded(k) for k, _ in value.members]
        return None not in names and len(set(names)) == len(names) and all(
            _json_is_sound(v) for _, v in value.members)
    return True


RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
                     r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")


def _days_in_month(year: int, month: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def instant_us(text: str) -> int | None:
    """Microseconds since 1970-01-01T00:00:00Z of an RFC 3339 date-time (digits of a second
    beyond the sixth dropped); None if ``text`` is not one (a leap second is not accepted)."""
    match = RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, sign, off_hour, off_minute = match.groups()[6:]
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month) and hour <= 23 and minute <= 59
            and second <= 59):
        return None
    offset = 0
    if sign is not None:
        if int(off_hour) > 23 or int(off_minute) > 59:
            return None
        offset = (int(off_hour) * 60 + int(off_minute)) * (1 if sign == "+" else -1)
    seconds = _days_since_epoch(year, month, day) * 86400 + hour * 3600 + (minute - offset) * 60 + second
    return seconds * 1_000_000 + int((fraction or "")[:6].ljust(6, "0"))


EARLIEST_US = 0
LATEST_US = (_days_since_epoch(2105, 12, 31) * 86400 + 86399) * 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _schema_ok(name: str, value: Any) -> bool:
    text = _decoded(value) if isinstance(value, str) else None
    if name == "event_id":
        return text is not None and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", text) is not None
    if name == "revision":
        return type(value) is int and 0 <= value <= 2**32 - 1
    if name == "value":
        return type(value) in (int, float)
    if name == "observed_at":
        return text is not None and instant_us(text) is not None
    longest = 32 if name == "unit" else 64
    return text is not None and 1 <= len(text) <= longest


def oracle(event: Any, now: datetime, pushed_by: str | None = None) -> str | Accepted:
    """The verdict the contract gives ``event``: a reason, or the accepted event, normalized."""
    if not _json_is_sound(event):
        return "malformed_json"
    if not isinstance(event, Obj):
        return "schema_violation"
    fields = dict(event.members)
    if not set(FIELDS) >= set(fields) >= REQUIRED:
        return "schema_violation"
    if not all(_schema_ok(name, value) for name, value in fields.items()):
        return "schema_violation"
    agency, code, unit = fields["agency"], fields["indicator"], fields["unit"]
    region = fields.get("region", "chongqing")
    if pushed_by is not None and agency != pushed_by:
        return "forbidden_agency"
    if agency not in AGENCIES:
        return "forbidden_agency"
    indicator = INDICATORS.get(code)
    if indicator is None:
        return "unknown_indicator"
    if indicator.agency != agency:
        return "forbidden_agency"
    # Every indicator takes a city-wide report; a regional one also a district's (docs/numbers.md, "level").
    if not (region == "chongqing" or (indicator.regional and region in DISTRICTS)):
        return "unknown_region"
    factor = 1.0 if unit == indicator.unit else indicator.unit_aliases.get(unit)
    if factor is None:
        return "unit_mismatch"
    try:
        raw = float(fields["value"])
    except OverflowError:  # an integer beyond the largest double reads as infinite
        raw = math.inf if fields["value"] > 0 else -math.inf
    value = raw * factor
    if math.isnan(value) or math.isinf(value):
        return "not_finite"
    if value < 0 and not indicator.allow_negative:
        return "negative_value"
    if value > indicator.max_value or value < -indicator.max_value:
        return "out_of_range"
    observed = instant_us(fields["observed_at"])
    assert observed is not None
    if not EARLIEST_US <= observed <= LATEST_US:
        return "out_of_range"
    if observed > (now - EPOCH) // timedelta(microseconds=1) + 86_400_000_000:
        return "future_timestamp"
    return Accepted(agency, fields["event_id"], fields.get("revision", 0), code, region, value, indicator.unit, raw,
                    unit, EPOCH + timedelta(microseconds=observed))


def verdict_of(verdict: Accepted | Rejected) -> str | Accepted:
    return verdict if isinstance(verdict, Accepted) else verdict.reason.value


# --- the inputs -------------------------------------------------------------------------------------

# Every code point, lone surrogates included (hypothesis leaves them out unless told).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
MAX_OFFSET_MINUTES = 23 * 60 + 59


@st.composite
def rfc3339_texts(draw: st.DrawFn) -> str:
    """Any instant of Python's calendar, naive or at any offset, in the forms RFC 3339 allows."""
    moment = draw(st.datetimes(min_value=datetime.min, max_value=datetime.max))
    offset = draw(st.none() | st.integers(-MAX_OFFSET_MINUTES, MAX_OFFSET_MINUTES))
    digits = draw(st.integers(0, 9))
    fraction = "" if digits == 0 else "." + (f"{moment.microsecond:06d}" + draw(
        st.text("0123456789", min_size=3, max_size=3)))[:digits]
    text = moment.strftime("%Y-%m-%d") + draw(st.sampled_from("Tt ")) + moment.strftime("%H:%M:%S") + fraction
    if offset is None:
        return text
    if offset == 0 and draw(st.booleans()):
        return text + draw(st.sampled_from(["Z", "z", "-00:00"]))
    sign = "+" if offset >= 0 else "-"
    return text + f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


observed_ats = st.one_of(
    rfc3339_texts(),
    # right shape, any digits: month 13, 30 February, hour 24, a leap second, offset +24:00 ...
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:"
                  r"[0-9]{2})", fullmatch=True),
    st.integers(-2**40, 2**40).map(str),  # epoch seconds in a string
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-2**40, 2**40), st.floats(),  # epoch seconds as a number
    any_text,
)
values = st.one_of(st.floats(), st.floats(width=32), st.integers(-10**30, 10**30),
                   st.integers(-10**400, 10**400), st.booleans(), st.none(), any_text)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(any_text, inner), max_size=3).map(
        lambda members: Obj(tuple(members))),
    max_leaves=8,
)
field_strategies = {
    "event_id": st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True) | any_text | st.just("x" * 129),
    "revision": st.integers(-3, 2**32 + 3) | st.sampled_from([2**32 - 1, 2**32, 0]) | values,
    "agency": st.sampled_from([*sorted(AGENCIES)[:4], "cq_commerce", "cq_comms_admin", "nobody"]) | any_text,
    "indicator": st.sampled_from(["ecommerce_turnover", "trade_balance", "fiber_broadband_ports", "gdp"]) | any_text,
    "region": st.sampled_from(["chongqing", "yuzhong", "atlantis"]) | any_text,
    "value": values,
    "unit": st.sampled_from(["亿元", "万元", "元", "ports", "万个", "kg", '亿"元', "亿\\元"]) | any_text,
    "observed_at": observed_ats,
}
GOOD = {"event_id": "e-1", "agency": "cq_commerce", "indicator": "ecommerce_turnover", "value": 12.5,
        "unit": "亿元", "observed_at": "2019-05-01T00:00:00+08:00"}


@st.composite
def events(draw: st.DrawFn) -> Obj:
    """Mostly one field from anywhere and the rest sound, sometimes many at once; now and then a
    member repeated (same or other value), an unknown one, one left out."""
    chosen = draw(st.sets(st.sampled_from(FIELDS), min_size=1, max_size=draw(st.sampled_from([1, 1, 2, 8]))))
    members = [(name, draw(field_strategies[name])) if name in chosen else (name, value)
               for name, value in GOOD.items()]
    if "revision" in chosen:
        members.append(("revision", draw(field_strategies["revision"])))
    if "region" in chosen:
        members.append(("region", draw(field_strategies["region"])))
    if draw(st.integers(0, 9)) == 0:
        members.pop(draw(st.integers(0, len(members) - 1)))
    if draw(st.integers(0, 9)) == 0:
        name, _ = members[draw(st.integers(0, len(members) - 1))]
        repeated = draw(st.sampled_from([name, name.replace("a", "\u0061")]) | st.just(name))
        members.insert(draw(st.integers(0, len(members))), (repeated, draw(st.just(GOOD.get(name)) | json_values)))
    if draw(st.integers(0, 9)) == 0:
        members.append((draw(any_text), draw(json_values)))
    return Obj(tuple(draw(st.permutations(members)) if draw(st.booleans()) else members))


styles = st.builds(Style, st.booleans(), st.booleans(), st.booleans())


# --- the properties -------------------------------------------------------------------------------

@settings(max_examples=3000, deadline=None)
@given(events(), styles)
@example(Obj((*((k, v) for k, v in GOOD.items()), ("agency", "cq_commerce"))), Style())
@example(Obj((*((k, v) for k, v in GOOD.items()), ("\\u0061gency", "x"))), Style())
def test_every_event_gets_the_contracts_verdict(event, style):
    assert verdict_of(validate(encode(event, style), CATALOG, now=NOW)) == oracle(event, NOW)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(events(), styles), max_size=12))
def test_the_workers_batches_get_the_same_verdicts(items):
    verdicts = validate_batch([encode(event, style) for event, style in items], CATALOG, now=NOW)
    assert [verdict_of(v) for v in verdicts] == [oracle(event, NOW) for event, _ in items]


@settings(max_examples=2000, deadline=None)
@given(observed_ats, st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2105, 12, 31),
                                  timezones=st.just(UTC)))
def test_any_date_time_at_any_offset(observed_at, now):
    event = Obj(tuple({**GOOD, "observed_at": observed_at}.items()))
    assert verdict_of(validate(encode(event, Style()), CATALOG, now=now)) == oracle(event, now)


@settings(max_examples=2000, deadline=None)
@given(st.floats() | st.floats(width=32) | st.floats(min_value=-1e-300, max_value=1e-300),
       st.sampled_from(["ecommerce_turnover", "trade_balance"]), st.sampled_from(["亿元", "万元", "元"]))
def test_any_float_in_any_unit(value, indicator, unit):
    event = Obj(tuple({**GOOD, "indicator": indicator, "value": value, "unit": unit}.items()))
    assert verdict_of(validate(encode(event, Style()), CATALOG, now=NOW)) == oracle(event, NOW)


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(["event_id", "agency", "indicator", "region", "unit", "a name"]), any_text, styles)
def test_any_unicode_string_in_any_place(place, text, style):
    fields = {**GOOD, place: text} if place != "a name" else {**GOOD, text: 1}
    event = Obj(tuple(fields.items()))
    assert verdict_of(validate(encode(event, style), CATALOG, now=NOW)) == oracle(event, NOW)


@dataclass
class _Odd:
    """Not JSON at all."""

    things: list[int] = field(default_factory=list)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(any_text, st.none() | st.floats() | any_text | st.builds(_Odd) | st.sets(st.integers()),
                       max_size=4).map(lambda extra: {**GOOD, **extra}) | any_text)
def test_a_decoded_mapping_or_a_string_gets_a_verdict_never_an_exception(payload):
    verdict = validate(payload, CATALOG, now=NOW)
    assert isinstance(verdict, Accepted) or verdict.reason.value in {
        "malformed_json", "schema_violation", "not_finite"} or verdict.detail


# --- the boundaries, one by one ----------------------------------------------------------------------

def _verdict(now: datetime = NOW, **changes: Any) -> str | Accepted:
    event = Obj(tuple({**GOOD, **changes}.items()))
    got = verdict_of(validate(encode(event, Style()), CATALOG, now=now))
    assert got == oracle(event, now)
    return got if isinstance(got, str) else "accepted"


@pytest.mark.parametrize(("changes", "expected"), [
    ({"value": 0}, "accepted"),
    ({"value": 0.0}, "accepted"),
    ({"value": -0.0}, "accepted"),
    ({"value": -5e-324}, "negative_value"),  # the negative number closest to zero
    ({"value": 1e15}, "accepted"),  # max_value exactly
    ({"value": math.nextafter(1e15, math.inf)}, "out_of_range"),
    ({"value": 2e15, "unit": "万元"}, "accepted"),  # = 2e11 亿元: compared after conversion
    ({"value": 1.7e308}, "out_of_range"),
    ({"value": math.inf}, "not_finite"),
    ({"value": math.nan}, "not_finite"),
    ({"indicator": "trade_balance", "value": -1e6}, "accepted"),
    ({"indicator": "trade_balance", "value": math.nextafter(-1e6, -math.inf)}, "out_of_range"),
    ({"indicator": "trade_balance", "value": math.nextafter(1e6, math.inf)}, "out_of_range"),
])
def test_value_bounds(changes, expected):
    assert _verdict(**changes) == expected


@pytest.mark.parametrize(("observed_at", "now", "expected"), [
    ("2019-06-02T00:00:00Z", NOW, "accepted"),  # exactly one day ahead
    ("2019-06-02T00:00:01Z", NOW, "future_timestamp"),
    ("2019-06-02T08:00:00+08:00", NOW, "accepted"),
    ("2019-06-02T00:00:00.000001Z", NOW, "future_timestamp"),
    ("1970-01-01T00:00:00Z", NOW, "accepted"),
    ("1970-01-01T08:00:00+08:00", NOW, "accepted"),
    ("1969-12-31T23:59:59Z", NOW, "out_of_range"),
    ("1969-12-31T23:59:59.999999Z", NOW, "out_of_range"),
    ("1970-01-01T07:59:59+08:00", NOW, "out_of_range"),
    ("2105-12-31T23:59:59Z", datetime(2105, 12, 31, tzinfo=UTC), "accepted"),
    ("2106-01-01T00:00:00Z", datetime(2105, 12, 31, tzinfo=UTC), "out_of_range"),
    ("2105-12-31T23:59:59.5Z", datetime(2105, 12, 31, tzinfo=UTC), "out_of_range"),
    ("2105-12-31T23:59:59-00:01", datetime(2105, 12, 31, tzinfo=UTC), "out_of_range"),
    ("0001-01-01T00:00:00+14:00", NOW, "out_of_range"),  # before year 1 in UTC
    ("9999-12-31T23:59:59-14:00", NOW, "out_of_range"),  # after year 9999 in UTC
    ("0001-01-01T00:00:00+23:59", NOW, "out_of_range"),
    ("9999-12-31T23:59:59-23:59", NOW, "out_of_range"),
    ("0000-01-01T00:00:00Z", NOW, "out_of_range"),
    ("0000-02-29T00:00:00Z", NOW, "out_of_range"),  # year 0 is a leap year
    ("0000-02-30T00:00:00Z", NOW, "schema_violation"),
    ("2019-05-01t00:00:00z", NOW, "accepted"),
    ("2019-05-01 00:00:00+08:00", NOW, "accepted"),
    ("2019-05-01T00:00:00", NOW, "schema_violation"),  # no offset
    ("2019-05-01T00:00:00+0800", NOW, "schema_violation"),
    ("2019-05-01T00:00Z", NOW, "schema_violation"),
    ("2019-05-01T23:59:60Z", NOW, "schema_violation"),
    ("2019-02-29T00:00:00Z", NOW, "schema_violation"),
    ("2019-05-01T00:00:00+24:00", NOW, "schema_violation"),
    ("1556640000", NOW, "schema_violation"),  # epoch seconds in a string
    ("0", NOW, "schema_violation"),
    (1556640000, NOW, "schema_violation"),
    (1556640000.5, NOW, "schema_violation"),
])
def test_time_bounds(observed_at, now, expected):
    assert _verdict(now, observed_at=observed_at) == expected
