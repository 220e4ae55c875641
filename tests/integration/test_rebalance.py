"""A worker that loses its partitions while its ClickHouse write is failing stops retrying it:
the batch is dropped uncommitted and the new owner writes it, once."""

from __future__ import annotations

import signal

import pytest

from highland.settings import Settings
from highland.stack import clickhouse_server, local
from tests.integration.support import WorkerProcess, wait_for
from tests.integration.test_worker import _assigned, assert_exact, fast, known_feed, push  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_worker_losing_its_partitions_mid_retry_drops_the_batch(fast: Settings, tmp_path):  # noqa: F811
    feed = known_feed(seed=31, flows=3000)
    everything = set(range(fast.topic_partitions))
    first = WorkerProcess(fast, "first", tmp_path)
    second = None
    admin = local.ensure_secrets(fast)["HIGHLAND_CLICKHOUSE_ADMIN_PASSWORD"]
    try:
        wait_for(lambda: _assigned(first, fast.topic_events) == everything, 90, "the first worker to own all",
                 first.log)
        clickhouse_server.service(fast).stop()
        try:
            push(fast, feed)
            wait_for(lambda: "ClickHouse insert failed" in first.log(tail=10**9), 60, "a failing write", first.log)
            second = WorkerProcess(fast, "second", tmp_path)

            def shared() -> bool:
                a, b = (_assigned(w, fast.topic_events) for w in (first, second))
                return bool(a) and bool(b) and a.isdisjoint(b) and a | b == everything

            wait_for(shared, 90, "the partitions to be shared", lambda: first.log() + second.log())
            wait_for(lambda: "dropped uncommitted" in first.log(tail=10**9), 30,
                     "the first worker to drop the batch of partitions it lost", first.log)
        finally:
            clickhouse_server.start(fast, admin)
        assert_exact(fast, feed, timeout_s=150, workers=[first, second])
    finally:
        first.kill(signal.SIGTERM)
        if second is not None:
            second.kill(signal.SIGTERM)
