"""One clock for people, whatever the server's: the same instants stored on a ClickHouse 18.16 server
running in UTC (the test stack's) and on a second one running in Asia/Shanghai (``<timezone>`` in its
config, as servers in China are often set) read back as the same Beijing times.

Both servers get the same known feed (tests/integration/test_dashboards_sql.py: events, dead
letters, alerts stored as aware instants). Then what a person reads is compared: `highland progress`,
`alerts`, `dlq` and `board --once` as processes, and every dashboard panel's SQL, macros expanded
(instants compared as instants: the plugin reads a plain DateTime in its server's zone).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from highland.catalog.loader import default_catalog
from highland.dashboards.macros import expand
from highland.sinks.client import connect
from highland.sinks.migrate import migrate
from highland.sinks.plan_tables import sync_plan_tables

from highland.settings import Settings
from highland.stack import clickhouse_server, local
from tests.conftest import ROOT
from tests.integration.support import TZ
from tests.integration.test_dashboards_sql import (
    NOW,
    RANGES,
    alert_rows,
    all_targets,
    dead_letter_rows,
    insert_known_feed,
)

pytestmark = pytest.mark.integration
CATALOG = default_catalog()
SHANGHAI = "Asia/Shanghai"
AS_OF = "2020-12-31"


@pytest.fixture(scope="module")
def shanghai_server(stack: Settings) -> Iterator[Settings]:
    """A second ClickHouse 18.16 beside the stack's, in Asia/Shanghai, on the stack's ports + 5."""
    settings = stack.model_copy(update={
        "state_dir": stack.state_dir / "server-in-shanghai",
        "clickhouse_port": stack.clickhouse_port + 5, "clickhouse_http_port": stack.clickhouse_http_port + 5})
    # Its reader's list of databases is its own (sinks/reader_access.py).
    settings = settings.model_copy(update={
        "clickhouse_reader_databases_file": clickhouse_server.reader_databases_file(settings)})
    admin = local.ensure_secrets(stack)["HIGHLAND_CLICKHOUSE_ADMIN_PASSWORD"]
    started = clickhouse_server.start(settings, admin, timezone=SHANGHAI)
    yield settings
    if started:
        clickhouse_server.service(settings).stop()


def with_feed(settings: Settings) -> Settings:
    """A migrated database of this module on ``settings``' server, the known feed and plan in it."""
    mine = settings.model_copy(update={"clickhouse_database": f"t_tz_{uuid.uuid4().hex[:8]}"})
    migrate(mine)
    writer = connect(mine)
    insert_known_feed(writer, mine.clickhouse_database, CATALOG)
    sync_plan_tables(writer, mine.clickhouse_database, CATALOG)  # after the feed: baselines taken from it
    return mine


@pytest.fixture(scope="module")
def servers(stack: Settings, shanghai_server: Settings) -> Iterator[dict[str, Settings]]:
    found = {"UTC": with_feed(stack), SHANGHAI: with_feed(shanghai_server)}
    for zone, settings in found.items():
        assert connect(settings).execute("SELECT timezone()")[0][0] in {zone, f"Etc/{zone}"}
    yield found
    for settings in found.values():
        connect(settings, database="default").execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")


