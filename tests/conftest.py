"""Test-wide setup: the test stack has its own ports and state folder, so it never touches a
developer's running `make demo` stack. Set before any Highland module reads its settings."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_ENV = {
    "HIGHLAND_STATE_DIR": str(ROOT / ".highland" / "test"),
    "HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:39092",
    "HIGHLAND_CLICKHOUSE_PORT": "39000",
    "HIGHLAND_CLICKHOUSE_HTTP_PORT": "39123",
    "HIGHLAND_WORKER_WEB_PORT": "36066",
    "HIGHLAND_S3_PORT": "38333",
    "HIGHLAND_S3_MASTER_PORT": "39333",
    "HIGHLAND_S3_VOLUME_PORT": "38080",
    "HIGHLAND_S3_FILER_PORT": "38888",
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


@pytest.fixture(scope="session")
def long_run(request) -> bool:
    return bool(request.config.getoption("--long"))
