"""The metric event, version 1 (CONTRACT.md §1), and the one function that accepts or rejects it.

``validate`` is called by every door (``highland push``, the HTTP gateway) and again by the stream
worker, because a producer can't be trusted to have validated. It never raises, whatever the input:
the answer is an ``Accepted`` event (value converted to the indicator's unit, time in UTC) or a
``Rejected`` with one of the contract's reasons and a human-readable detail. The rules of §1.1
(ranges, JSON, the ``schema`` header) and the order in which they are checked are in docs/events.md.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import MINYEAR, UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, NotRequired

from highland.catalog.models import CITY_WIDE, Catalog
from pydantic import ConfigDict, Field, Json, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs this TypedDict before Python 3.12

SCHEMA_V1 = b"metric-event/1"
SCHEMA_HEADER = ("schema", SCHEMA_V1)
MAX_PAYLOAD_BYTES = 64 * 1024
FUTURE_TOLERANCE = timedelta(days=1)
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# RFC 3339 date-time (its section 5.6, with the lower-case "t"/"z" and the space separator it
# permits). Digits are spelled [0-9]: the regex engine's \d would also match other scripts' digits.
# The pattern keeps "1700000000" and other ISO 8601 forms out; the calendar (month lengths, hour
# 23 at most) is checked by the parser.
RFC3339_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
                   r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$")
# CONTRACT §1.1: what every store on the path can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2105, 12, 31, 23, 59, 59, tzinfo=UTC)
BOM = b"\xef\xbb\xbf"


class Reason(StrEnum):
    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_INDICATOR = "unknown_indicator"
    UNKNOWN_REGION = "unknown_region"
    UNIT_MISMATCH = "unit_mismatch"
    NOT_FINITE = "not_finite"
    NEGATIVE_VALUE = "negative_value"
    FUTURE_TIMESTAMP = "future_timestamp"
    OUT_OF_RANGE = "out_of_range"
    FORBIDDEN_AGENCY = "forbidden_agency"
    UNAUTHENTICATED = "unauthenticated"
    PAYLOAD_TOO_LARGE = "payload_too_large"


@with_config(ConfigDict(extra="forbid"))
class MetricEvent(TypedDict):
    """The wire format. Unknown fields are refused: a typo must not silently drop a value.
    (A TypedDict, not a model: validating into a dict costs half as much, and the worker
    re-validates every event; the defaults of ``revision`` and ``region`` are applied in
    ``_check_meaning``.)"""

    event_id: Annotated[str, Field(pattern=EVENT_ID_PATTERN)]
    # Strict numbers: "12" (a string) or true are schema violations, not silently coerced.
    revision: NotRequired[Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)]]
    agency: Annotated[str, Field(min_length=1, max_length=64)]
    indicator: Annotated[str, Field(min_length=1, max_length=64)]
    region: NotRequired[Annotated[str, Field(min_length=1, max_length=64)]]
    value: Annotated[float, Field(strict=True)]
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    # RFC 3339 text only: a number, or a number in a string, is not a timestamp with an offset.
    # Parsed in ``_check_meaning``: a datetime type would take "1700000000" as epoch seconds.
    observed_at: Annotated[str, Field(pattern=RFC3339_PATTERN, strict=True)]


_ONE = TypeAdapter(MetricEvent)
# Many payloads in one call into pydantic; each is parsed on its own (Json), so one payload's
# text can never run into the next one's.
_MANY = TypeAdapter(list[Json[MetricEvent]])
DEFAULT_REVISION = 0


class Accepted(NamedTuple):
    """A valid event, normalized: ``value`` is in the indicator's own unit, times are UTC.
    (A NamedTuple: immutable and cheap to build; the worker builds one per event.)"""

    agency: str
    event_id: str
    revision: int
    indicator: str
    region: str
    value: float
    unit: str
    raw_value: float
    raw_unit: str
    observed_at: datetime

    @property
    def key(self) -> bytes:
        """Kafka message key: all observations of one series land in one partition, in order."""
        return f"{self.indicator}|{self.region}".encode()

    @property
    def timestamp_ms(self) -> int:
        return int(self.observed_at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str
    agency: str | None = None


Verdict = Accepted | Rejected


def validate(payload: bytes | str | dict[str, Any], catalog: Catalog, *, now: datetime | None = None,
             pushed_by: str | None = None) -> Verdict:
    """Accept or reject one event.

    ``payload`` is the raw JSON (bytes/str) or a decoded mapping (a CSV row), serialized first.
    ``pushed_by`` is the authenticated agency of the door it came through, if any: an agency may
    only push events in its own name.
    """
    raw = _json_bytes(payload)
    if isinstance(raw, Rejected):
        return Rejected(raw.reason, raw.detail, pushed_by)
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Rejected(Reason.PAYLOAD_TOO_LARGE, f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}", pushed_by)
    try:
        event = _ONE.validate_json(raw)
    except ValidationError as exc:
        return _schema_rejection(exc, raw, pushed_by)
    return _check_meaning(event, raw, catalog, _accepted(catalog), _latest(now or datetime.now(UTC)), pushed_by)


def validate_batch(payloads: Sequence[bytes], catalog: Catalog, *, now: datetime,
                   headers: Sequence[Sequence[tuple[str, bytes | None]]] | None = None) -> list[Verdict]:
    """``validate`` for each of ``payloads`` (the worker's path): the same schema and checks, with
    one call into pydantic for all of them while they all fit the schema. Should one not, they are
    validated one by one, so that each reject gets its own reason.

    ``headers``: each payload's Kafka record headers, if it came from one; a record whose ``schema``
    header names another schema is rejected without reading it."""
    if headers is not None:
        foreign = {i: schema for i, h in enumerate(headers) if h and (schema := schema_of(h)) != SCHEMA_V1}
        if foreign:
            rest = iter(validate_batch([p for i, p in enumerate(payloads) if i not in foreign], catalog, now=now))
            return [_foreign_schema(foreign[i]) if i in foreign else next(rest) for i in range(len(payloads))]
    if all(len(payload) <= MAX_PAYLOAD_BYTES for payload in payloads):
        try:
            events = _MANY.validate_python(payloads)
        except ValidationError:
            pass
        else:
            latest, routes = _latest(now), _accepted(catalog)
            return [_check_meaning(event, raw, catalog, routes, latest, None)
                    for event, raw in zip(events, payloads, strict=True)]
    return [validate(payload, catalog, now=now) for payload in payloads]


def schema_of(headers: Sequence[tuple[str, bytes | None]]) -> bytes | None:
    """The schema a Kafka record declares in its ``schema`` header(s): version 1 without one
    (CONTRACT §1.1); else the first value that is not version 1 (None: a header without a value)."""
    for name, value in headers:
        if name == SCHEMA_HEADER[0] and value != SCHEMA_V1:
            return value
    return SCHEMA_V1


def to_json(event: dict[str, Any]) -> bytes:
    """Serialize a decoded event (CSV row, element of a JSON batch) the one time it is sent.
    (NaN and Infinity are written as such on purpose: the validator must see them to reject them
    as not_finite, rather than a null it would call a schema violation.)"""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode()


def _json_bytes(payload: bytes | str | dict[str, Any]) -> bytes | Rejected:
    """The payload as the UTF-8 bytes of a JSON text, without a leading byte-order mark; or why
    it can't be one (agency left to the caller)."""
    if isinstance(payload, bytes):
        return payload[3:] if payload[:3] == BOM else payload
    if isinstance(payload, str):
        try:
            raw = payload.encode()
        except UnicodeEncodeError as exc:
            return Rejected(Reason.MALFORMED_JSON, f"not valid Unicode: {exc.reason} at {exc.start}")
        return raw[3:] if raw[:3] == BOM else raw
    try:
        return to_json(payload)
    except UnicodeEncodeError as exc:  # before ValueError, its base class
        return Rejected(Reason.MALFORMED_JSON, f"not valid Unicode: {exc.reason} at {exc.start}")
    except (TypeError, ValueError, RecursionError) as exc:
        return Rejected(Reason.SCHEMA_VIOLATION, f"not representable as JSON: {exc}")


def _latest(now: datetime) -> datetime:
    """The latest acceptable observed_at at ``now``: the future rule or the range's end."""
    latest = now + FUTURE_TOLERANCE
    return latest if latest < LATEST else LATEST  # not min(): the doors call this for every event


def _foreign_schema(schema: bytes | None) -> Rejected:
    return Rejected(Reason.SCHEMA_VIOLATION, f"schema header {schema!r}: this topic carries "
                    f"{SCHEMA_V1.decode()} (a record without the header is read as such)")


class _Route(NamedTuple):
    """What the catalog says about one (agency, indicator, region, unit) that it accepts."""

    indicator: str
    unit: str
    factor: float
    allow_negative: bool
    low: float  # the value's bounds in the indicator's unit
    high: float


class _RouteKey(NamedTuple):
    agency: str
    indicator: str
    region: str
    unit: str


_Routes = dict[tuple[str, str, str, str], _Route]
# Each catalog's accepted routes (``_route``), by the catalog's identity: the memo is the validator's,
# not part of the plan's data, and hashing a catalog (a frozen model: every field) would cost more
# than the lookup it saves. An entry leaves with its catalog, before its id can be reused.
_ACCEPTED: dict[int, _Routes] = {}


def _accepted(catalog: Catalog) -> _Routes:
    routes = _ACCEPTED.get(id(catalog))
    if routes is None:
        routes = _ACCEPTED[id(catalog)] = {}
        weakref.finalize(catalog, _ACCEPTED.pop, id(catalog), None)
    return routes


def _route(key: tuple[str, str, str, str], catalog: Catalog, routes: _Routes) -> _Route | Rejected:
    """``key``: (agency, indicator, region, unit), a plain tuple: the common case only looks it up.

    The catalog checks are the same for every event of a feed: the worker re-validates every event,
    so acceptances are remembered in ``routes``, the catalog's memo (``_accepted``; a batch looks it
    up once). Only acceptances: the memo is then bounded by the catalog (agencies x indicators x
    regions x units), whatever the input."""
    route = routes.get(key)
    if route is None:
        route = _catalog_route(_RouteKey(*key), catalog)
        if isinstance(route, _Route):
            routes[key] = route
    return route


def _catalog_route(key: _RouteKey, catalog: Catalog) -> _Route | Rejected:
    agency = key.agency
    if not catalog.is_agency(agency):
        return Rejected(Reason.FORBIDDEN_AGENCY, f"{agency!r} is not a registered agency", agency)
    indicator = catalog.indicator(key.indicator)
    if indicator is None:
        return Rejected(Reason.UNKNOWN_INDICATOR, f"{key.indicator!r} is not in the plan catalog", agency)
    if indicator.agency != agency:
        return Rejected(Reason.FORBIDDEN_AGENCY,
                        f"{key.indicator!r} is owned by {indicator.agency!r}, not {agency!r}", agency)
    if not catalog.region_allowed(indicator, key.region):
        expected = (f"a district code or {CITY_WIDE!r} (city-wide)" if indicator.regional
                    else f"{CITY_WIDE!r} (city-wide)")
        return Rejected(Reason.UNKNOWN_REGION,
                        f"region {key.region!r} for {indicator.code!r}: expected {expected}", agency)
    factor = indicator.factor_for(key.unit)
    if factor is None:
        known = ", ".join([indicator.unit, *indicator.unit_aliases])
        return Rejected(Reason.UNIT_MISMATCH, f"unit {key.unit!r} for {indicator.code!r}; known: {known}",
                        agency)
    low = -indicator.max_value if indicator.allow_negative else 0.0
    return _Route(indicator.code, indicator.unit, factor, indicator.allow_negative, low, indicator.max_value)


_new_tuple = tuple.__new__
_fromisoformat = datetime.fromisoformat
# Where a time beyond Python's calendar lands (year 1 at +14:00, year 9999 at -14:00, year 0): it is
# out of range either way, and must not raise.
_BEFORE_ALL = datetime.min.replace(tzinfo=UTC)
_AFTER_ALL = datetime.max.replace(tzinfo=UTC)


def _check_meaning(event: MetricEvent, raw: bytes, catalog: Catalog, routes: _Routes, latest: datetime,
                   pushed_by: str | None) -> Verdict:
    """The rules beyond the schema: a repeated member, the observed_at calendar, the catalog's and
    the clock's rules. ``raw``: the JSON ``event`` was read from; ``routes``: the catalog's memo
    (``_accepted``); ``latest``: see ``_latest``."""
    agency, raw_value, raw_unit = event["agency"], event["value"], event["unit"]
    # One count of quotes clears nearly every event (``_quotes``, inlined: it runs for each one).
    if raw.count(b'"') != 2 * (2 * len(event) - 1 - ("revision" in event)) and _repeats_a_member(event, raw):
        return Rejected(Reason.MALFORMED_JSON, "an object repeats a member name", pushed_by or agency)
    try:
        observed = _fromisoformat(event["observed_at"]).astimezone(UTC)  # then compared in one zone
    except (ValueError, OverflowError):
        observed = _unusual_instant(event["observed_at"])
        if isinstance(observed, Rejected):
            return Rejected(observed.reason, observed.detail, pushed_by or agency)
    if pushed_by is not None and agency != pushed_by:
        return Rejected(Reason.FORBIDDEN_AGENCY, f"event is in the name of {agency!r}, pushed by {pushed_by!r}",
                        pushed_by)
    region = event.get("region", CITY_WIDE)
    route = _route((agency, event["indicator"], region, raw_unit), catalog, routes)
    if isinstance(route, Rejected):
        return route
    value = raw_value * route.factor
    if not route.low <= value <= route.high:  # also false for NaN
        return _value_rejection(value, raw_value, raw_unit, route, agency)
    if not EARLIEST <= observed <= latest:
        return _time_rejection(observed, event["observed_at"], agency)
    # tuple.__new__ skips NamedTuple's Python-level __new__ (docs/benchmarks.md, session 5).
    return _new_tuple(Accepted, (agency, event["event_id"], event.get("revision", DEFAULT_REVISION), route.indicator,
                                 region, value, route.unit, raw_value, raw_unit, observed))


def _quotes(event: MetricEvent) -> int:
    """The delimiting quotes of a JSON text that fits the schema and holds ``event`` with no member
    named twice: it is one flat object, and each of its strings is a member name or the value of a
    text field (all but ``value`` and ``revision``), so ``2 * len(event) - 1 - has revision`` strings."""
    return 2 * (2 * len(event) - 1 - ("revision" in event))


def _repeats_a_member(event: MetricEvent, raw: bytes) -> bool:
    """Whether ``raw``, which fits the schema, names a member twice (the parser keeps the last).
    A repeated name adds a string; escaped quotes inside strings are not delimiters, and once the
    escaped backslashes are removed, each remaining backslash-quote is one."""
    text = raw.replace(b"\\\\", b"")
    return text.count(b'"') - text.count(b'\\"') != _quotes(event)


def _unusual_instant(text: str) -> datetime | Rejected:
    """observed_at (RFC 3339 by the schema's pattern) that the fast parse refused: lower-case "t"
    or "z", year 0000, an instant outside Python's calendar once in UTC, or not a calendar date."""
    upper = text.upper()
    year_zero = upper.startswith("0000")
    try:
        # Year 0 (1 BC) and year 2000 are both leap years: same months, same days.
        parsed = _fromisoformat("2000" + upper[4:] if year_zero else upper)
    except ValueError as exc:
        return Rejected(Reason.SCHEMA_VIOLATION, f"observed_at {text!r} is not a date-time: {exc}")
    if year_zero:
        return _BEFORE_ALL
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return _BEFORE_ALL if parsed.year == MINYEAR else _AFTER_ALL


def _value_rejection(value: float, raw_value: float, raw_unit: str, route: _Route, agency: str) -> Rejected:
    if not math.isfinite(value):
        return Rejected(Reason.NOT_FINITE, f"value {raw_value!r} {raw_unit} is not finite", agency)
    if value < 0 and not route.allow_negative:
        return Rejected(Reason.NEGATIVE_VALUE, f"{route.indicator!r} does not allow negative values", agency)
    return Rejected(Reason.OUT_OF_RANGE, f"value {raw_value!r} {raw_unit} ({value!r} {route.unit}) is outside "
                    f"[{route.low!r}, {route.high!r}] for {route.indicator!r}", agency)


def _time_rejection(observed: datetime, text: str, agency: str) -> Rejected:
    if not EARLIEST <= observed <= LATEST:
        return Rejected(Reason.OUT_OF_RANGE, f"observed_at {text} is outside [{EARLIEST:%Y-%m-%dT%H:%M:%SZ}, "
                        f"{LATEST:%Y-%m-%dT%H:%M:%SZ}]", agency)
    return Rejected(Reason.FUTURE_TIMESTAMP, f"observed_at {text} is more than 1 day in the future", agency)


def _schema_rejection(exc: ValidationError, raw: bytes, pushed_by: str | None) -> Rejected:
    errors = exc.errors(include_url=False, include_input=False)
    who = pushed_by or _agency_hint(raw)
    if any(e["type"] == "json_invalid" for e in errors):
        return Rejected(Reason.MALFORMED_JSON, _first(errors), who)
    if _has_repeated_member(raw):
        return Rejected(Reason.MALFORMED_JSON, "an object repeats a member name", who)
    if any(e["type"] in {"finite_number"} for e in errors):
        return Rejected(Reason.NOT_FINITE, _first(errors), who)
    return Rejected(Reason.SCHEMA_VIOLATION, _first(errors), who)


def _first(errors: list[Any]) -> str:
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e["loc"]) or "event"
        msg = e["msg"]
        if e["type"] == "string_pattern_mismatch" and where == "observed_at":
            msg = "should be an RFC 3339 date-time with an offset, e.g. 2019-05-01T00:00:00+08:00"
        parts.append(f"{where}: {msg}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


class _RepeatedMember(Exception):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> None:
    if len({name for name, _ in pairs}) != len(pairs):
        raise _RepeatedMember


def _has_repeated_member(raw: bytes) -> bool:
    """Whether any object in ``raw`` (valid JSON to pydantic) names a member twice, at any depth.
    Numbers stay text: only the structure matters, and huge integers must not fail the parse."""
    try:
        json.loads(raw.decode(), object_pairs_hook=_unique_members, parse_int=str, parse_float=str,
                   parse_constant=str)
    except _RepeatedMember:
        return True
    except (ValueError, RecursionError):
        pass
    return False


def _agency_hint(payload: bytes) -> str | None:
    """Best effort: the agency of an event that failed validation, for the dead-letter record."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    agency = data.get("agency") if isinstance(data, dict) else None
    return agency if isinstance(agency, str) and len(agency) <= 64 else None
