"""The dead-letter record: what a rejected event becomes on ``highland.events.dlq``.

Nothing rejected is dropped silently: every door (push, gateway, worker) turns a ``Rejected``
verdict into one of these, with the raw payload kept byte for byte (base64 if not UTF-8).

The dead-letter topic is open to the same producers as the events topic, so the worker that stores
it reads what it finds there as untrusted too: a record that is no dead letter becomes one of its
own (``unreadable``), and one that can't be stored as sent is stored ``sanitized``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Literal

from highland.ingest.events import Reason, Rejected
from pydantic import BaseModel, ConfigDict

DLQ_SCHEMA_HEADER = ("schema", b"dead-letter/1")

Source = Literal["push", "gateway", "worker"]


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: Reason
    detail: str
    agency: str | None
    received_at: datetime
    source: Source
    origin: str | None = None  # file:line, client address, or topic/partition/offset
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"

    @property
    def key(self) -> bytes:
        return (self.agency or "-").encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def raw_payload(self) -> bytes:
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode()


def _payload(raw: bytes | str) -> tuple[str, str]:
    """The payload as text, and how to read it back: UTF-8 as is, anything else as base64."""
    if isinstance(raw, str):
        return raw, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def _escaped(text: str) -> str:
    """``text`` as valid Unicode whatever it held (a lone surrogate becomes its escape sequence)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def dead_letter(rejected: Rejected, raw: bytes | str, source: Source, origin: str | None = None,
                received_at: datetime | None = None) -> DeadLetter:
    payload, encoding = _payload(raw)
    # Texts taken from the payload (the agency it names, a detail quoting it) may hold a lone
    # surrogate: escaped, or the record could be neither sent nor stored.
    return DeadLetter(
        reason=rejected.reason, detail=_escaped(rejected.detail),
        agency=None if rejected.agency is None else _escaped(rejected.agency),
        received_at=received_at or datetime.now(UTC), source=source, origin=origin,
        payload=_escaped(payload), payload_encoding=encoding,  # type: ignore[arg-type]
    )


def unreadable(raw: bytes, why: str, origin: str, now: datetime) -> DeadLetter:
    """A record of the dead-letter topic that is no dead letter (forged, corrupted), kept as a dead
    letter of its own: ``malformed_json`` if it is not JSON, else ``schema_violation``."""
    try:
        json.loads(raw)
        reason = Reason.SCHEMA_VIOLATION
    except ValueError:
        reason = Reason.MALFORMED_JSON
    payload, encoding = _payload(raw)
    return DeadLetter(reason=reason, detail=_escaped(f"unreadable dead letter: {why}")[:1000], agency=None,
                      received_at=now, source="worker", origin=origin, payload=_escaped(payload),
                      payload_encoding=encoding)  # type: ignore[arg-type]


def sanitized(letter: DeadLetter, why: str, now: datetime) -> DeadLetter:
    """``letter`` in a form any store can hold: received now (the time it claims is kept in the
    detail), every text valid Unicode. The reason, the agency and the payload are kept."""
    detail = f"{letter.detail} [stored sanitized: {why}; received_at was {letter.received_at.isoformat()}]"
    return letter.model_copy(update={
        "detail": _escaped(detail)[:2000], "received_at": now,
        "agency": None if letter.agency is None else _escaped(letter.agency),
        "origin": None if letter.origin is None else _escaped(letter.origin),
        "payload": _escaped(letter.payload),
    })
