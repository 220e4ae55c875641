"""Per-agency bearer tokens: issued by `highland tokens issue`, stored hashed in ClickHouse.

The gateway (ingest/gateway.py) checks them through ``verifier``, which the `highland gateway`
command hands it: ingest sits below storage and never opens a ClickHouse connection itself.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
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


class Verifier:
    """The gateway's token check: (token) -> its agency, or None. Blocking, and safe to call from
    several worker threads at once: all look-ups share one ClickHouse connection (a lock keeps them
    one at a time, as a connection carries one query), opened on first use and again after it
    failed, so a stream of cache misses never opens a connection each. The connection is the token
    reader's (settings.clickhouse_token_reader_user) when one is set: it may read the token table
    and nothing else (docs/agencies.md, "Gateway limits")."""

    def __init__(self, settings: Settings, connect_to: Callable[[], Any] | None = None) -> None:
        self._settings = settings
        self._connect = connect_to or (lambda: connect_token_reader(settings))
        self._client: Any = None
        self._lock = threading.Lock()
        self.connections = 0  # opened so far: a test's window onto the reuse

    def __call__(self, token: str) -> str | None:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
                self.connections += 1
            try:
                return agency_of(self._client, self._settings.clickhouse_database, token)
            except Exception:
                # A broken connection is dropped, so the next look-up opens a fresh one.
                self._client.disconnect()
                self._client = None
                raise


def connect_token_reader(settings: Settings) -> Any:
    """A connection as the token reader, or as the writer where no token reader is configured."""
    if settings.clickhouse_token_reader_user is None:
        return connect(settings)
    reader = settings.model_copy(update={"clickhouse_user": settings.clickhouse_token_reader_user,
                                         "clickhouse_password": settings.clickhouse_token_reader_password})
    return connect(reader)


def verifier(settings: Settings) -> Callable[[str], str | None]:
    """The check `highland gateway` hands the gateway."""
    return Verifier(settings)
