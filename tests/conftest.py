"""Test-wide setup: the test stack has its own ports and state folder, so it never touches a
developer's running `make demo` stack. Set before any Highland module reads its settings.

Every fixed port is below 32768, outside Linux's ephemeral range (32768-60999): a listener there
can find its port taken by some client's outgoing connection (seen: ClickHouse failing to bind)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_ENV = {
    "HIGHLAND_STATE_DIR": str(ROOT / ".highland" / "test"),
    "HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:31092",
    "HIGHLAND_CLICKHOUSE_PORT": "31000",
    "HIGHLAND_CLICKHOUSE_HTTP_PORT": "31123",
    "HIGHLAND_WORKER_WEB_PORT": "31066",
    "HIGHLAND_S3_PORT": "31333",
    "HIGHLAND_S3_MASTER_PORT": "31334",
    "HIGHLAND_S3_VOLUME_PORT": "31080",
    "HIGHLAND_S3_FILER_PORT": "31888",
}
for key, value in TEST_ENV.items():
    # An explicit environment wins, so two test sessions can run side by side on other ports.
    os.environ.setdefault(key, value)


def _chdb_session():
    from chdb import session

    return session.Session()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def chdb_session():
    """Current ClickHouse, embedded (chdb allows one session per process: shared by all tests)."""
    sess = _chdb_session()
    sess.query("CREATE DATABASE IF NOT EXISTS mig")
    yield sess
    sess.close()


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long fault-injection suite (1 M events, many faults)")
    parser.addoption("--cluster", action="store_true", default=False,
                     help="run every test of tests/cluster (make test runs those marked cluster_ci)")


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster_ci: a cluster test of the representative set make test runs")


@pytest.fixture(scope="session")
def long_run(request) -> bool:
    return bool(request.config.getoption("--long"))
