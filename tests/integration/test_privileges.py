"""Every statement each role issues, recorded on the real 18.16 server (system.query_log, per user and
phase), mapped to the privileges current ClickHouse checks (tests/integration/privileges.py) and held
against deploy/'s grants: a statement without a grant fails, and so does a grant no statement needs.
Every GRANT in deploy/ is validated by current ClickHouse (chdb). docs/security.md, "Privileges".

The roles, one phase each: the schema (migrations and the plan tables: `highland setup`), the worker
(a real `highland worker` storing events, dead letters, alerts and running its self-check), the
operator's CLI (tokens, dlq with its raw payloads, verify --repair), the gateway (as its own user),
and the reader (every dashboard panel, variable and alert rule, `highland board`, and duty staff's
`progress` and `alerts`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.dashboards import alerting, definitions
from highland.dashboards.macros import TimeRange, expand
from highland.dashboards.queries import Sql
from highland.ingest.events import SCHEMA_HEADER
from highland.sinks import audit
from highland.sinks.client import connect
from highland.sinks.migrate import migrate
from highland.sinks.plan_tables import sync_plan_tables
from highland.sinks.tables import AUTH_SUFFIX, auth_database
from kafka import KafkaProducer
from pydantic import SecretStr

from highland.settings import Settings
from highland.stack import local
from tests.conftest import ROOT
from tests.integration import privileges
from tests.integration.support import WorkerProcess, dumps, wait_for
from tests.integration.test_ingest import GatewayProcess, auth
from tests.integration.test_migrations import restore_aa7b72c

pytestmark = pytest.mark.integration

USERS_XML = privileges.USERS_XML
# Which deploy/ user each role runs as.
DEPLOY_USER = {"schema": "highland", "worker": "highland", "operator": "highland", "tokens": "highland_tokens",
               "reader": "highland_reader"}
# Granted for statements this run does not issue, each for a reason: ON CLUSTER DDL (the schema on a
# cluster), migration 0007's copy on an install from before 0007 (TRUNCATE of the half-copied table
# it starts again: sinks/migrations/__init__.py), and the writer's and self-check's wait for the
# replicas on a cluster (SYSTEM SYNC REPLICA of the shard-local tables: sinks/replicas.py).
NOT_REACHED_HERE = {"highland": {("CLUSTER", "*.*"), ("TRUNCATE", "highland.*"), ("SYSTEM SYNC REPLICA", "highland.*")}}
# Hostile strings an agency can get into a dead letter through the normal path.
MARKUP_UNIT = "[/oops]"
ESCAPES = "\x1b[2J\x1b]0;owned\x07"


_on_a_cluster = privileges.on_a_cluster


@dataclass
class Run:
    db: str
    statements: dict[str, list[str]]  # role -> the statements it issued, as logged
    dlq_output: str
    board_output: str


def _admin(settings: Settings) -> Any:
    password = local.ensure_secrets(settings)["HIGHLAND_CLICKHOUSE_ADMIN_PASSWORD"]
    admin = settings.model_copy(update={"clickhouse_user": "default", "clickhouse_password": SecretStr(password)})
    return connect(admin, database="default")


def _now(admin: Any) -> datetime:
    [(now,)] = admin.execute("SELECT now()")
    return now


def _logged(admin: Any, user: str, since: datetime, until: datetime, dbs: tuple[str, ...]) -> list[str]:
    """The statements ``user`` started in [since, until] that touch ``dbs`` or no database at all
    (session tables), as the server logged them."""
    admin.execute("SYSTEM FLUSH LOGS")
    rows = admin.execute(
        "SELECT query FROM system.query_log WHERE user = %(user)s AND type IN (1, 3) "
        "AND event_time >= %(since)s AND event_time <= %(until)s ORDER BY event_time",
        {"user": user, "since": since, "until": until})
    out = []
    for (query,) in rows:
        others = {name for name in re.findall(r"\b(t_\w+)\.", query) if name not in dbs}
        if not others and "system.query_log" not in query:
            out.append(query)
    return out


class Phases:
    """Consecutive phases, each a window of server time with a second's gap on either side."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.windows: dict[str, tuple[datetime, datetime]] = {}
        self.start = _now(admin)

    def __call__(self, role: str) -> Any:
        phases = self

        class Window:
            def __enter__(self) -> None:
                time.sleep(1.1)
                phases.start = _now(phases.admin)

            def __exit__(self, *exc: object) -> None:
                phases.windows[role] = (phases.start, _now(phases.admin))
                time.sleep(1.1)

        return Window()


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIGHLAND_CLICKHOUSE_DATABASE": settings.clickhouse_database, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "highland", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _feed(agency: str, indicator: str, unit: str) -> list[bytes]:
    good = {"event_id": "p-1", "revision": 0, "agency": agency, "indicator": indicator, "value": 5.0, "unit": unit,
            "observed_at": "2019-06-01T00:00:00+08:00"}
    return [dumps(good), dumps({**good, "revision": 1, "value": 6.0}), dumps({**good, "event_id": "p-2"}),
            dumps({**good, "event_id": "bad-unit", "unit": MARKUP_UNIT}),
            dumps({**good, "event_id": "bad-agency", "agency": f"cq{ESCAPES}x"}),
            dumps({**good, "event_id": f"bad id {ESCAPES}[bold]"})]


