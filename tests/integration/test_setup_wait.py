"""`highland setup --wait`: the schema job of deploy/ waits for every service it uses -- Kafka and
ClickHouse -- instead of failing when one of them starts later than the other."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from highland.sinks.client import connect

from highland.settings import Settings
from highland.stack import clickhouse_server
from tests.conftest import ROOT
from tests.integration.support import worker_env

pytestmark = pytest.mark.integration


def setup(settings: Settings, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**worker_env(settings, "setup", Path("/tmp")), "HIGHLAND_TOPIC_PARTITIONS": str(settings.topic_partitions),
           **(extra or {})}
    return subprocess.run([sys.executable, "-m", "highland", "setup", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=180)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_setup_waits_for_kafka_and_clickhouse_then_creates_everything(isolated: Settings):
    connect(isolated, database="default").execute(f"DROP DATABASE IF EXISTS {isolated.clickhouse_database}")
    done = setup(isolated, "--wait", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Kafka: answering" in done.stdout and "ClickHouse: answering" in done.stdout
    assert connect(isolated).execute("SELECT count() FROM system.tables WHERE database = %(d)s",
                                      {"d": isolated.clickhouse_database})[0][0] > 0


def test_setup_gives_up_naming_the_service_that_never_answered(isolated: Settings):
    started = time.monotonic()
    done = setup(isolated, "--wait", "4", extra={"HIGHLAND_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not answering after 4 s: Kafka" in " ".join(done.stderr.split())
    assert "ClickHouse: answering" in done.stdout  # the one that answered is not blamed
    assert time.monotonic() - started < 120


def test_setup_waits_for_a_clickhouse_that_answers_late(isolated: Settings):
    """ClickHouse frozen (SIGSTOP) when setup starts and thawed seconds later: setup waits, then
    creates everything; without --wait it would have failed on its first query."""
    pid = clickhouse_server.service(isolated).pid()
    assert pid is not None
    connect(isolated, database="default").execute(f"DROP DATABASE IF EXISTS {isolated.clickhouse_database}")
    os.kill(pid, signal.SIGSTOP)
    thaw = threading.Timer(8, os.kill, (pid, signal.SIGCONT))
    thaw.start()
    started = time.monotonic()
    try:
        done = setup(isolated, "--wait", "90")
    finally:
        thaw.cancel()
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started >= 8  # it waited for the thaw
    assert "ClickHouse: answering" in done.stdout
    assert connect(isolated).execute("SELECT count() FROM system.tables WHERE database = %(d)s",
                                      {"d": isolated.clickhouse_database})[0][0] > 0