def highland(settings: Settings, *args: str) -> str:
    """A `highland` command in Chinese at 80 columns, on ``settings``' server and database."""
    env = {**_base_env(), "HIGHLAND_CLICKHOUSE_PORT": str(settings.clickhouse_port),
           "HIGHLAND_CLICKHOUSE_DATABASE": settings.clickhouse_database, "HIGHLAND_LANG": "zh", "COLUMNS": "80",
           "HIGHLAND_CLICKHOUSE_PASSWORD": settings.clickhouse_password.get_secret_value(),
           "HIGHLAND_CLICKHOUSE_READER_PASSWORD": settings.clickhouse_reader_password.get_secret_value()}
    done = subprocess.run([sys.executable, "-m", "highland", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HIGHLAND_CLICKHOUSE")}


def test_people_read_the_same_beijing_times_from_a_server_in_utc_and_one_in_shanghai(
        servers: dict[str, Settings]):
    reads: dict[str, dict[str, str]] = {}
    for zone, settings in servers.items():
        reads[zone] = {
            "progress": highland(settings, "progress", "--as-of", AS_OF),
            "alerts": highland(settings, "alerts"),
            "dlq": highland(settings, "dlq"),
            # the refresh time is the reader's clock, not the data's
            "board": re.sub(r"刷新于 \d\d:\d\d:\d\d", "刷新于 —",
                            highland(settings, "board", "--once", "--as-of", AS_OF)),
        }
    assert reads["UTC"] == reads[SHANGHAI]

    shown = reads["UTC"]
    for _aid, _kind, _ind, _old, _new, at in alert_rows():
        assert f"{at.astimezone(TZ):%Y-%m-%d %H:%M}" in shown["alerts"], shown["alerts"]
    recent = dead_letter_rows()[0][3]
    assert f"{recent.astimezone(TZ):%Y-%m-%d %H:%M}" in shown["dlq"], shown["dlq"]
    assert "北京时间" in shown["alerts"] and "北京时间" in shown["dlq"] and "北京时间" in shown["board"]
    # telecom_business_volume last reported 2020-06-01 08:00 in Beijing (00:00 UTC) before 2020-12-31: stopped
    # (its 2020-12-31T20:00Z report is 2021 in Chongqing).
    assert re.search(r"电信业务总量 .*2020-06-01 停报", shown["progress"]), shown["progress"]
    assert "!2020-06-01" in shown["board"], shown["board"]


def instants(meta: list[tuple[str, str]], rows: list[tuple[Any, ...]], server_tz: ZoneInfo) -> list[dict[str, Any]]:
    """Rows with every time as the instant it names (UTC), as Grafana's plugin reads it: a DateTime in
    the zone its type names, else in the server's. Ages counted from now() are left out (the two
    servers are asked seconds apart)."""
    def instant(value: Any) -> Any:
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=server_tz)).astimezone(UTC)
        return value
    return [{name: instant(v) for (name, _), v in zip(meta, row, strict=True) if name != "seconds_since"}
            for row in rows]


def test_every_dashboard_query_gives_the_same_instants_on_both_servers(servers: dict[str, Settings]):
    results: dict[str, list[tuple[str, Any, list[dict[str, Any]]]]] = {}
    for zone, settings in servers.items():
        reader = connect(settings, reader=True)
        server_tz = ZoneInfo(reader.execute("SELECT timezone()")[0][0])
        results[zone] = []
        for uid, target in all_targets(settings.clickhouse_database, CATALOG):
            sql = expand(target["rawSql"], RANGES[uid], {"indicator": "telecom_business_volume"})
            rows, meta = reader.execute(sql, with_column_types=True)
            results[zone].append((uid, target.get("refId"), instants(meta, rows, server_tz)))
    utc, shanghai = results["UTC"], results[SHANGHAI]
    assert len(utc) == len(shanghai) > 10
    for (uid, ref, a), (_, _, b) in zip(utc, shanghai, strict=True):
        assert a == b, (uid, ref, a[:3], b[:3])
    # A stopped feed says since when, on the overview as in `highland progress`: telecom_business_volume's
    # last report before 2020-12-31 is 2020-06-01 (08:00 in Beijing), more than its 31-day cadence ago.
    overview = next(rows for uid, _, rows in utc if uid == "highland-overview" and rows and "stale_since" in rows[0])
    by_code = {row["indicator"]: row for row in overview}
    assert by_code["telecom_business_volume"]["stale_since"] == date(2020, 6, 1)
    assert by_code["internet_plus_index"]["stale_since"] is None  # yearly cadence: 2020-06-01 is recent enough
    assert by_code["telecom_business_volume"]["last_observed"] == datetime(2020, 6, 1, tzinfo=UTC)
    # Days are Chongqing's days: the alerts' daily bars start at midnight in Beijing.
    per_day = next(rows for _, _, rows in utc if rows and "alerts_count" in rows[0])
    midnight = (NOW - timedelta(days=1)).astimezone(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    assert midnight in {row["time"] for row in per_day}
