"""The pipeline reports on itself: a real worker's and a real gateway's ``/metrics``, scraped while
they run and parsed with Prometheus' own parser, add up to what was sent (docs/streams.md and
docs/agencies.md, "Metrics").

Events reach the worker two ways: through the gateway (which rejects what is bad before Kafka) and
straight onto the events topic from a producer that can't be trusted (the worker rejects what is
bad there). Every number below is counted from what the test sent, not read back from the code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from highland.ingest.events import SCHEMA_HEADER
from highland.sinks.client import connect
from highland.sinks.tokens import issue
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from highland.settings import Settings
from tests.integration.support import WorkerProcess, one_bad_row_per_reason, wait_for
from tests.integration.test_ingest import GatewayProcess, auth

pytestmark = pytest.mark.integration

GOOD = {"event_id": "m-0", "agency": "cq_commerce", "indicator": "ecommerce_turnover", "value": 12.5,
        "unit": "亿元", "observed_at": "2019-05-01T00:00:00+08:00"}


def good(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{**GOOD, "event_id": f"{prefix}-{i}", "value": float(i),
             "observed_at": f"2019-05-{1 + i % 28:02d}T00:00:00+08:00"} for i in range(n)]


def line(row: Any) -> bytes:
    return (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)).encode()


class Scrape:
    """One scrape of ``/metrics``, parsed by prometheus_client's parser."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def total(self, family: str, **labels: str) -> float:
        """The sum of a counter's ``_total`` samples (or a histogram's ``_count``) matching ``labels``."""
        samples = self.families[family].samples
        return sum(s.value for s in samples if s.name in (f"{family}_total", f"{family}_count")
                   and labels.items() <= s.labels.items())

    def by(self, family: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in self.families[family].samples
                if s.name == f"{family}_total" and s.value}


@pytest.fixture
def worker(isolated: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(isolated, "metrics", tmp_path)
    yield w
    w.kill()


@pytest.fixture
def gateway(isolated: Settings, tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(isolated, tmp_path)
    yield gw
    gw.stop()


def stored(settings: Settings) -> int:
    return int(connect(settings).execute("SELECT count() FROM events")[0][0])


def test_worker_and_gateway_metrics_add_up_to_the_events_sent(isolated: Settings, worker: WorkerProcess,
                                                              gateway: GatewayProcess):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    # Through the gateway: good events and one bad row per reason in one NDJSON body, a body that is
    # not JSON at all (one rejection for the whole request), and two requests without a valid token.
    through_gateway = good("gw", 40)
    bad_rows = one_bad_row_per_reason({**GOOD, "event_id": "gw-bad"})
    twice = {**GOOD, "event_id": "gw-bad-again", "indicator": "gdp"}  # a reason met twice in one request
    body = b"\n".join([*map(line, through_gateway), *map(line, bad_rows.values()), line(twice)])
    status, answer = gateway.request("POST", "/v1/events", body, auth(token, "application/x-ndjson"))
    assert status == 400 and answer["accepted"] == len(through_gateway), answer
    assert gateway.request("POST", "/v1/events", b"{not json", auth(token))[0] == 400
    assert gateway.request("POST", "/v1/events", b"[]", auth("hlt_forged"))[0] == 401
    assert gateway.request("POST", "/v1/events", b"[]", {})[0] == 401

    # Straight onto the events topic: good records and two the worker must reject.
    direct = good("direct", 25)
    direct_bad = [b"{not json", *(line({**GOOD, "event_id": f"direct-bad-{i}", "indicator": "gdp"}) for i in range(3))]
    producer = KafkaProducer(bootstrap_servers=isolated.bootstrap_servers, acks="all")
    for value in [*map(line, direct), *direct_bad]:
        producer.send(isolated.topic_events, key=b"ecommerce_turnover|chongqing", value=value,
                      headers=[SCHEMA_HEADER])
    producer.flush()
    producer.close()

    consumed = len(through_gateway) + len(direct) + len(direct_bad)
    wait_for(lambda: stored(isolated) == len(through_gateway) + len(direct), 120, "every good event stored",
             worker.log)
    # Dead letters: the gateway's (one per bad row, one for the non-JSON body) and the worker's.
    gateway_rejected = len(bad_rows) + 2
    wait_for(lambda: json.loads(worker.get("/health"))["counters"]["dead_letters_stored"]
             == gateway_rejected + len(direct_bad), 60, "every dead letter stored", worker.log)

    # Scraped while both run.
    gw = Scrape(gateway_metrics(gateway))
    wk = Scrape(worker.get("/metrics").decode())

    # The gateway: accepted + rejected = sent, every rejection dead-lettered, by its reason.
    sent_to_gateway = len(through_gateway) + len(bad_rows) + 2
    assert gw.total("highland_gateway_events_accepted") == len(through_gateway)
    assert gw.total("highland_gateway_events_accepted") + gw.total("highland_gateway_events_rejected") == \
        sent_to_gateway
    assert gw.total("highland_gateway_dead_lettered") == gw.total("highland_gateway_events_rejected") == \
        gateway_rejected
    expected_reasons = {reason: 1.0 for reason in bad_rows}
    expected_reasons["malformed_json"] += 1  # the body that is not JSON
    expected_reasons["unknown_indicator"] += 1
    assert gw.by("highland_gateway_events_rejected", "reason") == expected_reasons
    assert gw.total("highland_gateway_events_received") == len(through_gateway) + len(bad_rows) + 1
    assert gw.total("highland_gateway_unauthenticated_requests") == 2  # token failures
    assert gw.by("highland_gateway_requests", "status") == {"400": 2.0, "401": 2.0}
    assert gw.total("highland_gateway_request_seconds") == 4

    # The worker: every record read once, accepted + rejected = consumed, every rejection dead-lettered.
    assert wk.total("highland_worker_records_consumed") == consumed
    assert wk.total("highland_worker_events_accepted") == len(through_gateway) + len(direct)
    assert wk.total("highland_worker_events_accepted") + wk.total("highland_worker_events_rejected") == consumed
    assert wk.by("highland_worker_events_rejected", "reason") == {"malformed_json": 1.0, "unknown_indicator": 3.0}
    assert wk.total("highland_worker_dead_letters_sent") == wk.total("highland_worker_events_rejected") == \
        len(direct_bad)
    assert wk.total("highland_worker_events_stored") == len(through_gateway) + len(direct)
    assert wk.total("highland_worker_poison_dead_lettered") == 0
    assert wk.total("highland_worker_dead_letters_stored") == gateway_rejected + len(direct_bad)
    assert wk.total("highland_worker_batch_events") >= 1  # batches, each observed once
    assert [s.value for s in wk.families["highland_worker_batch_events"].samples
            if s.name == "highland_worker_batch_events_sum"] == [consumed]
    # Arrival to storage: one observation per stored event, none negative.
    assert wk.total("highland_worker_arrival_to_storage_seconds") == len(through_gateway) + len(direct)
    buckets = [s for s in wk.families["highland_worker_arrival_to_storage_seconds"].samples
               if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == len(through_gateway) + len(direct)
    for name in ("stuck_batches", "self_check_rows_repaired", "self_check_days_repaired", "infrastructure_retries"):
        assert f"highland_worker_{name}" in wk.families, name


def gateway_metrics(gateway: GatewayProcess) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        assert answer.status == 200 and answer.getheader("Content-Type", "").startswith("text/plain")
        return answer.read().decode()
    finally:
        conn.close()
