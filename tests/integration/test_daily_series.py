"""The per-day series the writer keeps (sinks/daily_series.py) give exactly the numbers of the
definition: every event deduplicated at query time (``reference_actuals``) and the independent
Python model of the tests (``support.reference_actuals``) -- whatever revisions move, whatever a
dying or racing writer leaves behind."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.events import Accepted, validate
from highland.sinks import daily_series
from highland.sinks.client import connect
from highland.sinks.daily_series import (
    OBSERVATION_COLUMNS,
    OBSERVATIONS,
    RECOMPUTE,
    DayState,
    Observation,
    SeriesDay,
    read_states,
    rebuild,
    recompute,
    settle,
    stage_columns,
)
from highland.sinks.migrations import fill_observations_by_series
from highland.sinks.progress import Actual, query_actuals, reference_actuals
from highland.sinks.tables import OBSERVATIONS_0006, OBSERVATIONS_BY_SERIES
from highland.sinks.topology import SINGLE_NODE
from highland.sinks.writer import write_events

from highland.settings import Settings
from tests.conftest import ROOT
from tests.integration.support import Positioned, as_batch, dumps, event, worker_env
from tests.integration.support import reference_actuals as model_actuals

CATALOG = default_catalog()
TZ = CATALOG.plan.timezone
AS_OF = [date(2016, 12, 31), date(2017, 1, 1), date(2018, 6, 30), date(2019, 3, 1), date(2019, 12, 31),
         date(2020, 12, 31)]
DISTRICTS = ["yuzhong", "jiangbei", "wanzhou"]


def _moment(rng: random.Random) -> str:
    day = date(2016, 1, 1) + timedelta(days=rng.randrange(5 * 365))
    # Hours 0-23 in Chongqing time, some written in UTC: local days and years split mid-UTC-day.
    local = datetime(day.year, day.month, day.day, rng.randrange(24), tzinfo=UTC) - timedelta(hours=8)
    return local.isoformat() if rng.random() < 0.5 else local.astimezone().isoformat()


def _base(rng: random.Random, i: int) -> dict:
    kind = rng.choice(["flow", "level", "index"])
    if kind == "flow":
        return event(f"t-{i}", "cq_commerce", "ecommerce_turnover", round(rng.uniform(1, 50), 3), "亿元",
                     _moment(rng))
    if kind == "level":
        return event(f"p-{i}", "cq_comms_admin", "fiber_broadband_ports", round(rng.uniform(1, 90), 2), "万个",
                     _moment(rng), region=rng.choice(DISTRICTS))
    return event(f"x-{i}", "cq_economy_it", "internet_plus_index", round(rng.uniform(3, 6), 2), "index", _moment(rng))


def messy_feed(seed: int, n: int = 300) -> list[dict]:
    """Duplicates, revisions that change the value, the day, the year or the district, stale lower
    revisions, all in shuffled order."""
    rng = random.Random(seed)
    feed: list[dict] = []
    for i in range(n):
        e = _base(rng, i)
        feed.append(e)
        if rng.random() < 0.2:
            feed.append(e)
        if rng.random() < 0.4:
            moved = {**e, "revision": 3, "value": round(e["value"] * rng.uniform(0.5, 2), 3)}
            if rng.random() < 0.5:
                moved["observed_at"] = _moment(rng)
            if "region" in e and rng.random() < 0.5:
                moved["region"] = rng.choice(DISTRICTS)
            feed.append(moved)
            if rng.random() < 0.5:  # older than the correction, arriving after it
                feed.append({**e, "revision": 1, "value": e["value"] * 7})
    rng.shuffle(feed)
    return feed


def positioned(feed: list[dict]) -> list[Positioned]:
    out = []
    for offset, e in enumerate(feed):
        verdict = validate(dumps(e), CATALOG)
        assert isinstance(verdict, Accepted), verdict
        out.append(Positioned(verdict, 0, offset))
    return out


def write_in_batches(client: Any, db: str, items: list[Positioned], seed: int) -> None:
    rng = random.Random(seed)
    i = 0
    while i < len(items):
        size = rng.randint(1, 60)
        write_events(client, db, as_batch(items[i:i + size]), datetime.now(UTC), TZ)
        i += size


def values(found: dict[str, Actual]) -> dict[str, float]:
    return {code: a.value for code, a in found.items()}


def assert_same(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for code, value in want.items():
        assert got[code] == pytest.approx(value, rel=1e-9, abs=1e-9), code


def assert_exact(client: Any, db: str, feed: list[dict]) -> None:
    for as_of in AS_OF:
        fast = query_actuals(client, db, CATALOG, as_of)
        assert_same(values(fast), model_actuals(feed, CATALOG, as_of))
        slow = reference_actuals(client, db, CATALOG, as_of)
        assert_same(values(fast), values(slow))
        assert {c: a.last_observed for c, a in fast.items()} == {c: a.last_observed for c, a in slow.items()}


@pytest.fixture
def db(isolated: Settings) -> Iterator[tuple[Any, str]]:
    client = connect(isolated)
    yield client, isolated.clickhouse_database
    client.disconnect()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_moved_corrected_and_duplicated_events_give_the_numbers_of_the_definition(db: tuple[Any, str], seed: int):
    client, name = db
    feed = messy_feed(seed)
    write_in_batches(client, name, positioned(feed), seed)
    assert_exact(client, name, feed)


class DiesOnce:
    """A client that fails the first statement matching ``when``, as a worker killed there would."""

    def __init__(self, client: Any, when: Callable[[str], bool]) -> None:
        self.client, self.when, self.died = client, when, False

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if not self.died and self.when(sql):
            self.died = True
            raise ConnectionError("killed")
        return self.client.execute(sql, *args, **kwargs)


@pytest.mark.parametrize("step", ["events insert", "settling the days", "writing the settled states"])
def test_a_writer_dying_between_its_steps_is_repaired_by_the_redelivery(db: tuple[Any, str], step: str):
    client, name = db
    feed = messy_feed(11, n=120)
    items = positioned(feed)
    half = len(items) // 2
    write_events(client, name, as_batch(items[:half]), datetime.now(UTC), TZ)
    events_stored = False

    def target(sql: str) -> bool:
        nonlocal events_stored
        if sql.startswith(f"INSERT INTO {name}.events "):
            events_stored = True
            return step == "events insert"
        if step == "writing the settled states":
            return sql.startswith(f"INSERT INTO {name}.daily_series ")
        return events_stored  # the first statement after the events INSERT

    dying = DiesOnce(client, target)
    with pytest.raises(ConnectionError):
        write_events(dying, name, as_batch(items[half:]), datetime.now(UTC), TZ)
    assert dying.died
    write_events(client, name, as_batch(items[half:]), datetime.now(UTC), TZ)  # the batch, re-delivered
    assert_exact(client, name, feed)


class StaleReads:
    """A second writer that checked what was stored before the first one's insert landed (two
    workers overlapping in a rebalance): it sees nothing stored."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith("CREATE TEMPORARY TABLE _stored "):
            sql += " LIMIT 0"  # the stored revisions of the batch's keys, as read too early: none
        return self.client.execute(sql, *args, **kwargs)


