"""Per-agency bearer tokens: issued by `highland tokens issue`, stored hashed in ClickHouse.

The gateway (ingest/gateway.py) checks them through ``verifier``, which the `highland gateway`
command hands it: ingest sits below storage and never opens a ClickHouse connection itself.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from highland.sinks.client import connect

from highland.settings import Settings

TOKEN_PREFIX = "hlt_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(client: Any, db: str, agency: str) -> str:
    """Create a token for ``agency``; the clear text is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    client.execute(f"INSERT INTO {db}.agency_tokens (agency, token_sha256, revoked, updated_at) VALUES",
                   [(agency, token_hash(token), 0, datetime.now(UTC))])
    return token


def revoke_all(client: Any, db: str, agency: str) -> int:
    rows = client.execute(
        f"SELECT token_sha256 FROM {db}.agency_tokens WHERE agency = %(a)s "
        "GROUP BY token_sha256 HAVING argMax(revoked, updated_at) = 0", {"a": agency})
    # One second later than any issue in the same second, so the revocation row wins.
    now = datetime.fromtimestamp(time.time() + 1, UTC)
    if rows:
        client.execute(f"INSERT INTO {db}.agency_tokens (agency, token_sha256, revoked, updated_at) VALUES",
                       [(agency, h, 1, now) for (h,) in rows])
    return len(rows)


def agency_of(client: Any, db: str, token: str) -> str | None:
    """The agency a valid, unrevoked token belongs to; None otherwise."""
    rows = client.execute(
        f"SELECT agency FROM {db}.agency_tokens WHERE token_sha256 = %(h)s "
        "GROUP BY agency, token_sha256 HAVING argMax(revoked, updated_at) = 0", {"h": token_hash(token)})
    return rows[0][0] if rows else None


def verifier(settings: Settings) -> Callable[[str], str | None]:
    """The gateway's token check: (token) -> its agency, or None. Blocking; the gateway runs it in a
    worker thread on a cache miss."""

    def agency_for(token: str) -> str | None:
        # A connection of its own, closed right after, so concurrent checks never share one and
        # none is left open.
        client = connect(settings)
        try:
            return agency_of(client, settings.clickhouse_database, token)
        finally:
            client.disconnect()

    return agency_for
