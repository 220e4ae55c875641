"""One agency's own dead letters, as the gateway's ``GET /v1/dead-letters`` answers them.

Only rows stored in that agency's name: a door that authenticates (the gateway, `push`) names the
agency of the token, so an event in another agency's name is that pusher's ``forbidden_agency``,
never a row the other agency reads. The raw payload is the agency's own, so it is returned.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from highland.ingest.events import Reason
from highland.ingest.names import REASON_ZH

_COLUMNS = ("reason", "detail", "source", "origin", "payload", "payload_encoding")


def agency_dead_letters(client: Any, db: str, agency: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters stored in ``agency``'s name (each position once)."""
    rows = client.execute(
        f"SELECT {', '.join(_COLUMNS)}, toUnixTimestamp(received_at) AS at, dlq_partition, dlq_offset "
        f"FROM {db}.dead_letters WHERE agency = %(a)s "
        "ORDER BY at DESC, dlq_partition, dlq_offset DESC LIMIT 1 BY dlq_partition, dlq_offset "
        "LIMIT %(n)s", {"a": agency, "n": limit})
    out = []
    for row in rows:
        letter = dict(zip(_COLUMNS, row[:len(_COLUMNS)], strict=True))
        reason = letter["reason"]
        letter["reason_zh"] = REASON_ZH.get(Reason(reason), "") if reason in Reason._value2member_map_ else ""
        letter["received_at"] = datetime.fromtimestamp(row[len(_COLUMNS)], UTC).isoformat()
        out.append(letter)
    return out