def test_rows_written_twice_by_overlapping_writers_count_once(db: tuple[Any, str]):
    client, name = db
    feed = messy_feed(21, n=150)
    items = positioned(feed)
    first, rest = items[: len(items) // 2], items[len(items) // 2:]
    write_events(client, name, as_batch(first), datetime.now(UTC), TZ)
    write_events(StaleReads(client), name, as_batch(first), datetime.now(UTC), TZ)  # the same batch, again
    (copies,) = client.execute(f"SELECT count() - uniqExact(agency, event_id, revision) FROM {name}.events")[0]
    assert copies > 0, "the overlap should have stored rows twice"
    write_in_batches(client, name, rest, 21)  # later revisions supersede rows that exist twice
    assert_exact(client, name, feed)


def test_rebuilding_from_events_gives_the_same_series(db: tuple[Any, str]):
    client, name = db
    feed = messy_feed(31)
    write_in_batches(client, name, positioned(feed), 31)
    before = {d: query_actuals(client, name, CATALOG, d) for d in AS_OF}
    client.execute(f"TRUNCATE TABLE {name}.{OBSERVATIONS}")
    client.execute(f"TRUNCATE TABLE {name}.daily_series")
    assert query_actuals(client, name, CATALOG, AS_OF[-1]) == {}
    rebuild(client, name, TZ, chunks=3)
    for as_of, want in before.items():
        assert_same(values(query_actuals(client, name, CATALOG, as_of)), values(want))


def test_migration_0007_moves_an_installs_observations_once_and_keeps_its_numbers(db: tuple[Any, str]):
    """An install as migration 0006 left it (its observations in ``observations``), caught by a crash
    in the middle of the copy (the new table already holds rows): the step copies every row once,
    drops the old table, and the numbers -- including later batches' in-place updates -- stay exact.
    Run again, it changes nothing."""
    client, name = db
    feed = messy_feed(41)
    items = positioned(feed)
    half = len(items) // 2
    write_in_batches(client, name, items[:half], 41)
    [stored] = client.execute(f"SELECT count() FROM {name}.{OBSERVATIONS}")
    client.execute(OBSERVATIONS_0006.create(name))
    columns = ", ".join(OBSERVATION_COLUMNS)
    client.execute(f"INSERT INTO {name}.observations ({columns}) SELECT {columns} FROM {name}.{OBSERVATIONS}")

    for _ in range(2):
        fill_observations_by_series(client, name, SINGLE_NODE)
        assert client.execute(f"EXISTS TABLE {name}.observations") == [(0,)]
        assert client.execute(f"SELECT count() FROM {name}.{OBSERVATIONS}") == [stored]
    assert_exact(client, name, feed[:half])
    write_in_batches(client, name, items[half:], 42)
    assert_exact(client, name, feed)


def _verify(settings: Settings, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "highland", "verify", *extra,
                           *(arg for d in AS_OF for arg in ("--as-of", d.isoformat()))],
                          capture_output=True, text=True, env=worker_env(settings, "cli", tmp), cwd=ROOT, timeout=120)


