"""The system checks itself: the per-day series are compared with what ``events`` holds, continuously,
by the worker group, and whatever drifted -- a lost observation row, a wrong state -- is repaired
without stopping the workers and reported (an alert of kind ``repair``, the worker's counters).

The drift is made by hand here, as a lost mutation, a half-applied restore or a bug would leave it;
the numbers are compared with the independent model of the tests (support.reference_actuals)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from highland.ingest.events import Accepted, validate
from highland.ingest.producer import EventProducer
from highland.sinks.audit import Finding, check, sweep_keys_sql
from highland.sinks.client import connect
from highland.sinks.daily_series import OBSERVATIONS
from prometheus_client.parser import text_string_to_metric_families

from highland.settings import Settings
from tests.integration.support import WorkerProcess, dumps, wait_for
from tests.integration.test_daily_series import CATALOG, TZ, assert_exact, messy_feed, positioned, write_in_batches

pytestmark = pytest.mark.integration
EVERYTHING = {"agency": "", "event_id": "", "limit": 1_000_000}


@pytest.fixture
def db(isolated: Settings) -> Iterator[tuple[Any, str]]:
    client = connect(isolated)
    yield client, isolated.clickhouse_database
    client.disconnect()


def check_all(client: Any, name: str, *, repair: bool) -> Finding:
    return check(client, name, TZ, sweep_keys_sql(name, bounded=False), EVERYTHING, repair=repair)


def drop_a_withdrawal(client: Any, name: str) -> tuple[str, str, int]:
    """Delete one -1 row (as a lost write would): its superseded revision counts again."""
    [(agency, event_id, revision)] = client.execute(
        f"SELECT agency, event_id, revision FROM {name}.{OBSERVATIONS} WHERE sign < 0 "
        "AND indicator = 'ecommerce_turnover' ORDER BY event_id LIMIT 1")
    client.execute(f"ALTER TABLE {name}.{OBSERVATIONS} DELETE WHERE agency = %(a)s AND event_id = %(e)s "
                   "AND revision = %(r)s AND sign < 0", {"a": agency, "e": event_id, "r": revision})
    wait_for(lambda: not client.execute(f"SELECT count() FROM system.mutations WHERE database = '{name}' "
                                        "AND NOT is_done")[0][0], 30, "the row's deletion")
    return agency, event_id, revision


def forge_a_state(client: Any, name: str) -> tuple[str, str, Any]:
    """A series-day whose state disagrees with its rows and claims more rows than it has."""
    [(indicator, region, day, version)] = client.execute(
        f"SELECT indicator, region, day, max(version) FROM {name}.daily_series "
        "WHERE indicator = 'fiber_broadband_ports' GROUP BY indicator, region, day ORDER BY day LIMIT 1")
    client.execute(f"INSERT INTO {name}.daily_series (indicator, region, day, version, events, value_sum, "
                   "close_value, close_observed_at) VALUES",
                   [(indicator, region, day, version + 5, 1, 1e6, 1e6, datetime(2019, 6, 1))])
    return indicator, region, day


def test_a_database_written_by_the_writer_is_found_clean(db: tuple[Any, str]):
    client, name = db
    feed = messy_feed(51)
    write_in_batches(client, name, positioned(feed), 51)
    finding = check_all(client, name, repair=False)
    assert finding.keys > 0 and finding.clean, finding


def test_a_lost_withdrawal_and_a_forged_state_are_found_and_repaired(db: tuple[Any, str]):
    client, name = db
    feed = messy_feed(52)
    write_in_batches(client, name, positioned(feed), 52)
    drop_a_withdrawal(client, name)
    indicator, region, day = forge_a_state(client, name)

    found = check_all(client, name, repair=False)
    assert found.missing_rows == 1 and found.missing_by_indicator == (("ecommerce_turnover", 1),)
    assert (indicator, region, day) in found.wrong_days
    with pytest.raises(AssertionError):
        assert_exact(client, name, feed)

    check_all(client, name, repair=True)
    wait_for(lambda: not client.execute(f"SELECT count() FROM system.mutations WHERE database = '{name}' "
                                        "AND NOT is_done")[0][0], 30, "the forged state's deletion")
    assert check_all(client, name, repair=False).clean
    assert_exact(client, name, feed)


def test_the_worker_group_repairs_drift_while_it_runs_and_raises_an_alert(isolated: Settings, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    for key, value in {"HIGHLAND_AUDIT_SECONDS": "1", "HIGHLAND_AUDIT_GRACE_SECONDS": "0",
                       "HIGHLAND_AUDIT_CONFIRM_SECONDS": "1", "HIGHLAND_AUDIT_SWEEP_KEYS": "100000"}.items():
        monkeypatch.setenv(key, value)
    client, name = connect(isolated), isolated.clickhouse_database
    feed = messy_feed(53)

    last_difference = [""]

    def exact(part: list[dict]) -> Callable[[], bool]:
        def check() -> bool:
            try:
                assert_exact(client, name, part)
            except AssertionError as exc:
                last_difference[0] = str(exc)[:2000]
                return False
            return True
        return check

    def report() -> str:
        return f"last difference: {last_difference[0]}\n{worker.log()}"

    worker = WorkerProcess(isolated, "w1", tmp_path)
    try:
        half = len(feed) // 2
        with EventProducer(isolated, client_id="test") as producer:
            for start, end in ((0, half), (half, len(feed))):  # two batches: stored revisions get superseded
                for e in feed[start:end]:
                    verdict = validate(dumps(e), CATALOG)
                    assert isinstance(verdict, Accepted), verdict
                    producer.send_event(verdict, dumps(e))
                producer.flush()
                wait_for(exact(feed[:end]), 90, "the feed stored", report)

        drop_a_withdrawal(client, name)
        indicator, _region, _day = forge_a_state(client, name)
        started = time.monotonic()

        wait_for(exact(feed), 60, "the self-check to repair the drift", report)
        repairs = client.execute(f"SELECT indicator, detail FROM {name}.alerts WHERE kind = 'repair'")
        assert indicator in {i for i, _ in repairs}, repairs
        assert "ecommerce_turnover" in {i for i, _ in repairs}, repairs
        print(f"drift repaired in {time.monotonic() - started:.1f} s")
        counters = json.loads(worker.get("/health"))["self_check"]
        assert counters["rows_repaired"] >= 1 and counters["days_repaired"] >= 1, counters
        assert counters["rounds"] >= 1 and counters["keys_checked"] > 0, counters

        # The same tallies as Prometheus metrics, in Prometheus' own text format: every record sent was
        # read once (one worker, no restart), and the counters match /health.
        families = {f.name: f for f in text_string_to_metric_families(worker.get("/metrics").decode())}
        health = json.loads(worker.get("/health"))

        def value(family: str, sample: str) -> float:
            return next(s.value for s in families[family].samples if s.name == sample)

        assert value("highland_worker_batch_events", "highland_worker_batch_events_sum") == len(feed)
        assert value("highland_worker_events_stored", "highland_worker_events_stored_total") == \
            health["counters"]["events_stored"]
        assert value("highland_worker_self_check_rows_repaired", "highland_worker_self_check_rows_repaired_total") >= 1
    finally:
        worker.kill()
