"""Per-agency bearer tokens: issued, listed, revoked and rotated by `highland tokens`, stored hashed
in ClickHouse, checked by the gateway and by `highland push`.

A token is ``hlt_`` and 256 random bits, shown once when issued; ClickHouse keeps only its SHA-256
(a fast hash is enough for 256 random bits). Its id, the first 12 hex digits of that hash, names it
in `tokens list / revoke / rotate`: enough to tell an agency's tokens apart, no help in guessing one.

Three tables (sinks/migrations 0002 and 0008; in the auth database since 0010), each read by the latest row per token:
``agency_tokens`` (issued, revoked), ``agency_token_expiry`` (optional: until when it is valid) and
``agency_token_uses`` (when it was last used, written at most once per
``settings.token_use_record_seconds`` per token and process, never per request).

The gateway (ingest/gateway.py) checks tokens through ``Verifier``, which the `highland gateway`
command hands it: ingest sits below storage and never opens a ClickHouse connection itself.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from highland.sinks.client import connect
from highland.sinks.tables import AGENCY_TOKEN_EXPIRY, AGENCY_TOKEN_USES, AGENCY_TOKENS, Table

from highland.settings import Settings

TOKEN_PREFIX = "hlt_"
ID_DIGITS = 12


class TokenError(ValueError):
    """A token id that names no token, or more than one, or one that can no longer be rotated."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(sha256: str) -> str:
    return sha256[:ID_DIGITS]


@dataclass(frozen=True)
class TokenInfo:
    """What an administrator may see of a token: never the secret, nor its whole hash."""

    id: str
    agency: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    sha256: str  # for the code that acts on it; never printed

    def state(self, now: datetime | None = None) -> str:
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "valid"

    def as_dict(self, now: datetime | None = None) -> dict[str, object]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {"id": self.id, "agency": self.agency, "state": self.state(now), "created_at": iso(self.created_at),
                "expires_at": iso(self.expires_at), "last_used_at": iso(self.last_used_at)}