def test_highland_verify_finds_a_wrong_series_day_and_repair_rebuilds_it(isolated: Settings, tmp_path: Path):
    client, name = connect(isolated), isolated.clickhouse_database
    feed = messy_feed(41, n=80)
    write_in_batches(client, name, positioned(feed), 41)
    ok = _verify(isolated, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 difference(s)" in ok.stdout
    # A series-day that disagrees with its events (as a lost recomputation would leave it).
    [(ind, reg, day, version)] = client.execute(
        f"SELECT indicator, region, day, max(version) FROM {name}.daily_series "
        "WHERE indicator = 'ecommerce_turnover' AND toYear(day) = 2020 GROUP BY indicator, region, day "
        "ORDER BY day LIMIT 1")
    client.execute(f"INSERT INTO {name}.daily_series (indicator, region, day, events, value_sum, close_value, "
                   "close_observed_at, version) VALUES",
                   [(ind, reg, day, 1, 1e6, 1e6, datetime(2020, 6, 1), version + 1)])
    bad = _verify(isolated, tmp_path)
    assert bad.returncode == 1 and "ecommerce_turnover" in bad.stdout
    repaired = _verify(isolated, tmp_path, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert_exact(client, name, feed)


# --- the per-day states under interleaved writers ------------------------------------------------------

DAY = SeriesDay("ecommerce_turnover", "chongqing", date(2019, 5, 1))


def obs(event_id: str, hour: int, value: float, revision: int = 0, sign: int = 1) -> Observation:
    observed_at = int(datetime(2019, 5, 1, hour, tzinfo=UTC).timestamp())
    return Observation(*DAY, observed_at, "cq_commerce", event_id, revision, value, sign)


def from_scratch(client: Any, name: str) -> DayState:
    [(_i, _r, _d, version, events, total, close, close_obs, rev, eid)] = client.execute(
        RECOMPUTE.format(db=name, observations=OBSERVATIONS,
                         where=f"indicator = '{DAY.indicator}' AND day = '{DAY.day}'"))
    return DayState(version, events, total, close, (int(close_obs.replace(tzinfo=UTC).timestamp()), rev, eid)
                    if events else ())


def begin(client: Any, db: str, rows: list[Observation]) -> None:
    """The writer's step 1 for rows made here: the writer derives its session's ``_obs`` from its
    batch in SQL; a test stages its rows there (each once: the look-up of stored rows expects
    distinct rows), then begins."""
    distinct = list(dict.fromkeys(rows))
    stage_columns(client, "_obs", OBSERVATIONS_BY_SERIES.structure(), [list(c) for c in zip(*distinct, strict=True)])
    daily_series.begin(client, db)


def begin_and_settle(client: Any, name: str, rows: list[Observation]) -> dict[str, int]:
    begin(client, name, rows)
    return settle(client, name)


def test_a_quiet_day_is_updated_by_its_changes_and_recomputed_when_its_close_is_withdrawn(db: tuple[Any, str]):
    client, name = db
    first = [obs("a", 1, 10.0), obs("b", 2, 20.0)]
    assert begin_and_settle(client, name, first) == {"applied": 1, "recomputed": 0}
    more = [obs("c", 3, 5.0), obs("a", 1, 10.0, sign=-1), obs("a", 4, 12.0, revision=1)]
    assert begin_and_settle(client, name, more) == {"applied": 1, "recomputed": 0}
    assert read_states(client, name, [DAY])[DAY] == from_scratch(client, name)
    assert read_states(client, name, [DAY])[DAY][:4] == (5, 3, 37.0, 12.0)
    # Withdrawing the day's closing observation: the next one is not in the state.
    withdraw = [obs("a", 4, 12.0, revision=1, sign=-1)]
    assert begin_and_settle(client, name, withdraw) == {"applied": 0, "recomputed": 1}
    assert read_states(client, name, [DAY])[DAY] == from_scratch(client, name)
    assert read_states(client, name, [DAY])[DAY][1:4] == (2, 25.0, 5.0)
    # The same rows again (a re-delivery): nothing is written twice, nothing changes.
    before = read_states(client, name, [DAY])[DAY]
    assert begin_and_settle(client, name, more + withdraw) == {"applied": 0, "recomputed": 0}
    assert read_states(client, name, [DAY])[DAY] == before


def test_a_day_another_writer_touched_in_between_is_recomputed_not_double_counted(db: tuple[Any, str],
                                                                                   isolated: Settings):
    client, name = db
    other = connect(isolated)  # another writer: its own connection
    begin_and_settle(client, name, [obs("a", 1, 10.0)])
    begin(client, name, [obs("b", 2, 20.0), obs("c", 3, 30.0)])
    recompute(other, name, [DAY])  # someone else's recomputation already includes my rows
    begin(other, name, [obs("d", 4, 40.0), obs("a", 1, 10.0, sign=-1)])
    assert settle(client, name) == {"applied": 0, "recomputed": 1}
    settle(other, name)
    other.disconnect()
    state = read_states(client, name, [DAY])[DAY]
    assert state == from_scratch(client, name)
    assert state[1:4] == (3, 90.0, 40.0)


def test_rows_another_writer_added_without_settling_are_not_hidden_by_an_update(db: tuple[Any, str],
                                                                                isolated: Settings):
    client, name = db
    begin_and_settle(client, name, [obs("a", 1, 10.0)])
    begin(client, name, [obs("b", 2, 20.0)])
    other = connect(isolated)
    begin(other, name, [obs("c", 3, 30.0)])  # another writer, dead before it settles
    other.disconnect()
    # The state still reflects the rows I counted, but the day has one row more than mine: applying
    # my row alone would give a state that claims all rows and misses c -- and c's re-delivery
    # would find its row stored and the state up to date.
    assert settle(client, name) == {"applied": 0, "recomputed": 1}
    state = read_states(client, name, [DAY])[DAY]
    assert state == from_scratch(client, name)
    assert state[:4] == (3, 3, 60.0, 30.0)


# --- two writers storing revisions of one observation at the same time --------------------------------

class HeldAfterSnapshot:
    """A writer's connection that, once it has read which revisions are stored (``_fresh``), waits
    for the other writer to have read too: both then write from snapshots that miss each other's
    revision -- what two workers (or writer processes) do when a revision's key sits on another
    partition than its predecessor's (another region or indicator, or another client's partitioner)."""

    def __init__(self, client: Any, barrier: threading.Barrier) -> None:
        self.client, self.barrier = client, barrier

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        result = self.client.execute(sql, *args, **kwargs)
        if sql.startswith("CREATE TEMPORARY TABLE _fresh "):
            self.barrier.wait(timeout=30)
        return result


def write_concurrently(settings: Settings, name: str, *batches: list[dict]) -> None:
    barrier = threading.Barrier(len(batches))
    clients = [connect(settings) for _ in batches]
    try:
        with ThreadPoolExecutor(len(batches)) as pool:
            done = [pool.submit(write_events, HeldAfterSnapshot(c, barrier), name, as_batch(positioned(b)),
                                datetime.now(UTC), TZ)
                    for c, b in zip(clients, batches, strict=True)]
            for future in done:
                future.result()
    finally:
        for c in clients:
            c.disconnect()


def test_two_writers_storing_two_corrections_of_one_flow_at_once_count_only_the_newest(db: tuple[Any, str],
                                                                                       isolated: Settings):
    """Revisions 100 -> 200 and 300 of one turnover figure, the last two written at the same time:
    the year's flow is 300 (CONTRACT §1: the highest revision replaces the others)."""
    client, name = db
    original = event("t-1", "cq_commerce", "ecommerce_turnover", 100, "亿元", "2019-05-01T10:00:00+08:00")
    write_events(client, name, as_batch(positioned([original])), datetime.now(UTC), TZ)
    write_concurrently(isolated, name, [{**original, "revision": 1, "value": 200}],
                       [{**original, "revision": 2, "value": 300}])
    feed = [original, {**original, "revision": 1, "value": 200}, {**original, "revision": 2, "value": 300}]
    assert query_actuals(client, name, CATALOG, date(2019, 12, 31))["ecommerce_turnover"].value == 300
    assert_exact(client, name, feed)


def test_a_level_moved_to_another_district_while_its_original_is_written_counts_once(db: tuple[Any, str],
                                                                                    isolated: Settings):
    """A district's port count, corrected to another district (another message key, so possibly
    another partition and writer) while the original is being written: the city total is the
    correction's 5,000 ports, not 6,000."""
    client, name = db
    original = event("p-1", "cq_comms_admin", "fiber_broadband_ports", 1000, "ports", "2019-05-01T10:00:00+08:00",
                     region="wanzhou")
    moved = {**original, "revision": 1, "value": 5000, "region": "yubei"}
    write_concurrently(isolated, name, [original], [moved])
    assert query_actuals(client, name, CATALOG, date(2019, 12, 31))["fiber_broadband_ports"].value == 5000
    assert_exact(client, name, [original, moved])


def test_a_correction_moved_to_another_indicator_and_year_while_the_next_one_is_written(db: tuple[Any, str],
                                                                                       isolated: Settings):
    """Three revisions of one event in three batches, the last two at once and each in another
    indicator's or year's series: only the newest counts, whichever writer finishes first."""
    client, name = db
    original = event("m-1", "cq_commerce", "ecommerce_turnover", 10, "亿元", "2018-12-31T23:30:00+08:00")
    first = {**original, "revision": 1, "indicator": "crossborder_ecommerce",
             "observed_at": "2019-01-01T00:30:00+08:00"}
    second = {**original, "revision": 2, "value": 40}
    write_events(client, name, as_batch(positioned([original])), datetime.now(UTC), TZ)
    write_concurrently(isolated, name, [second], [first])
    assert_exact(client, name, [original, first, second])
