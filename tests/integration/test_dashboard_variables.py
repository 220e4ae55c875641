"""A dashboard variable is data, never SQL, on both dialects (docs/security.md, "The read side").

Anyone who opens a dashboard URL chooses the variable's value (`?var-indicator=...`). Every panel that
uses it is run, macros expanded as Grafana would (dashboards/macros.py), with hostile values: as the
read-only user on ClickHouse 18.16 and on current ClickHouse (chdb), over the known feed of
test_dashboards_sql.py with a token stored beside it. Each must answer exactly what it answers for an
unknown indicator code: no error, no row of another indicator, no token hash."""

from __future__ import annotations

from typing import Any

import pytest
from highland.catalog.models import Catalog
from highland.dashboards import definitions
from highland.dashboards.macros import expand
from highland.dashboards.queries import INDICATOR_VAR
from highland.sinks.tables import AGENCY_TOKENS, auth_database

from tests.integration import test_dashboards_sql as known
from tests.integration.test_dashboards_sql import RANGES, Engine, boards

pytestmark = pytest.mark.integration

# The known feed's module fixtures, for this module: a database of its own on each engine.
catalog, server, embedded, engine = known.catalog, known.server, known.embedded, known.engine

TOKEN_HASH = "f" * 64
# Quotes and backslashes in the combinations that end a literal in ClickHouse (which reads both
# '' and \' as a quote inside one), comments, a second statement, and other alphabets.
HOSTILE = [
    "\\'", "\\", "\\\\'", "'", "''", "\\''", "x\\' OR 1 OR \\'",
    "telecom_business_volume\\' OR indicator != \\'",
    "\\') UNION ALL SELECT token_sha256 FROM agency_tokens --",
    "' OR '1'='1", "x' OR 1=1 --\n", "*/ OR 1 /*", "%27 OR 1", "telecom_business_volume\n; DROP TABLE events",
    "指标\\'或1", "\x00", "\u202e",
]
UNKNOWN = "no_such_indicator"
# What `${indicator:sqlstring}` let through (it doubles the quote, and ClickHouse reads the backslash
# before it as an escape): the literal ends, `OR 1)` closes the panel's condition, a UNION reads the
# token table, and `--` comments out the rest of the line with the closing quote.
EXFILTRATE = ("\\' OR 1) UNION ALL SELECT agency, token_sha256, today(), toUInt64(1), 1., 1., now() "
              "FROM {db}.agency_tokens --")


@pytest.fixture(scope="module")
def with_token(engine: Engine) -> Engine:
    run = engine._run  # the writer is not at hand on 18.16: store through the engine that owns the data
    writer = getattr(engine, "writer", None)
    sql = f"INSERT INTO {AGENCY_TOKENS.qualified(engine.db)} (agency, token_sha256, revoked, updated_at) VALUES"
    if writer is not None:
        from datetime import UTC, datetime

        writer.execute(sql, [("cq_comms_admin", TOKEN_HASH, 0, datetime.now(UTC))])
    else:
        run(f"{sql} ('cq_comms_admin', '{TOKEN_HASH}', 0, now())")
    return engine


def _variable_panels(db: str, catalog: Catalog) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, SQL) of every panel query that uses the indicator variable."""
    return [(uid, p["title"], t["rawSql"]) for uid, board in boards(db, catalog).items() for p in board["panels"]
            for t in p["targets"] if "${indicator" in t["rawSql"]]


@pytest.mark.parametrize("value", HOSTILE)
def test_the_variable_reaches_sql_as_exactly_its_value(engine: Engine, value: str):
    result = engine.query(expand(f"SELECT {INDICATOR_VAR} AS v", RANGES[definitions.INDICATOR_UID],
                                 {"indicator": value}))
    assert [r["v"] for r in result.rows] == [value]


def test_hostile_values_answer_as_an_unknown_indicator_and_read_nothing_else(with_token: Engine, catalog: Catalog):
    engine = with_token
    panels = _variable_panels(engine.db, catalog)
    assert len(panels) >= 4
    for uid, title, sql in panels:
        def run(value: str, uid: str = uid, sql: str = sql) -> list[dict[str, Any]]:
            return engine.query(expand(sql, RANGES[uid], {"indicator": value})).rows

        unknown = run(UNKNOWN)
        assert TOKEN_HASH not in repr(unknown)
        for value in HOSTILE:
            rows = run(value)
            assert TOKEN_HASH not in repr(rows), (title, value)
            assert rows == unknown, (title, value)


def test_the_backslash_injection_returns_no_foreign_row(with_token: Engine, catalog: Catalog):
    """The district panel with the value that, under `${indicator:sqlstring}`, listed token hashes as
    districts (and every regional indicator's districts with them)."""
    engine = with_token
    sql = next(s for _uid, title, s in _variable_panels(engine.db, catalog) if title.startswith("By district"))
    time_range = RANGES[definitions.INDICATOR_UID]
    fiber = engine.query(expand(sql, time_range, {"indicator": "fiber_broadband_ports"})).rows
    assert fiber  # the known feed's regional indicator has districts: a foreign row would be one of them
    rows = engine.query(expand(sql, time_range, {"indicator": EXFILTRATE.format(db=auth_database(engine.db))})).rows
    assert TOKEN_HASH not in {r["district"] for r in rows}
    assert rows == []
