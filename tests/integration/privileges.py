"""What a statement needs on current ClickHouse, and what deploy/ grants (docs/security.md, "Privileges").

``needs(sql, db)`` reads one statement as ClickHouse logged it and returns the privileges current
ClickHouse checks for it, as (privilege, object) pairs with the database written ``highland`` (the
database deploy/ grants on): ``("INSERT", "highland.events")``, ``("CREATE TEMPORARY TABLE", "*.*")``,
``("SELECT(reason,agency)", "highland.dead_letters")`` for the columns of a table whose columns are
granted one by one. Tables without a database are the session's temporary tables or the driver's
external tables: both need the global CREATE TEMPORARY TABLE and nothing per table.

``granted(path)`` reads deploy/'s users.xml: each user's GRANT queries as the same pairs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from highland.sinks.cluster import local_name
from highland.sinks.tables import AUTH_SUFFIX, TABLES, Sharded

from tests.conftest import ROOT

DEPLOY_DB = "highland"
USERS_XML = ROOT / "deploy" / "compose" / "clickhouse" / "users.d" / "highland.xml"
# A table of the auth database (the token tables), as ``needs`` reads it: ``<db>.<AUTH_MARK><table>``.
AUTH_MARK = "auth__"
TEMPORARY = ("CREATE TEMPORARY TABLE", "*.*")
# Columns granted one by one: the dashboards' user never reads a dead letter's raw payload.
COLUMN_GRANTED = {"dead_letters": ("dlq_partition", "dlq_offset", "reason", "detail", "agency", "source", "origin",
                                   "received_at", "payload", "payload_encoding")}


# Each view -> the tables its SELECT reads (a view runs with its invoker's rights): learnt from the
# CREATE VIEW statements the migrations issued (``learn_views``).
VIEWS: dict[str, set[str]] = {}


def learn_views(statements: list[str], db: str) -> None:
    for sql in statements:
        text = " ".join(sql.split())
        if m := re.match(rf"CREATE VIEW (IF NOT EXISTS )?{re.escape(db)}\.(\w+) AS (.*)", text):
            VIEWS[m.group(2)] = _tables(m.group(3), db)


# INSERT INTO events also writes the live windows (migration 0003's materialized views). Under
# current ClickHouse's default SQL SECURITY DEFINER the view writes with its creator's rights; the
# worker is granted INSERT on the windows too, so it works as well where views run as the invoker.
MATERIALIZED_TARGETS = {"events": {"event_windows_1m", "event_windows_1h"}}


def _tables(sql: str, db: str) -> set[str]:
    return set(re.findall(rf"\b{re.escape(db)}\.(\w+)", sql))


def _obj(table: str) -> str:
    """The table as deploy/ names it: in ``highland``, or in ``highland_auth`` (the token tables)."""
    if table.startswith(AUTH_MARK):
        return f"{DEPLOY_DB}{AUTH_SUFFIX}.{table.removeprefix(AUTH_MARK)}"
    return f"{DEPLOY_DB}.{table}"


def _select(table: str, sql: str) -> set[tuple[str, str]]:
    if table in VIEWS:
        return {("SELECT", _obj(table))} | {p for t in VIEWS[table] for p in _select(t, sql)}
    if table in COLUMN_GRANTED:
        columns = COLUMN_GRANTED[table]
        used = columns if re.search(r"SELECT\s+\*|\*\s+FROM", sql) else tuple(
            c for c in columns if re.search(rf"\b{c}\b", sql))
        return {(f"SELECT({c})", _obj(table)) for c in used}
    return {("SELECT", _obj(table))}


def needs(sql: str, db: str) -> set[tuple[str, str]]:
    """The privileges current ClickHouse checks for ``sql`` (one statement on database ``db``)."""
    text = " ".join(sql.split())
    head = text.upper()
    if m := re.match(rf"CREATE DATABASE (IF NOT EXISTS )?{re.escape(db)}({AUTH_SUFFIX})?\b", text):
        return {("CREATE DATABASE", f"{DEPLOY_DB}{m.group(2) or ''}.*")}
    # The auth database's tables read as tables of ``db`` with a mark, so every pattern below holds.
    text = re.sub(rf"\b{re.escape(db)}{AUTH_SUFFIX}\.(\w+)", rf"{db}.{AUTH_MARK}\1", text)
    obj = _obj

    out: set[tuple[str, str]] = set()
    if head.startswith(("CREATE TEMPORARY TABLE", "DROP TEMPORARY TABLE")) or re.search(
            r"\bFROM _\w+|\bIN _\w+|\bJOIN _\w+|INTO _\w+", text):
        out.add(TEMPORARY)
    if re.match(r"SET \w+ = ", text):  # a session's settings (on a cluster): no grant, a profile not readonly
        return out
    if m := re.match(rf"SYSTEM SYNC REPLICA {re.escape(db)}\.(\w+)$", text):  # the waits on a cluster
        return {("SYSTEM SYNC REPLICA", obj(m.group(1)))}
    if re.match(r"SYSTEM |SELECT (version|timezone|1)\b", text):
        return out
    tables = _tables(text, db)
    written: set[str] = set()
    if m := re.match(rf"INSERT INTO {re.escape(db)}\.(\w+)", text):
        written = {m.group(1)}
        out.add(("INSERT", obj(m.group(1))))
        out |= {("INSERT", obj(t)) for t in MATERIALIZED_TARGETS.get(m.group(1), ())}
    elif m := re.match(rf"CREATE (MATERIALIZED )?VIEW (IF NOT EXISTS )?{re.escape(db)}\.(\w+)", text):
        written = {m.group(3)}
        out.add(("CREATE VIEW", obj(m.group(3))))
        if to := re.search(rf"\bTO {re.escape(db)}\.(\w+)", text):
            written.add(to.group(1))
            out.add(("INSERT", obj(to.group(1))))
    elif m := re.match(rf"CREATE TABLE (IF NOT EXISTS )?{re.escape(db)}\.(\w+)", text):
        return {("CREATE TABLE", obj(m.group(2)))}
    elif m := re.match(rf"(DROP|TRUNCATE) TABLE (IF EXISTS )?{re.escape(db)}\.(\w+)", text):
        return {("DROP TABLE" if m.group(1) == "DROP" else "TRUNCATE", obj(m.group(3)))}
    elif m := re.match(rf"ALTER TABLE {re.escape(db)}\.(\w+) DELETE", text):
        written = {m.group(1)}
        out.add(("ALTER DELETE", obj(m.group(1))))
    elif m := re.match(rf"ALTER TABLE {re.escape(db)}\.(\w+) ADD COLUMN", text):
        return {("ALTER ADD COLUMN", obj(m.group(1)))}
    elif m := re.match(rf"EXISTS TABLE {re.escape(db)}\.(\w+)", text):
        return {("SHOW TABLES", obj(m.group(1)))}
    elif m := re.match(rf"OPTIMIZE TABLE {re.escape(db)}\.(\w+)", text):
        return {("OPTIMIZE", obj(m.group(1)))}
    elif not re.match(r"(SELECT|WITH|CREATE TEMPORARY TABLE|DROP TEMPORARY TABLE|INSERT INTO _)", text):
        raise ValueError(f"a statement the privilege map does not know: {text[:200]}")
    if re.search(r"\b(url|remote|remoteSecure|file|s3|mysql|postgresql|hdfs|jdbc|odbc|input|cluster)\s*\(",
                 text, re.I):
        raise ValueError(f"a table function: {text[:200]}")
    reads = {t for t in tables if t not in written or re.search(rf"\b(FROM|JOIN)\s+{re.escape(db)}\.{t}\b", text)}
    for table in reads:
        out |= _select(table, text)
    if "ALTER DELETE" in {p for p, _ in out}:  # a mutation reads the rows it deletes
        out |= _select(next(iter(written)), "")
    return out


def on_a_cluster(need: tuple[str, str]) -> set[tuple[str, str]]:
    """``need`` and, for a sharded table, the same on its <name>_local: on the cluster a Distributed
    table reads and writes the shards' <name>_local tables as the initial user (sinks/cluster.py)."""
    privilege, target = need
    db, _, table = target.partition(".")
    if table in TABLES and isinstance(TABLES[table].layout, Sharded):
        return {need, (privilege, f"{db}.{local_name(table)}")}
    return {need}


