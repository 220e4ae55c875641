"""The dead-letter record: what a rejected event becomes on ``highland.events.dlq``.

Nothing rejected is dropped silently: every door (push, gateway, worker) turns a ``Rejected``
verdict into one of these, with the raw payload kept byte for byte (base64 if not UTF-8).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ingest.events import Reason, Rejected

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


def dead_letter(rejected: Rejected, raw: bytes | str, source: Source, origin: str | None = None,
                received_at: datetime | None = None) -> DeadLetter:
    if isinstance(raw, bytes):
        try:
            payload, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(raw).decode(), "base64"
    else:
        payload, encoding = raw, "utf-8"
    return DeadLetter(
        reason=rejected.reason, detail=rejected.detail, agency=rejected.agency,
        received_at=received_at or datetime.now(UTC), source=source, origin=origin,
        payload=payload, payload_encoding=encoding,  # type: ignore[arg-type]
    )
