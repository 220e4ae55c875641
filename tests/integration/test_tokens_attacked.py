"""Tokens as administrators on several machines manage them (issue 16, attacked): every row carries
the clock of the machine that wrote it, so a token issued on a machine whose clock runs ahead must
still be revoked, and kept for `--keep-old` no longer than asked, by `highland tokens` run elsewhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from highland.sinks.client import connect
from highland.sinks.tables import AGENCY_TOKEN_EXPIRY, AGENCY_TOKENS
from highland.sinks.tokens import Verifier, issue, token_hash, token_id

from highland.settings import Settings
from tests.integration.test_agency_door import tokens

pytestmark = pytest.mark.integration
AHEAD = timedelta(seconds=30)  # the issuing machine's clock


def issued_ahead(settings: Settings, token: str, expires_at: datetime | None = None) -> str:
    """The rows `tokens issue` writes, as a machine whose clock runs AHEAD writes them; the id."""
    client, db, digest = connect(settings), settings.clickhouse_database, token_hash(token)
    stamp = datetime.now(UTC) + AHEAD
    if expires_at is not None:
        client.execute(AGENCY_TOKEN_EXPIRY.insert(db), [("cq_commerce", digest, expires_at, stamp)])
    client.execute(AGENCY_TOKENS.insert(db), [("cq_commerce", digest, 0, stamp)])
    return token_id(digest)


def test_a_token_issued_on_a_machine_whose_clock_runs_ahead_is_revoked_by_another(isolated: Settings):
    token = "hlt_issued_on_a_fast_clock_" + "x" * 20
    check = Verifier(isolated)  # the gateway's token check
    revoked_id = issued_ahead(isolated, token)
    assert check(token) == "cq_commerce"
    tokens(isolated, "revoke", revoked_id)
    # Before: the revocation, stamped with this machine's clock, lost to the issue row.
    assert check(token) is None


def test_keep_old_shortens_a_token_issued_on_a_machine_whose_clock_runs_ahead(isolated: Settings):
    token = "hlt_issued_on_a_fast_clock_" + "y" * 20
    old_id = issued_ahead(isolated, token, expires_at=datetime.now(UTC) + timedelta(days=365))
    tokens(isolated, "rotate", old_id, "--keep-old", "1h")
    [old] = [t for t in json.loads(tokens(isolated, "list", "--json").stdout) if t["id"] == old_id]
    # Before: the year-long expiry written "later" by the fast clock won over the hour asked.
    assert datetime.fromisoformat(old["expires_at"]) < datetime.now(UTC) + timedelta(hours=2)


def test_keep_old_never_lengthens_a_token_that_expires_sooner(isolated: Settings):
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    old_id = token_id(token_hash(issue(connect(isolated), isolated.clickhouse_database, "cq_commerce", soon)))
    tokens(isolated, "rotate", old_id, "--keep-old", "7d")
    [old] = [t for t in json.loads(tokens(isolated, "list", "--json").stdout) if t["id"] == old_id]
    assert datetime.fromisoformat(old["expires_at"]) == soon  # not a week: "never longer than it already was"