def _utc(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _after_now() -> datetime:
    """A decision (revocation, new expiry) one second after anything written this second: the
    tables keep the row with the latest second, so it wins over the token's issue row."""
    return datetime.fromtimestamp(int(time.time()) + 1, UTC)


def _after_latest(client: Any, db: str, table: Table, digests: list[str]) -> datetime:
    """A decision's updated_at: after now and after every row the tokens already have in ``table``.
    Rows carry the clock of the machine that wrote them; after one written by a machine whose clock
    runs ahead, a revocation stamped with this machine's now would lose (the token kept working)."""
    rows = client.execute(f"SELECT toUnixTimestamp(max(updated_at)) FROM {table.qualified(db)} "
                          "WHERE token_sha256 IN %(h)s", {"h": tuple(digests)})
    newest = rows[0][0] if rows and rows[0][0] else 0
    return max(_after_now(), datetime.fromtimestamp(newest + 1, UTC))


# --- issue and decide ---------------------------------------------------------------------------

def issue(client: Any, db: str, agency: str, expires_at: datetime | None = None) -> str:
    """Create a token for ``agency``, valid until ``expires_at`` (None: until revoked); the clear text
    is returned once and never stored. The expiry is written first: no token exists without it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest, now = token_hash(token), datetime.now(UTC)
    if expires_at is not None:
        set_expiry(client, db, agency, digest, expires_at, at=now)
    client.execute(AGENCY_TOKENS.insert(db), [(agency, digest, 0, now)])
    return token


def set_expiry(client: Any, db: str, agency: str, sha256: str, expires_at: datetime,
               at: datetime | None = None) -> None:
    client.execute(AGENCY_TOKEN_EXPIRY.insert(db), [(agency, sha256, expires_at, at or _after_now())])


def _revoke(client: Any, db: str, rows: list[tuple[str, str]]) -> None:
    if rows:
        now = _after_latest(client, db, AGENCY_TOKENS, [digest for _, digest in rows])
        client.execute(AGENCY_TOKENS.insert(db), [(agency, digest, 1, now) for agency, digest in rows])


def revoke_all(client: Any, db: str, agency: str) -> int:
    """Revoke every token of ``agency`` (valid or expired); the number revoked."""
    live = [(t.agency, t.sha256) for t in list_tokens(client, db, agency) if not t.revoked]
    _revoke(client, db, live)
    return len(live)


def find(client: Any, db: str, id_: str) -> TokenInfo:
    """The one token whose id is ``id_``."""
    found = [t for t in list_tokens(client, db) if t.id == id_.strip().lower()]
    if len(found) != 1:
        raise TokenError(f"no token has the id {id_!r}" if not found else
                         f"{len(found)} tokens share the id {id_!r}: revoke them by agency (--agency)")
    return found[0]


def revoke(client: Any, db: str, id_: str) -> TokenInfo:
    """Revoke one token by its id; the token as it was."""
    token = find(client, db, id_)
    if not token.revoked:
        _revoke(client, db, [(token.agency, token.sha256)])
    return token


def rotate(client: Any, db: str, id_: str, expires_at: datetime | None = None,
           keep_old: timedelta | None = None) -> tuple[str, TokenInfo]:
    """A new token for the agency of token ``id_`` (valid until ``expires_at``), and the old one
    revoked, or with ``keep_old`` left valid that much longer (never longer than it already was), so
    the agency can switch without a gap. (new token's clear text, the old token)."""
    old = find(client, db, id_)
    if old.state() != "valid":
        raise TokenError(f"token {old.id} is {old.state()}: issue a new one (`highland tokens issue`)")
    new = issue(client, db, old.agency, expires_at)
    if keep_old is None:
        _revoke(client, db, [(old.agency, old.sha256)])
    else:
        until = datetime.now(UTC) + keep_old
        if old.expires_at is None or until < old.expires_at:
            set_expiry(client, db, old.agency, old.sha256, until,
                       at=_after_latest(client, db, AGENCY_TOKEN_EXPIRY, [old.sha256]))
    return new, old


# --- read ----------------------------------------------------------------------------------------

def list_tokens(client: Any, db: str, agency: str | None = None) -> list[TokenInfo]:
    """Every token (of ``agency``), oldest first, with its expiry and when it was last used."""
    where, params = ("WHERE agency = %(a)s", {"a": agency}) if agency else ("", {})
    rows = client.execute(
        f"SELECT agency, token_sha256, toUnixTimestamp(min(updated_at)), argMax(revoked, updated_at) "
        f"FROM {AGENCY_TOKENS.qualified(db)} {where} GROUP BY agency, token_sha256", params)
    expiry = dict(client.execute(
        f"SELECT token_sha256, toUnixTimestamp(argMax(expires_at, updated_at)) "
        f"FROM {AGENCY_TOKEN_EXPIRY.qualified(db)} {where} GROUP BY token_sha256", params))
    used = dict(client.execute(
        f"SELECT token_sha256, toUnixTimestamp(max(used_at)) FROM {AGENCY_TOKEN_USES.qualified(db)} {where} "
        "GROUP BY token_sha256", params))
    tokens = [TokenInfo(token_id(digest), owner, _utc(created) or datetime.now(UTC), _utc(expiry.get(digest)),
                        _utc(used.get(digest)), bool(revoked), digest)
              for owner, digest, created, revoked in rows]
    return sorted(tokens, key=lambda t: (t.created_at, t.agency, t.id))


def agency_of(client: Any, db: str, token: str, now: datetime | None = None) -> str | None:
    """The agency a token belongs to while it is valid (issued, not revoked, not expired); else None."""
    digest = token_hash(token)
    rows = client.execute(
        f"SELECT agency FROM {AGENCY_TOKENS.qualified(db)} WHERE token_sha256 = %(h)s "
        "GROUP BY agency, token_sha256 HAVING argMax(revoked, updated_at) = 0", {"h": digest})
    if not rows:
        return None
    expiry = client.execute(
        f"SELECT toUnixTimestamp(argMax(expires_at, updated_at)) FROM {AGENCY_TOKEN_EXPIRY.qualified(db)} "
        "WHERE token_sha256 = %(h)s GROUP BY token_sha256", {"h": digest})
    if expiry and expiry[0][0] <= (now or datetime.now(UTC)).timestamp():
        return None
    return rows[0][0]


def record_use(client: Any, db: str, sha256: str, agency: str, at: datetime | None = None) -> None:
    client.execute(AGENCY_TOKEN_USES.insert(db), [(agency, sha256, at or datetime.now(UTC))])


# --- the gateway's check ------------------------------------------------------------------------

class Verifier:
    """The gateway's store: the token check, (token) -> its agency, or None; ``record_use``, which
    notes a use of a token (the gateway calls it at most once per ``token_use_record_seconds`` per
    token); and ``dead_letters``, an agency's own rejected events.
    Blocking, and safe to call from several worker threads at once: all queries share one ClickHouse
    connection (a lock keeps them one at a time, as a connection carries one query), opened on
    first use and again after it failed, so a stream of cache misses never opens a connection each.
    The connection is the token reader's (settings.clickhouse_token_reader_user) when one is set
    (docs/agencies.md, "Gateway limits"; docs/security.md, "Agencies' identity")."""

    def __init__(self, settings: Settings, connect_to: Callable[[], Any] | None = None) -> None:
        self._settings = settings
        self._connect = connect_to or (lambda: connect_token_reader(settings))
        self._client: Any = None
        self._lock = threading.Lock()
        self.connections = 0  # opened so far: a test's window onto the reuse

    def _run(self, query: Callable[[Any, str], Any]) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
                self.connections += 1
            try:
                return query(self._client, self._settings.clickhouse_database)
            except Exception:
                # A broken connection is dropped, so the next query opens a fresh one.
                self._client.disconnect()
                self._client = None
                raise

    def __call__(self, token: str) -> str | None:
        return self._run(lambda client, db: agency_of(client, db, token))

    def record_use(self, sha256: str, agency: str) -> None:
        self._run(lambda client, db: record_use(client, db, sha256, agency))

    def dead_letters(self, agency: str, limit: int) -> list[dict[str, Any]]:
        """``agency``'s own dead letters (GET /v1/dead-letters), on the same connection."""
        from highland.sinks.agency_dead_letters import agency_dead_letters

        return self._run(lambda client, db: agency_dead_letters(client, db, agency, limit))  # type: ignore[no-any-return]


def connect_token_reader(settings: Settings) -> Any:
    """A connection as the token reader, or as the writer where no token reader is configured."""
    if settings.clickhouse_token_reader_user is None:
        return connect(settings)
    reader = settings.model_copy(update={"clickhouse_user": settings.clickhouse_token_reader_user,
                                         "clickhouse_password": settings.clickhouse_token_reader_password})
    return connect(reader)


def verifier(settings: Settings) -> Verifier:
    """The check `highland gateway` hands the gateway."""
    return Verifier(settings)