@pytest.fixture(scope="module")
def run(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    unique = uuid.uuid4().hex[:8]
    db = f"t_priv_{unique}"
    settings = stack.model_copy(update={
        "clickhouse_database": db, "topic_events": f"t.{unique}.events", "topic_dlq": f"t.{unique}.dlq",
        "topic_alerts": f"t.{unique}.alerts", "consumer_group": f"t-{unique}", "alert_check_seconds": 1.0})
    from highland.topics import ensure_topics

    ensure_topics(settings)
    catalog = default_catalog()
    indicator = catalog.indicators[0]
    admin = _admin(settings)
    admin.execute("SYSTEM FLUSH LOGS")
    if not admin.execute("EXISTS TABLE system.query_log")[0][0]:
        pytest.fail("the stack's ClickHouse logs no queries: it was started from an older config "
                    "(`highland stack down` with the test stack's settings, then run again)")
    phase = Phases(admin)
    tmp = tmp_path_factory.mktemp("privileges")

    # An install as aa7b72c left it, upgraded in the schema phase: the later migrations' statements
    # (columns added, data moved) are needed on production databases that exist already.
    upgraded = settings.model_copy(update={"clickhouse_database": f"{db}_up"})
    restore_aa7b72c(connect(settings, database="default"), upgraded, upgraded.clickhouse_database)

    with phase("schema"):
        migrate(settings)
        sync_plan_tables(connect(settings), db, catalog)
        migrate(upgraded)

    with phase("worker"):
        os.environ.update({"HIGHLAND_AUDIT_SECONDS": "1", "HIGHLAND_AUDIT_GRACE_SECONDS": "0",
                           "HIGHLAND_AUDIT_CONFIRM_SECONDS": "0"})
        try:
            worker = WorkerProcess(settings, "a", tmp)
        finally:
            for key in ("HIGHLAND_AUDIT_SECONDS", "HIGHLAND_AUDIT_GRACE_SECONDS", "HIGHLAND_AUDIT_CONFIRM_SECONDS"):
                os.environ.pop(key)
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        for payload in _feed(indicator.agency, indicator.code, indicator.unit):
            producer.send(settings.topic_events, key=b"k", value=payload, headers=[SCHEMA_HEADER])
        producer.flush()
        producer.close()
        writer = connect(settings)
        try:
            wait_for(lambda: writer.execute(f"SELECT count() FROM {db}.events")[0][0] == 2  # p-1 once, newest revision
                     and writer.execute(f"SELECT count() FROM {db}.dead_letters")[0][0] >= 3
                     and writer.execute(f"SELECT count() FROM {db}.alerts")[0][0] >= 1,
                     120, "events, dead letters and an alert", worker.log)
        finally:
            worker.kill()
        # The self-check's repair of a state claiming more rows than its day has (ALTER ... DELETE),
        # as the worker's self-check runs it.
        writer.execute(f"INSERT INTO {db}.daily_series (indicator, region, day, version) VALUES",
                       [(indicator.code, "chongqing", datetime(2019, 6, 1).date(), 999)])
        audit.check(writer, db, catalog.plan.timezone, f"SELECT agency, event_id FROM {db}.events", {}, repair=True)

    with phase("operator"):
        issued = _cli(settings, "tokens", "issue", "--agency", indicator.agency)
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip()
        for args in (("dlq", "--json"), ("verify", "--repair")):
            assert _cli(settings, *args).returncode == 0, args
        dlq = _cli(settings, "dlq")

    # the gateway, as its own user (the local stack's highland_tokens): token look-ups, its use
    # recorded, an agency's own dead letters
    assert settings.clickhouse_token_reader_user
    with phase("tokens"):
        gateway = GatewayProcess(settings, tmp)
        try:
            good = json.loads(_feed(indicator.agency, indicator.code, indicator.unit)[0])
            for body in (good, {**good, "unit": MARKUP_UNIT}):
                gateway.request("POST", "/v1/events", json.dumps(body).encode(), auth(token))
            for path in ("/v1/dead-letters?limit=10", "/v1/whoami"):
                status, _answer = gateway.request("GET", path, None, auth(token))
                assert status == 200, path
            assert gateway.request("GET", "/v1/whoami", None, auth("hlt_not-a-token"))[0] == 401
        finally:
            gateway.stop()

    with phase("operator-2"):
        assert _cli(settings, "tokens", "revoke", "--agency", indicator.agency).returncode == 0

    with phase("reader"):
        reader = connect(settings, reader=True)
        q = Sql.for_catalog(db, catalog)
        end = datetime.now(UTC)
        window = TimeRange(end - timedelta(days=7), end)
        for board in definitions.all_dashboards(q):
            for p in board["panels"]:
                for target in p["targets"]:
                    reader.execute(expand(target["rawSql"], window, {"indicator": indicator.code}))
            for variable in board["templating"]["list"]:
                reader.execute(expand(variable["query"]["rawSql"], window))
        for rule in alerting.api_rules(q):
            reader.execute(rule["data"][0]["model"]["rawSql"])
        board_run = _cli(settings, "board", "--once")
        assert board_run.returncode == 0, board_run.stderr
        for args in (("progress",), ("progress", "--json"), ("alerts", "--json")):  # duty staff's reads
            assert _cli(settings, *args).returncode == 0, args

    statements: dict[str, list[str]] = {}
    for role, (since, until) in phase.windows.items():
        name = role.split("-")[0]
        user = {"reader": settings.clickhouse_reader_user,
                "tokens": settings.clickhouse_token_reader_user}.get(name) or settings.clickhouse_user
        served = (db, upgraded.clickhouse_database)
        logged = _logged(admin, user, since, until, (*served, *map(auth_database, served)))
        statements.setdefault(name, []).extend(re.sub(rf"\b{db}_up(?={AUTH_SUFFIX}\b|\b)", db, q) for q in logged)
    yield Run(db, statements, dlq.stdout, board_run.stdout)
    for served in (db, upgraded.clickhouse_database):
        admin.execute(f"DROP DATABASE IF EXISTS {served}")
        admin.execute(f"DROP DATABASE IF EXISTS {auth_database(served)}")


def _needs(run: Run, role: str) -> dict[tuple[str, str], str]:
    """Each privilege the role's statements need -> one statement needing it."""
    found: dict[tuple[str, str], str] = {}
    privileges.learn_views(run.statements["schema"], run.db)
    for sql in run.statements[role]:
        for need in privileges.needs(sql, run.db):
            found.setdefault(need, sql)
    return found


def test_every_role_was_recorded(run: Run):
    assert set(run.statements) == set(DEPLOY_USER)
    for role, statements in run.statements.items():
        assert statements, role
    assert any("CREATE TEMPORARY TABLE" in s for s in run.statements["worker"])
    assert any("agency_tokens" in s for s in run.statements["tokens"])
    assert any(f"INSERT INTO {run.db}.schema_migrations" in s for s in run.statements["schema"])


def test_every_statement_has_a_grant_in_deploy(run: Run):
    grants = privileges.granted(USERS_XML)
    missing = []
    for role, user in DEPLOY_USER.items():
        for need, sql in _needs(run, role).items():
            for wanted in _on_a_cluster(need):
                if not privileges.covers(grants[user], wanted):
                    statement = " ".join(sql.split())[:160]
                    missing.append(f"{role} ({user}) needs {wanted[0]} ON {wanted[1]} for: {statement}")
    assert not missing, "\n".join(sorted(set(missing)))


def test_deploy_grants_nothing_the_statements_do_not_need(run: Run):
    grants = privileges.granted(USERS_XML)
    for user in set(DEPLOY_USER.values()):
        needed: set[tuple[str, str]] = set(NOT_REACHED_HERE.get(user, ()))
        for role in (r for r, u in DEPLOY_USER.items() if u == user):
            for need in _needs(run, role):
                needed |= _on_a_cluster(need)
        needed = privileges.needed_grants(needed)
        needed_kinds = {(p, t.split(".")[0] + ".*") for p, t in needed}
        unused = {g for g in grants[user] if g not in needed and g not in needed_kinds}
        assert not unused, (user, sorted(unused))


def test_the_reader_and_the_token_reader_are_kept_to_their_tables(run: Run):
    grants = privileges.granted(USERS_XML)
    reader = grants["highland_reader"]
    assert not [g for g in reader if "token" in g[1] or g[1].endswith(".*")], reader
    assert not [g for g in reader if g[0] in ("SELECT(payload)", "SELECT(payload_encoding)")]
    gateway = grants["highland_tokens"]
    assert {t.removesuffix("_local") for _p, t in gateway} == {
        "highland_auth.agency_tokens", "highland_auth.agency_token_expiry", "highland_auth.agency_token_uses",
        "highland.dead_letters"}
    assert {t.removesuffix("_local") for p, t in gateway if p != "SELECT"} == {"highland_auth.agency_token_uses"}
    assert not any(p.startswith(("CREATE TEMPORARY", "URL", "REMOTE", "FILE", "SOURCES")) for p, _ in reader)


def test_every_grant_in_deploy_is_accepted_by_current_clickhouse(chdb_session: Any):
    # chdb cannot create users; a GRANT to one that doesn't exist is parsed and its level checked
    # first (e.g. "CREATE TEMPORARY TABLE cannot be granted on the database level", code 509), and
    # only then refused for the unknown user (code 511).
    queries = [q for qs in privileges.grant_queries(USERS_XML).values() for q in qs]
    assert queries
    for query in queries:
        with pytest.raises(Exception) as refused:
            chdb_session.query(f"{query} TO highland_grant_probe")
        assert "UNKNOWN_ROLE" in str(refused.value) or "Code: 511" in str(refused.value), (query, refused.value)


def test_a_bad_grant_is_refused_by_current_clickhouse(chdb_session: Any):
    with pytest.raises(Exception) as refused:
        chdb_session.query("GRANT CREATE TEMPORARY TABLE ON highland.* TO highland_grant_probe")
    assert "INVALID_GRANT" in str(refused.value)


def test_hostile_strings_from_dead_letters_print_literally(run: Run):
    out = run.dlq_output
    assert MARKUP_UNIT in out  # printed, not read as rich markup (which crashed on it)
    assert "\x1b" not in out and "\x07" not in out
    assert "\x1b" not in run.board_output

