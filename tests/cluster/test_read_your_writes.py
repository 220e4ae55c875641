"""The writer's premise on a replicated cluster, whatever replica a read reaches: a read that starts
after an INSERT returned sees that INSERT's rows -- the writer's own and another writer's
(sinks/writer.py; docs/streams.md, "On a cluster: reading one's own writes").

Replicas are made to lag on purpose, with ``SYSTEM STOP FETCHES`` (a replica keeps pulling its shard's
log but fetches no part), so what a test sees does not depend on the machine's load. Every replica of
a shard stops fetching, because which one the initiator writes to is its choice (the first in the
cluster's config that has had no recent errors: earlier fault tests leave some)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.events import Accepted, validate
from highland.sinks import audit
from highland.sinks.client import connect
from highland.sinks.cluster import data_table
from highland.sinks.poison import retryable
from highland.sinks.replicas import ReplicaBehind
from highland.sinks.tables import DAILY_SERIES, EVENT_WINDOWS_1M, EVENTS, OBSERVATIONS_BY_SERIES
from highland.sinks.topology import Topology
from highland.sinks.writer import BatchColumns, WriteSession, write_events

from highland.settings import Settings
from highland.stack import cluster
from tests.cluster.conftest import admin_password
from tests.integration.support import wait_for

pytestmark = pytest.mark.integration

CATALOG = default_catalog()
TZ = CATALOG.plan.timezone
WRITTEN = (EVENTS, OBSERVATIONS_BY_SERIES, DAILY_SERIES)


@contextmanager
def not_fetching(settings: Settings, servers: list[cluster.Server]) -> Iterator[None]:
    """``servers`` pull their shards' logs but fetch no part of the written tables until the block ends
    (a server killed meanwhile starts again fetching)."""
    db = settings.clickhouse_database

    def each(verb: str) -> None:
        for srv in servers:
            if srv.service.pid() is None:
                continue
            on_server = connect(cluster.server_settings(settings, srv))
            for table in WRITTEN:
                on_server.execute(f"SYSTEM {verb} FETCHES {db}.{data_table(table)}")

    each("STOP")
    try:
        yield
    finally:
        each("START")


def rows_on(settings: Settings, srv: cluster.Server) -> int:
    [(rows,)] = connect(cluster.server_settings(settings, srv)).execute(
        f"SELECT count() FROM {settings.clickhouse_database}.events_local")
    return int(rows)


def events(revision: int, keys: range) -> BatchColumns:
    """Revision ``revision`` of observations ``keys``: revision 1 moves each to another region."""
    accepted = []
    for n in keys:
        indicator = CATALOG.indicator("fiber_broadband_ports")
        verdict = validate(json.dumps({
            "event_id": f"ryw-{n}", "revision": revision, "agency": indicator.agency, "indicator": indicator.code,
            "region": "wanzhou" if revision == 0 else "yubei", "value": 1000 + revision, "unit": "ports",
            "observed_at": "2019-06-01T09:00:00+08:00"}).encode(), CATALOG)
        assert isinstance(verdict, Accepted), verdict
        accepted.append(verdict)
    return BatchColumns.of_events(accepted, [0] * len(accepted), list(keys))


def insert(client: Any, db: str, batch: BatchColumns) -> None:
    """``batch`` straight into ``events`` through the Distributed table (no writer)."""
    rows = [(*row[:9], 1_600_000_000, *row[9:]) for row in zip(*batch.columns, strict=True)]
    client.execute(f"INSERT INTO {db}.events ({', '.join(EVENTS.names)}) VALUES", rows)


def all_keys(settings: Settings) -> audit.Finding:
    """The self-check's comparison (no repair) over every stored key, once every replica caught up
    (made sure of here, by the test itself, whatever the code under test does)."""
    for srv in cluster.servers(settings):
        on_server = connect(cluster.server_settings(settings, srv))
        for table in WRITTEN:
            on_server.execute(f"SYSTEM SYNC REPLICA {settings.clickhouse_database}.{data_table(table)}")
    return audit.check(connect(settings), settings.clickhouse_database, TZ,
                       f"SELECT DISTINCT agency, event_id FROM {settings.clickhouse_database}.events", {},
                       repair=False, topology=Topology.of(settings.model_copy(
                           update={"clickhouse_replica_wait_seconds": 120.0})))


@pytest.mark.cluster_ci
def test_a_writing_sessions_temporary_tables_read_the_replica_its_inserts_went_to(on_cluster: Settings):
    """The writer reads through ``CREATE TEMPORARY TABLE ... AS SELECT``, which 18.16 runs with the
    session's settings, not the query's: the replica routing of sinks/client.py must be the session's
    own (``Topology.open_session``), so that a read goes to the replica the INSERT went to. The
    control, a session whose settings are only sent with each query, reads replicas at random, which
    fetch nothing here, and misses rows. The sessions go through an initiator of their own (shard 2's
    first server), whose connections have failed nowhere: every ``load_balancing`` mode prefers the
    replica with fewer recent errors, so after a fault test the clients' initiator reads and writes
    one replica of a shard even at random, and the control would read every write. (An initiator
    writes its own shard locally whatever the settings, and the control reads it locally too.)"""
    db, rounds = on_cluster.clickhouse_database, 30
    topology = Topology.of(on_cluster)
    fresh = cluster.server_settings(on_cluster, cluster.server(on_cluster, 2, 1))

    def missed(client: Any, base: int) -> int:
        misses = 0
        for n in range(rounds):
            keys = range(base + 20 * n, base + 20 * n + 20)
            insert(client, db, events(0, keys))
            client.execute("DROP TEMPORARY TABLE IF EXISTS _seen")
            client.execute(f"CREATE TEMPORARY TABLE _seen ENGINE = Memory AS SELECT event_id FROM {db}.events "
                           f"WHERE event_id IN ({', '.join(repr(f'ryw-{k}') for k in keys)})")
            [(seen,)] = client.execute("SELECT count() FROM _seen")
            misses += seen != len(keys)
        return misses

    with not_fetching(on_cluster, cluster.servers(on_cluster)):
        assert missed(connect(fresh), 0) > 0, "control: the session's temporary tables read every write"
        opened = connect(fresh)
        topology.open_session(opened)
        assert missed(opened, 10_000) == 0


def test_awaiting_the_replicas_returns_only_once_every_replica_holds_what_returned(on_cluster: Settings):
    """``Topology.await_replicas``: while the replicas fetch nothing it gives up within its bound with
    an error the worker retries; once they fetch, it returns, and every replica holds every row."""
    db = on_cluster.clickhouse_database
    topology = Topology.of(on_cluster.model_copy(update={"clickhouse_replica_wait_seconds": 3.0}))
    client = connect(on_cluster)
    with not_fetching(on_cluster, cluster.servers(on_cluster)):
        insert(client, db, events(0, range(40)))
        started = time.monotonic()
        with pytest.raises(ReplicaBehind) as behind:
            topology.await_replicas(client, db, (EVENTS,))
        assert retryable(behind.value)
        assert time.monotonic() - started < 30
    Topology.of(on_cluster).await_replicas(client, db, (EVENTS,))  # the default bound: 30 s
    counts = {srv.name: rows_on(on_cluster, srv) for srv in cluster.servers(on_cluster)}
    for shard in (1, 2):
        assert counts[f"clickhouse-{shard}-1"] == counts[f"clickhouse-{shard}-2"], counts
    assert counts["clickhouse-1-1"] + counts["clickhouse-2-1"] == 40, counts


def test_a_writer_whose_reads_reach_a_replica_behind_waits_and_derives_every_row(on_cluster: Settings):
    """Writer A's INSERT of revision 0 of 40 observations returned (A is between its INSERT and its
    read); the replica of shard 2 that holds A's part is then killed (SIGKILL) before its partner
    fetched it. Writer B stores revision 1 of each (moving it to another region); its INSERT and reads
    reach the partner, which lacks revision 0. B's read starts last, so B must write every row the two
    revisions imply (sinks/writer.py) -- with a read that misses revision 0 it would write only
    revision 1's +1 row. So B's write fails as the infrastructure's and is retried by the worker's
    rule until the killed replica is back and its partner caught up; then every row is there."""
    settings = on_cluster.model_copy(update={"clickhouse_replica_wait_seconds": 3.0})
    db, topology = settings.clickhouse_database, Topology.of(settings)
    shard_2 = [cluster.server(settings, 2, 1), cluster.server(settings, 2, 2)]
    with not_fetching(settings, shard_2):
        insert(connect(settings), db, events(0, range(40)))  # writer A's INSERT, through the initiator
        [first] = [srv for srv in shard_2 if rows_on(settings, srv)]  # the one written; its partner has none
        pid = first.service.pid()
        assert pid is not None
        subprocess.run(["kill", "-9", str(pid)], check=True)
        wait_for(lambda: first.service.pid() is None, 10, f"{first.name} to die")

        attempts = 1
        try:
            write_events(connect(settings), db, events(1, range(40)), datetime.now(UTC), TZ, topology)
            stored_while_behind = True
        except Exception as exc:  # the worker's one rule decides, as in streams.app.retrying
            assert retryable(exc), exc
            stored_while_behind = False
    cluster.start(settings, admin_password(settings))

    deadline = time.monotonic() + 240
    while not stored_while_behind:
        attempts += 1
        try:
            write_events(connect(settings), db, events(1, range(40)), datetime.now(UTC), TZ, topology)
            break
        except Exception as exc:  # the worker's one rule decides, as in streams.app.retrying
            if not retryable(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    print(f"\nREAD-YOUR-WRITES REPORT writer B stored its batch after {attempts} attempt(s); "
          f"the first while the partner was behind: {stored_while_behind}")
    finding = all_keys(settings)
    assert finding.keys == 40 and finding.clean, finding


def written_until_stored(settings: Settings, batch: BatchColumns, received_at: datetime) -> int:
    """Write ``batch`` as the worker does: again after every failure its one retry rule retries, until
    stored (within a bound). Returns the attempts it took."""
    deadline, attempts = time.monotonic() + 240, 0
    while True:
        attempts += 1
        try:
            write_events(connect(settings), settings.clickhouse_database, batch, received_at, TZ,
                         Topology.of(settings))
            return attempts
        except Exception as exc:  # the worker's one rule decides, as in streams.app.retrying
            if not retryable(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_a_batch_delivered_again_while_its_first_copy_sits_on_a_replica_behind_is_stored_once(
        on_cluster: Settings):
    """A worker stored revision 0 of 40 observations in ``events`` and died before its next step (the
    INSERT returned: the shard-2 replica written holds the part, its partner has not fetched it); the
    written replica is then killed (SIGKILL), so every read of shard 2 reaches the partner. The batch
    is delivered again. The writer's first read (``_stored``, what is already stored) must not take
    the partner's answer for the truth: with it, the stored revisions look fresh and a second copy goes
    into ``events`` -- and into the live windows, which count every row the INSERT adds. So the
    re-delivery fails as the infrastructure's until the killed replica is back and its partner caught
    up; then ``events`` holds each (agency, event_id, revision) once and the windows count each
    arrival once."""
    settings = on_cluster.model_copy(update={"clickhouse_replica_wait_seconds": 3.0})
    db, topology = settings.clickhouse_database, Topology.of(settings)
    batch = events(0, range(40))
    first_delivery, again = datetime(2026, 11, 30, 9, 0, tzinfo=UTC), datetime(2026, 11, 30, 9, 5, tzinfo=UTC)
    shard_2 = [cluster.server(settings, 2, 1), cluster.server(settings, 2, 2)]
    with not_fetching(settings, shard_2):
        dying = WriteSession(connect(settings), db, TZ, topology)  # the worker that dies after its INSERT
        dying.stage(batch)
        dying.deduplicate()
        dying.insert_events(first_delivery)
        [written] = [srv for srv in shard_2 if rows_on(settings, srv)]  # its partner has none
        pid = written.service.pid()
        assert pid is not None
        subprocess.run(["kill", "-9", str(pid)], check=True)
        wait_for(lambda: written.service.pid() is None, 10, f"{written.name} to die")
        try:
            write_events(connect(settings), db, batch, again, TZ, topology)
            stored_while_behind = True
        except Exception as exc:  # the worker's one rule decides, as in streams.app.retrying
            assert retryable(exc), exc
            stored_while_behind = False
    cluster.start(settings, admin_password(settings))
    attempts = 1 + (0 if stored_while_behind else written_until_stored(settings, batch, again))
    print(f"\nREAD-YOUR-WRITES REPORT the re-delivered batch was stored after {attempts} attempt(s); "
          f"the first while the partner was behind: {stored_while_behind}")

    finding = all_keys(settings)  # every replica caught up with the written tables first
    for srv in cluster.servers(settings):
        connect(cluster.server_settings(settings, srv)).execute(
            f"SYSTEM SYNC REPLICA {db}.{data_table(EVENT_WINDOWS_1M)}")
    client = connect(settings)
    copies = client.execute(f"SELECT agency, event_id, revision, count() AS copies FROM {db}.events "
                            "GROUP BY agency, event_id, revision HAVING copies > 1")
    [(rows,)] = client.execute(f"SELECT count() FROM {db}.events")
    [(arrivals,)] = client.execute(f"SELECT sum(events) FROM {db}.{EVENT_WINDOWS_1M.name}")
    assert (copies, rows, arrivals) == ([], 40, 40)
    assert finding.keys == 40 and finding.clean, finding
