"""Alerts: a change of status gives exactly one alert; a feed gone stale gives exactly one."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from highland.catalog.loader import default_catalog
from highland.sinks.alerts import list_alerts
from highland.sinks.client import connect
from highland.streams.evaluator import evaluate
from kafka import KafkaConsumer, TopicPartition

from highland.settings import Settings
from tests.integration.support import WorkerProcess, event, wait_for
from tests.integration.test_worker import push

pytestmark = pytest.mark.integration
CATALOG = default_catalog()


def months_of_2020(total: float, revision: int = 0) -> list[dict]:
    return [event(f"t2020-{m}", "cq_commerce", "ecommerce_turnover", total / 12, "亿元",
                  f"2020-{m:02d}-15T00:00:00+08:00", revision=revision) for m in range(1, 13)]


def alerts_topic(settings: Settings) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(settings.topic_alerts, p) for p in range(settings.topic_partitions)])
    consumer.seek_to_beginning()
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


class Webhook:
    """A local HTTP endpoint that records the alerts posted to it; fails the first post on purpose
    so the worker's retry is exercised."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.attempts = [0]
        received, attempts = self.received, self.attempts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                attempts[0] += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if attempts[0] == 1:
                    self.send_response(503)
                else:
                    received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_status_change_gives_exactly_one_alert(isolated: Settings, tmp_path):
    hook = Webhook()
    fast = isolated.model_copy(update={"alert_check_seconds": 0.5, "alert_webhook_url": hook.url})
    client = connect(fast)
    worker = WorkerProcess(fast, "a", tmp_path)

    def turnover_alerts() -> list[dict]:
        return [a for a in list_alerts(client, fast.clickhouse_database) if a["indicator"] == "ecommerce_turnover"]

    try:
        # The 2020 target (18,000) met in full: no_data -> on_track.
        push(fast, months_of_2020(18_000))
        wait_for(lambda: len(turnover_alerts()) == 1, 90, "the first alert", worker.log)
        # A statistical correction of every month to two thirds: on_track -> off_track.
        push(fast, months_of_2020(12_000, revision=1))
        wait_for(lambda: len(turnover_alerts()) == 2, 60, "the second alert", worker.log)
        time.sleep(3)  # several more evaluations run; nothing changed, so nothing more is alerted
        assert "ALERT ecommerce_turnover: on_track -> off_track" in worker.log(tail=10**9)
        alerts = turnover_alerts()
        assert [(a["old_status"], a["new_status"]) for a in reversed(alerts)] == [
            ("no_data", "on_track"), ("on_track", "off_track")]
        assert alerts[0]["actual"] == pytest.approx(12_000) and alerts[0]["expected"] == pytest.approx(18_000)
        published = [a for a in alerts_topic(fast) if a["indicator"] == "ecommerce_turnover"]
        assert sorted(a["alert_id"] for a in published) == sorted(a["alert_id"] for a in alerts)
        # The webhook gets each alert once, the first after a retry (its first answer was 503).
        wait_for(lambda: len(hook.received) == 2, 30, "the webhook posts", worker.log)
        assert sorted(a["alert_id"] for a in hook.received) == sorted(a["alert_id"] for a in alerts)
        assert hook.attempts[0] == 3
    finally:
        worker.kill(signal.SIGTERM)
        hook.close()


def test_a_stale_feed_gives_one_alert_and_one_when_it_reports_again(isolated: Settings, tmp_path):
    worker = WorkerProcess(isolated, "a", tmp_path)
    client = connect(isolated)
    db = isolated.clickhouse_database
    try:
        push(isolated, months_of_2020(18_000))
        wait_for(lambda: client.execute("SELECT count() FROM events")[0][0] == 12, 60, "events stored", worker.log)
    finally:
        worker.kill(signal.SIGTERM)
    now = datetime.now(UTC)
    evaluate(client, db, CATALOG, now)  # status alerts only: the feed just reported
    cadence = timedelta(days=CATALOG.indicator("ecommerce_turnover").cadence_days)
    later = now + cadence + timedelta(hours=1)
    stale = [a for a in evaluate(client, db, CATALOG, later) if a.kind == "stale"]
    assert [(a.indicator, a.agency) for a in stale] == [("ecommerce_turnover", "cq_commerce")]
    assert [a for a in evaluate(client, db, CATALOG, later + timedelta(hours=1)) if a.kind == "stale"] == []
    # Back within the cadence (the clock is the test's, not the machine's): one 'fresh' alert.
    fresh = [a for a in evaluate(client, db, CATALOG, now) if a.kind == "fresh"]
    assert [a.indicator for a in fresh] == ["ecommerce_turnover"]
    kinds = [a["kind"] for a in list_alerts(client, db) if a["indicator"] == "ecommerce_turnover"]
    assert sorted(kinds) == ["fresh", "stale", "status"]
