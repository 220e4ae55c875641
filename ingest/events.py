"""The metric event, version 1 (CONTRACT.md §1), and the one function that accepts or rejects it.

``validate`` is called by every door (``highland push``, the HTTP gateway) and again by the stream
worker, because a producer can't be trusted to have validated. It never raises on bad input: the
answer is an ``Accepted`` event (value converted to the indicator's unit, time in UTC) or a
``Rejected`` with one of the contract's reasons and a human-readable detail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from catalog.models import CITY_WIDE, Catalog

SCHEMA_HEADER = ("schema", b"metric-event/1")
MAX_PAYLOAD_BYTES = 64 * 1024
FUTURE_TOLERANCE = timedelta(days=1)
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class Reason(StrEnum):
    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_INDICATOR = "unknown_indicator"
    UNKNOWN_REGION = "unknown_region"
    UNIT_MISMATCH = "unit_mismatch"
    NOT_FINITE = "not_finite"
    NEGATIVE_VALUE = "negative_value"
    FUTURE_TIMESTAMP = "future_timestamp"
    FORBIDDEN_AGENCY = "forbidden_agency"
    UNAUTHENTICATED = "unauthenticated"
    PAYLOAD_TOO_LARGE = "payload_too_large"


class MetricEvent(BaseModel):
    """The wire format. Unknown fields are refused: a typo must not silently drop a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(pattern=EVENT_ID_PATTERN)
    # Strict numbers: "12" (a string) or true are schema violations, not silently coerced.
    revision: int = Field(0, ge=0, le=2**32 - 1, strict=True)
    agency: str = Field(min_length=1, max_length=64)
    indicator: str = Field(min_length=1, max_length=64)
    region: str = Field(CITY_WIDE, min_length=1, max_length=64)
    value: float = Field(strict=True)
    unit: str = Field(min_length=1, max_length=32)
    # RFC 3339 text only (strict): a bare number is not a timestamp with an offset.
    observed_at: AwareDatetime = Field(strict=True)


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
    if not isinstance(payload, bytes | str):
        payload = to_json(payload)
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > MAX_PAYLOAD_BYTES:
        return Rejected(Reason.PAYLOAD_TOO_LARGE, f"{size} bytes > {MAX_PAYLOAD_BYTES}", pushed_by)
    try:
        event = MetricEvent.model_validate_json(payload)
    except ValidationError as exc:
        return _schema_rejection(exc, pushed_by, _agency_hint(payload))
    return _check_meaning(event, catalog, now or datetime.now(UTC), pushed_by)


def to_json(event: dict[str, Any]) -> bytes:
    """Serialize a decoded event (CSV row, element of a JSON batch) the one time it is sent."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode()


class _Route(NamedTuple):
    """What the catalog says about one (agency, indicator, region, unit) that it accepts."""

    indicator: str
    unit: str
    factor: float
    allow_negative: bool


def _route(event: MetricEvent, catalog: Catalog) -> _Route | Rejected:
    """The catalog checks, the same for every event of a feed: the worker re-validates every event,
    so acceptances are remembered on the (immutable) catalog. Only acceptances: the cache is then
    bounded by the catalog (agencies x indicators x regions x units), whatever the input."""
    key = (event.agency, event.indicator, event.region, event.unit)
    route = catalog.accepted_routes.get(key)
    if route is None:
        route = _catalog_route(event, catalog)
        if isinstance(route, _Route):
            catalog.accepted_routes[key] = route
    return route


def _catalog_route(event: MetricEvent, catalog: Catalog) -> _Route | Rejected:
    agency = event.agency
    if not catalog.is_agency(agency):
        return Rejected(Reason.FORBIDDEN_AGENCY, f"{agency!r} is not a registered agency", agency)
    indicator = catalog.indicator(event.indicator)
    if indicator is None:
        return Rejected(Reason.UNKNOWN_INDICATOR, f"{event.indicator!r} is not in the plan catalog", agency)
    if indicator.agency != agency:
        return Rejected(Reason.FORBIDDEN_AGENCY,
                        f"{event.indicator!r} is owned by {indicator.agency!r}, not {agency!r}", agency)
    if not catalog.region_allowed(indicator, event.region):
        expected = "a district code" if indicator.regional else f"{CITY_WIDE!r} (city-wide)"
        return Rejected(Reason.UNKNOWN_REGION,
                        f"region {event.region!r} for {indicator.code!r}: expected {expected}", agency)
    factor = indicator.factor_for(event.unit)
    if factor is None:
        known = ", ".join([indicator.unit, *indicator.unit_aliases])
        return Rejected(Reason.UNIT_MISMATCH, f"unit {event.unit!r} for {indicator.code!r}; known: {known}",
                        agency)
    return _Route(indicator.code, indicator.unit, factor, indicator.allow_negative)


def _check_meaning(event: MetricEvent, catalog: Catalog, now: datetime, pushed_by: str | None) -> Verdict:
    agency = event.agency
    if pushed_by is not None and agency != pushed_by:
        return Rejected(Reason.FORBIDDEN_AGENCY, f"event is in the name of {agency!r}, pushed by {pushed_by!r}",
                        pushed_by)
    route = _route(event, catalog)
    if isinstance(route, Rejected):
        return route
    value = event.value * route.factor
    if not math.isfinite(value):
        return Rejected(Reason.NOT_FINITE, f"value {event.value!r} {event.unit} is not finite", agency)
    if value < 0 and not route.allow_negative:
        return Rejected(Reason.NEGATIVE_VALUE, f"{route.indicator!r} does not allow negative values", agency)
    observed = event.observed_at.astimezone(UTC)
    if observed > now + FUTURE_TOLERANCE:
        return Rejected(Reason.FUTURE_TIMESTAMP,
                        f"observed_at {event.observed_at.isoformat()} is more than 1 day in the future", agency)
    return Accepted(agency, event.event_id, event.revision, route.indicator, event.region, value, route.unit,
                    event.value, event.unit, observed)


def _schema_rejection(exc: ValidationError, pushed_by: str | None, agency: object) -> Rejected:
    errors = exc.errors(include_url=False, include_input=False)
    who = pushed_by or (agency if isinstance(agency, str) and agency else None)
    if any(e["type"] == "json_invalid" for e in errors):
        return Rejected(Reason.MALFORMED_JSON, _first(errors), who)
    if any(e["type"] in {"finite_number"} for e in errors):
        return Rejected(Reason.NOT_FINITE, _first(errors), who)
    return Rejected(Reason.SCHEMA_VIOLATION, _first(errors), who)


def _first(errors: list[Any]) -> str:
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e["loc"]) or "event"
        parts.append(f"{where}: {e['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _agency_hint(payload: bytes | str) -> str | None:
    """Best effort: the agency of an event that failed validation, for the dead-letter record."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    agency = data.get("agency") if isinstance(data, dict) else None
    return agency if isinstance(agency, str) and len(agency) <= 64 else None
