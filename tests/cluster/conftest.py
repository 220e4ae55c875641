"""One cluster stack for the whole session: three Kafka brokers, ZooKeeper and four ClickHouse 18.16
servers as 2 shards x 2 replicas, started by `highland stack up --cluster` as a user starts it.

Its ports are the session's own ports + CLUSTER_PORT_OFFSET (tests: 31500-31697), its state a folder
inside the session's, so it runs beside the single-node test stack of tests/integration. Each test
gets its own database (migrated ON CLUSTER) and topics. `make test` runs the tests marked
``cluster_ci``; `pytest --cluster` runs every one (README, docs/local-stack.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from highland.sinks.client import connect
from highland.sinks.migrate import migrate
from highland.sinks.tables import auth_database

from highland.settings import Settings
from highland.stack import cluster, kafka, local
from highland.topics import ensure_topics
from tests.conftest import ROOT

CLUSTER_PORT_OFFSET = 500


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--cluster"):
        return
    skip = pytest.mark.skip(reason="a cluster test outside make test's representative set: pytest --cluster")
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents and "cluster_ci" not in item.keywords:
            item.add_marker(skip)


def cluster_overrides(base: Settings) -> dict[str, object]:
    """The cluster stack's settings, derived from the session's (its own port block)."""
    kafka_port = int(base.bootstrap_servers[0].rsplit(":", 1)[1]) + CLUSTER_PORT_OFFSET
    first = base.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{kafka_port}", "kafka_controller_port": None})
    return {
        "state_dir": base.state_dir / "cluster-stack",
        "kafka_bootstrap": kafka.cluster_bootstrap(first),
        "kafka_controller_port": None,
        "clickhouse_port": base.clickhouse_port + CLUSTER_PORT_OFFSET,
        "clickhouse_http_port": base.clickhouse_http_port + CLUSTER_PORT_OFFSET,
        "worker_web_port": base.worker_web_port + CLUSTER_PORT_OFFSET,
        "clickhouse_cluster": cluster.NAME,
        "broker": "kafka",
        "topic_replication": kafka.CLUSTER_NODES,
    }


def _environment(overrides: dict[str, object]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HIGHLAND_KAFKA_CONTROLLER_PORT"}
    env.update({f"HIGHLAND_{k.upper()}": str(v) for k, v in overrides.items() if v is not None})
    return env


@pytest.fixture(scope="session")
def cluster_stack() -> Iterator[Settings]:
    base = Settings()
    overrides = cluster_overrides(base)
    state = Path(str(overrides["state_dir"]))
    # The session's passwords: processes the tests start (workers, `highland progress`) read them from
    # the session's local.env, as they do for the single-node stack.
    env = {**_environment(overrides),
           **{k: v for k, v in local.ensure_secrets(base).items() if k in local.SECRET_KEYS}}
    probe = Settings(_env_file=None, **overrides)  # type: ignore[arg-type]
    if not any(s.service.pid() for s in cluster.servers(probe)):
        # Each session starts from empty servers and broker logs (Kafka's resolved jars stay).
        shutil.rmtree(state / "cluster", ignore_errors=True)
        shutil.rmtree(state / "kafka-cluster", ignore_errors=True)
        local.env_file(probe).unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "highland", "stack", "up", "--cluster"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # what did start is stopped, by pid, before the failure is reported
        subprocess.run([sys.executable, "-m", "highland", "stack", "down"], env=env, cwd=ROOT, timeout=300)
        pytest.fail(f"stack up --cluster failed:\n{done.stdout}\n{done.stderr}")
    settings = Settings(_env_file=local.env_file(probe), **overrides)  # type: ignore[arg-type]
    yield settings
    subprocess.run([sys.executable, "-m", "highland", "stack", "down"], env=env, cwd=ROOT, timeout=300)


def admin_password(settings: Settings) -> str:
    return local.ensure_secrets(settings)["HIGHLAND_CLICKHOUSE_ADMIN_PASSWORD"]


def of_its_own(settings: Settings) -> Settings:
    """``settings`` with a database, topics (created here) and a consumer group of one test's own."""
    unique = uuid.uuid4().hex[:10]
    own = settings.model_copy(update={
        "clickhouse_database": f"t_{unique}", "topic_events": f"t.{unique}.events", "topic_dlq": f"t.{unique}.dlq",
        "topic_alerts": f"t.{unique}.alerts", "consumer_group": f"t-{unique}"})
    ensure_topics(own)
    return own


def drop_database(settings: Settings) -> None:
    """The test's database and its auth database (the token tables), on every server."""
    admin = connect(settings, database="default")
    for database in (settings.clickhouse_database, auth_database(settings.clickhouse_database)):
        admin.execute(f"DROP DATABASE IF EXISTS {database} ON CLUSTER {cluster.NAME}")


@pytest.fixture
def on_cluster(cluster_stack: Settings) -> Iterator[Settings]:
    """Settings pointing at a fresh database (migrated ON CLUSTER) and fresh topics of this test only."""
    settings = of_its_own(cluster_stack)
    migrate(settings)
    yield settings
    restart_everything(settings)  # a fault test that failed half-way leaves nothing down for the next
    drop_database(settings)


def restart_everything(settings: Settings) -> None:
    cluster.start(settings, admin_password(settings))