def parse_grant(query: str) -> set[tuple[str, str]]:
    """``GRANT A, B(c1, c2) ON db.t`` -> {(A, db.t), (B(c1), db.t), (B(c2), db.t)}."""
    m = re.fullmatch(r"GRANT (.+) ON (\S+)", " ".join(query.split()))
    if not m:
        raise ValueError(f"not a GRANT of this form: {query}")
    privileges, target = m.groups()
    out = set()
    for part in re.findall(r"[A-Z ]+(?:\([^)]*\))?", privileges):
        part = part.strip()
        if not part:
            continue
        if cols := re.fullmatch(r"([A-Z ]+)\(([^)]*)\)", part):
            out |= {(f"{cols.group(1).strip()}({c.strip()})", target) for c in cols.group(2).split(",")}
        else:
            out.add((part, target))
    return out


def grant_queries(path: Path) -> dict[str, list[str]]:
    """Each user of a users.xml -> its GRANT queries."""
    users = ET.parse(path).getroot().find("users")
    assert users is not None
    return {user.tag: [q.text or "" for q in user.iter("query")] for user in users}


def granted(path: Path) -> dict[str, set[tuple[str, str]]]:
    return {user: set().union(*(parse_grant(q) for q in queries)) if queries else set()
            for user, queries in grant_queries(path).items()}


def needed_grants(needs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """``needs`` and, where every column of a table granted by columns is needed, its table-level SELECT."""
    out = set(needs)
    for table, columns in COLUMN_GRANTED.items():
        for target in {t for _p, t in needs if t.split(".")[-1].removesuffix("_local") == table}:
            if all((f"SELECT({c})", target) in needs for c in columns):
                out.add(("SELECT", target))
    return out


def covers(have: set[tuple[str, str]], need: tuple[str, str]) -> bool:
    """Exact names: deploy/ grants the fine-grained privileges, per table (a table's SELECT also covers
    each of its columns)."""
    privilege, target = need
    if need in have:
        return True
    if privilege.startswith("SELECT(") and {("SELECT", target), ("SELECT", target.split(".")[0] + ".*")} & have:
        return True
    return (privilege, target.split(".")[0] + ".*") in have
