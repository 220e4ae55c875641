"""The important guarantees on a replicated cluster (2 shards x 2 replicas, ZooKeeper, three Kafka
brokers): reading one's own writes through the Distributed tables, the contract's numbers from a feed
with duplicates and moving revisions stored by two workers, `highland verify` finding nothing, and
the same after a replica killed with SIGKILL, ZooKeeper stopped, or a whole shard down, mid-write.
Each fault test prints a FAULT REPORT line (lost, doubled, seconds to resume; docs/benchmarks.md)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from clickhouse_driver.errors import ServerException
from highland.sinks.client import connect
from highland.sinks.migrate import load_migrations, migrate

from highland.settings import Settings
from highland.stack import cluster
from tests.cluster.conftest import admin_password, drop_database, of_its_own, restart_everything
from tests.conftest import ROOT
from tests.integration import test_exactness as exactness
from tests.integration.support import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration


def eight_partitions(settings: Settings) -> Settings:
    settings = settings.model_copy(update={"topic_events": settings.topic_events + "8",
                                           "topic_partitions": exactness.PARTITIONS,
                                           "worker_batch_size": exactness.BATCH_SIZE, "alert_check_seconds": 2.0})
    exactness.ensure_topics(settings, [settings.topic_events])
    return settings


def verify_cli(settings: Settings, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "highland", "verify"], env=worker_env(settings, "verify", tmp),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def stored_copies(settings: Settings) -> tuple[int, int]:
    """Rows of events and distinct (agency, event_id, revision) among them, over every shard."""
    [(rows, distinct)] = connect(settings).execute(
        f"SELECT count(), uniqExact(agency, event_id, revision) FROM {settings.clickhouse_database}.events")
    return rows, distinct


def lost_keys(settings: Settings, feed: exactness.Feed) -> int:
    """Observations whose highest revision sent is not the highest stored."""
    sent: dict[tuple[str, str], int] = {}
    for record in feed.records:
        e = record.event
        key = (e["agency"], e["event_id"])
        sent[key] = max(sent.get(key, -1), e["revision"])
    stored = dict(((a, i), r) for a, i, r in connect(settings).execute(
        f"SELECT agency, event_id, max(revision) FROM {settings.clickhouse_database}.events GROUP BY agency, event_id"))
    return sum(stored.get(key) != top for key, top in sent.items())


# --- the writer's premise ------------------------------------------------------------------------

def test_a_session_reads_its_own_writes_through_the_distributed_tables(on_cluster: Settings):
    """sinks/writer.py reads what ``events`` holds right after its INSERT returned. Through a
    Distributed table with internal replication, that INSERT is by default only queued on the
    initiator, and a read may go to a replica that has not fetched the part yet. The connections
    Highland opens on a cluster (sinks/client.py) must see every row of every INSERT at once; the
    control, a plain session, shows the problem is real on this cluster."""
    db, rounds = on_cluster.clickhouse_database, 40

    def stale_reads(client: object, base: int) -> int:
        stale = 0
        for n in range(rounds):
            rows = [("ryw", f"e{base + n}-{k}", 0, "internet_plus_index", "chongqing", 1.0, "u", 1.0,
                     1_600_000_000, 1_600_000_000, 0, k) for k in range(20)]
            client.execute(f"INSERT INTO {db}.events (agency, event_id, revision, indicator, region, value, unit, "  # type: ignore[attr-defined]
                           "raw_value, observed_at, received_at, kafka_partition, kafka_offset) VALUES", rows)
            [(seen,)] = client.execute(  # type: ignore[attr-defined]
                f"SELECT count() FROM {db}.events WHERE agency = 'ryw' AND event_id LIKE 'e{base + n}-%'")
            stale += seen != len(rows)
        return stale

    plain = connect(on_cluster.model_copy(update={"clickhouse_cluster": None}))
    assert stale_reads(plain, 0) > 0, "control: a plain session read all its writes at once"
    assert stale_reads(connect(on_cluster), 1000) == 0


# --- exactness and verify ----------------------------------------------------------------------

@pytest.mark.cluster_ci
def test_two_workers_store_a_feed_with_duplicates_and_moving_revisions_exactly_and_verify_agrees(
        on_cluster: Settings, tmp_path):
    """test_exactness's scenario (two producer clients partitioning differently, duplicates, revisions
    moving observations, two workers, one killed with SIGKILL and restarted) on the cluster; then
    `highland verify` finds no difference."""
    settings = eight_partitions(on_cluster)
    exactness.test_two_clients_two_workers_and_a_kill_give_the_contract_numbers(settings, tmp_path, False)
    done = verify_cli(settings, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --- faults mid-write ----------------------------------------------------------------------------

def run_through(settings: Settings, tmp: Path, name: str, fault: Callable[[], None],
                recover: Callable[[], None], seed: int, down_s: float = 8.0) -> dict[str, object]:
    """One worker stores a feed; ``fault`` strikes after a third of it, the next third is sent while it
    lasts, ``recover`` ends it after ``down_s``; then the rest. Numbers, verify, copies are checked."""
    feed, model = exactness.feed_for(seed=seed, long_run=False)
    clients = exactness.TwoClients(settings)
    run = exactness.Run(name, feed, clients.sent)
    worker = WorkerProcess(settings, "w", tmp)
    try:
        wait_for(lambda: exactness.owned(worker, settings.topic_events) == set(range(exactness.PARTITIONS)), 120,
                 "the worker to own every partition", worker.log)
        third = len(feed.chunks) // 3
        for chunk in feed.chunks[:third]:
            clients.send(chunk)
            time.sleep(0.3)
        fault()
        struck = time.monotonic()
        for chunk in feed.chunks[third:2 * third]:
            clients.send(chunk)
        time.sleep(max(0.0, down_s - (time.monotonic() - struck)))
        recover()
        recovered = time.monotonic()
        for chunk in feed.chunks[2 * third:]:
            clients.send(chunk)
        clients.close()
        wait_for(lambda: exactness.all_committed(settings, clients.sent), 240,
                 "the worker to commit every record after the fault", worker.log)
        resumed_s = time.monotonic() - recovered
        exactness.settle_and_check(settings, run, model, [worker], tmp)
    finally:
        worker.kill(signal.SIGTERM)
    rows, distinct = stored_copies(settings)
    line = {"test": name, "records": len(feed.records), "lost": lost_keys(settings, feed),
            "doubled_rows": rows - distinct, "fault_s": round(recovered - struck, 1),
            "resume_s_after_recovery": round(resumed_s, 1), "worker_log_errors": worker.log(200_000).count("Error")}
    print("\nFAULT REPORT", json.dumps(line))
    assert line["lost"] == 0, line
    done = verify_cli(settings, tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return line


def _kill(srv: cluster.Server) -> None:
    pid = srv.service.pid()
    assert pid is not None, f"{srv.name} is not running"
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: srv.service.pid() is None, 10, f"{srv.name} to die")


@pytest.mark.cluster_ci
def test_a_replica_killed_mid_write_loses_and_doubles_nothing(on_cluster: Settings, tmp_path):
    """Shard 2's first replica (the one Highland's sessions write to) is killed with SIGKILL while the
    worker writes; writes go to the other replica; it is restarted and catches up."""
    settings = eight_partitions(on_cluster)
    victim = cluster.server(settings, shard=2, replica=1)
    run_through(settings, tmp_path, "cluster_replica_sigkill", lambda: _kill(victim),
                lambda: restart_everything(settings), seed=1701)


def test_zookeeper_stopped_mid_write_makes_workers_wait_and_resume(on_cluster: Settings, tmp_path):
    """ZooKeeper stops: every replicated table turns read-only (inserts fail with code 242), the worker
    keeps retrying its batch; ZooKeeper comes back, the tables turn writable, nothing is lost or doubled."""
    settings = eight_partitions(on_cluster)
    zookeeper = cluster.zookeeper_service(settings)
    run_through(settings, tmp_path, "cluster_zookeeper_stopped", lambda: zookeeper.stop(grace_s=10.0),
                lambda: cluster.start_zookeeper(settings), seed=1702, down_s=15.0)


def test_a_whole_shard_down_mid_write_and_back(on_cluster: Settings, tmp_path):
    """Both replicas of shard 2 killed: inserts touching that shard fail, the worker waits; the shard
    comes back and everything is stored once."""
    settings = eight_partitions(on_cluster)
    shard = [cluster.server(settings, 2, r) for r in (1, 2)]

    def down() -> None:
        for srv in shard:
            _kill(srv)

    def back() -> None:
        cluster.start(settings, admin_password(settings))

    run_through(settings, tmp_path, "cluster_shard_down", down, back, seed=1703, down_s=15.0)


# --- migration from today's schema --------------------------------------------------------------

GOLDEN = ROOT / "tests" / "fixtures" / "ddl_aa7b72c.json"  # what `migrate` ran at aa7b72c (the last
# release before the schema was described once), for one server and for a cluster


def create_todays_schema(settings: Settings) -> None:
    """The cluster schema as aa7b72c's ``migrate`` created it (versions 1-7), on this test's database."""
    golden = json.loads(GOLDEN.read_text())
    db, client = settings.clickhouse_database, connect(settings, database="default")
    for sql in golden["migrate_cluster"]:
        sql = re.sub(rf"\b{golden['database']}\b", db, sql.replace(golden["cluster"], cluster.NAME))
        if sql.startswith(("CREATE", "DROP")):
            client.execute(sql)
    names = {m.version: m.name for m in load_migrations()}
    client.execute(f"INSERT INTO {db}.schema_migrations (version, name) VALUES", [(v, names[v]) for v in range(1, 8)])


@pytest.fixture
def todays_cluster(cluster_stack: Settings) -> Iterator[Settings]:
    settings = of_its_own(cluster_stack)
    create_todays_schema(settings)
    yield settings
    drop_database(settings)


def test_a_cluster_with_todays_schema_is_migrated_keeping_its_rows_and_then_stores_a_feed_exactly(
        todays_cluster: Settings, tmp_path):
    """A database created ON CLUSTER by aa7b72c (versions 1-7) holding dead letters: today's
    Distributed observations_by_series refuses the writer's rows on 18.16; `migrate` applies 0008 and
    0009 on every server, the dead letters stay, and then a worker stores a feed exactly."""
    settings, db = todays_cluster, todays_cluster.clickhouse_database
    client = connect(settings)
    letters = [(0, n, "unknown_indicator", "d", "cq_comms_admin", "http", "", datetime(2020, 1, 1), "{}", "utf-8")
               for n in range(50)]
    client.execute(f"INSERT INTO {db}.dead_letters (dlq_partition, dlq_offset, reason, detail, agency, source, "
                   "origin, received_at, payload, payload_encoding) VALUES", letters)
    observation = [("internet_plus_index", "chongqing", date(2020, 1, 1), datetime(2020, 1, 1), "a", "e", 0, 1.0, 1)]
    columns = "indicator, region, day, observed_at, agency, event_id, revision, value, sign"
    with pytest.raises(ServerException, match="MATERIALIZED"):
        client.execute(f"INSERT INTO {db}.observations_by_series ({columns}) VALUES", observation)

    assert migrate(settings) == ["0008_token_lifecycle", "0009_distributed_computed_columns", "0010_token_database"]

    assert client.execute(f"SELECT count() FROM {db}.dead_letters") == [(len(letters),)]
    tokens = {"agency_tokens", "agency_token_expiry", "agency_token_uses"}
    for srv in cluster.servers(settings):
        on_server = connect(cluster.server_settings(settings, srv))
        assert "observations_by_series" in {name for (name,) in on_server.execute(f"SHOW TABLES FROM {db}")}
        assert not tokens & {name for (name,) in on_server.execute(f"SHOW TABLES FROM {db}")}, srv.name
        assert tokens <= {name for (name,) in on_server.execute(f"SHOW TABLES FROM {db}_auth")}, srv.name
        # schema_migrations is replicated to every server: a replica may fetch the last row a moment later.
        wait_for(lambda c=on_server: c.execute(f"SELECT max(version) FROM {db}.schema_migrations") == [(10,)], 30,
                 f"{srv.name} to hold version 10")
    settings = eight_partitions(settings)
    run_through(settings, tmp_path, "cluster_migrated_from_aa7b72c", lambda: None, lambda: None, seed=1704,
                down_s=0.0)
