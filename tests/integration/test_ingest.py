"""`highland push` and the HTTP gateway against the real broker: accepted events reach the events
topic with key, timestamp and header; every rejection reaches the dead-letter topic with its raw
payload and reason; bad rows never hold up good ones; a dead broker is a clear, bounded error."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from highland.ingest.dead_letters import DeadLetter
from highland.ingest.events import Reason
from highland.sinks.client import connect
from highland.sinks.tokens import issue, revoke_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from highland.settings import Settings
from tests.conftest import ROOT
from tests.integration.support import one_bad_row_per_reason, wait_for, worker_env

pytestmark = pytest.mark.integration

GOOD = {"event_id": "e-1", "agency": "cq_commerce", "indicator": "ecommerce_turnover", "value": 12.5,
        "unit": "亿元", "observed_at": "2019-05-01T00:00:00+08:00"}


def read_topic(settings: Settings, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, consumer_timeout_ms=2000)
    consumer.assign([TopicPartition(topic, p) for p in range(settings.topic_partitions)])
    consumer.seek_to_beginning()
    try:
        return list(consumer)
    finally:
        consumer.close()


def dead_letters(settings: Settings) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(m.value) for m in read_topic(settings, settings.topic_dlq)]


def highland(settings: Settings, *args: str, timeout: float = 120,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**worker_env(settings, "cli", Path("/tmp")), **(env or {})}
    return subprocess.run([sys.executable, "-m", "highland", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def as_agency(settings: Settings, agency: str = "cq_commerce") -> dict[str, str]:
    """The environment of an agency's push: a token of its own in HIGHLAND_TOKEN, never an argument."""
    return {"HIGHLAND_TOKEN": issue(connect(settings), settings.clickhouse_database, agency)}


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def test_push_csv_sends_accepted_rows_with_key_timestamp_and_header(isolated: Settings, tmp_path):
    csv = tmp_path / "turnover.csv"
    csv.write_text("event_id,revision,agency,indicator,region,value,unit,observed_at\n"
                   "c1,0,cq_commerce,ecommerce_turnover,,1200,亿元,2019-01-31T00:00:00+08:00\n"
                   "c2,1,cq_commerce,ecommerce_turnover,chongqing,50000,万元,2019-02-28T00:00:00+08:00\n")
    result = highland(isolated, "push", str(csv), "--agency", "cq_commerce", env=as_agency(isolated))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted: 2" in result.stdout and "rejected: 0" in result.stdout
    messages = sorted(read_topic(isolated, isolated.topic_events), key=lambda m: m.timestamp)
    assert [m.key for m in messages] == [b"ecommerce_turnover|chongqing"] * 2
    assert messages[0].timestamp == 1548864000000  # 2019-01-31T00:00+08:00 in epoch ms
    assert ("schema", b"metric-event/1") in messages[0].headers
    assert json.loads(messages[1].value)["revision"] == 1
    assert not (tmp_path / "turnover.csv.rejected.jsonl").exists()


def test_a_mixed_file_delivers_good_rows_and_dead_letters_every_bad_one(isolated: Settings, tmp_path):
    bad = one_bad_row_per_reason(GOOD)
    rows: list = []
    for i, row in enumerate(bad.values()):
        rows += [row, {**GOOD, "event_id": f"good-{i}"}]  # every bad row has a good one behind it
    result = highland(isolated, "push", str(jsonl(tmp_path / "mixed.jsonl", rows)), "--agency", "cq_commerce",
                      env=as_agency(isolated))
    assert result.returncode == 1
    assert f"accepted: {len(bad)}" in result.stdout
    for name in bad:
        assert f"{name}: 1" in result.stdout
    rejected_file = tmp_path / "mixed.jsonl.rejected.jsonl"
    assert sorted(json.loads(line)["reason"] for line in rejected_file.read_text().splitlines()) == sorted(bad)
    assert len(read_topic(isolated, isolated.topic_events)) == len(bad)
    letters = {d.reason.value: d for d in dead_letters(isolated)}
    assert set(letters) == set(bad)
    assert letters["malformed_json"].raw_payload() == b"{not json"
    assert letters["unit_mismatch"].origin == "mixed.jsonl:9" and letters["unit_mismatch"].agency == "cq_commerce"
    assert all(d.source == "push" for d in letters.values())


def test_push_names_an_unreachable_broker_and_does_not_hang(isolated: Settings, tmp_path):
    dead = isolated.model_copy(update={"kafka_bootstrap": "127.0.0.1:1", "producer_max_block_s": 2.0})
    env = {**worker_env(dead, "cli", tmp_path), "HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:1",
           "HIGHLAND_PRODUCER_MAX_BLOCK_S": "2", **as_agency(isolated)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "highland", "push", str(jsonl(tmp_path / "a.jsonl", [GOOD])),
                             "--agency", "cq_commerce"], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 2
    assert "broker unavailable" in result.stderr and "127.0.0.1:1" in result.stderr
    assert time.monotonic() - started < 30


# --- the HTTP gateway ------------------------------------------------------------------------------

def free_port() -> int:
    """A port nobody listens on now (fixed ports collide with leftovers of other runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    def __init__(self, settings: Settings, tmp: Path, port: int | None = None, extra: dict | None = None):
        env = {**worker_env(settings, "gw", tmp), **(extra or {})}
        port = port or free_port()
        self.port = port
        self.log = tmp / "gateway.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "highland", "gateway", "--port", str(port)], env=env,
                                     cwd=ROOT, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for(self._listening, 30, "the gateway to listen", lambda: self.log.read_text())

    def _listening(self) -> bool:
        try:
            self.request("GET", "/health")
            return True
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def gateway(isolated: Settings, tmp_path):
    gw = GatewayProcess(isolated, tmp_path)
    yield gw
    gw.stop()


def auth(token: str, content_type: str = "application/json") -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": content_type}


def test_gateway_accepts_an_agencys_own_events_and_reports_per_event(isolated: Settings, gateway):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    status, body = gateway.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth(token))
    assert (status, body["accepted"]) == (200, 1)
    batch = [GOOD, {**GOOD, "event_id": "e-2", "unit": "kg"}, {**GOOD, "event_id": "e-3"}]
    status, body = gateway.request("POST", "/v1/events", json.dumps(batch).encode(), auth(token))
    assert status == 400
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert body["results"][1]["reason"] == "unit_mismatch"
    ndjson = "\n".join(json.dumps({**GOOD, "event_id": f"n{i}"}) for i in range(3)).encode()
    status, body = gateway.request("POST", "/v1/events", ndjson, auth(token, "application/x-ndjson"))
    assert (status, body["accepted"]) == (200, 3)
    assert len(read_topic(isolated, isolated.topic_events)) == 1 + 2 + 3
    assert [d.reason for d in dead_letters(isolated)] == [Reason.UNIT_MISMATCH]


def test_gateway_refuses_without_a_valid_token_and_outside_ownership(isolated: Settings, gateway):
    client = connect(isolated)
    status, body = gateway.request("POST", "/v1/events", json.dumps(GOOD).encode(), {})
    assert (status, body["error"]) == (401, "unauthenticated")
    status, _ = gateway.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth("hlt_forged"))
    assert status == 401
    other = issue(client, isolated.clickhouse_database, "cq_comms_admin")
    status, body = gateway.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth(other))
    assert status == 403 and body["results"][0]["reason"] == "forbidden_agency"  # not its name
    mine = issue(client, isolated.clickhouse_database, "cq_commerce")
    ports = {**GOOD, "indicator": "fiber_broadband_ports", "unit": "ports", "region": "yuzhong"}
    status, body = gateway.request("POST", "/v1/events", json.dumps(ports).encode(), auth(mine))
    assert status == 403 and "owned by 'cq_comms_admin'" in body["results"][0]["detail"]
    reasons = sorted(d.reason.value for d in dead_letters(isolated))
    assert reasons == ["forbidden_agency", "forbidden_agency"]  # refused tokens leave nothing (§1.1)
    assert read_topic(isolated, isolated.topic_events) == []


def test_a_revoked_token_stops_working(isolated: Settings, tmp_path):
    client = connect(isolated)
    token = issue(client, isolated.clickhouse_database, "cq_commerce")
    assert revoke_all(client, isolated.clickhouse_database, "cq_commerce") == 1
    gw = GatewayProcess(isolated, tmp_path)  # a fresh process: no cached token
    try:
        status, _ = gw.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth(token))
        assert status == 401
    finally:
        gw.stop()


def test_gateway_limits_body_size_and_refuses_non_json(isolated: Settings, tmp_path):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    gw = GatewayProcess(isolated, tmp_path, extra={"HIGHLAND_GATEWAY_MAX_BODY_BYTES": "4096"})
    try:
        status, body = gw.request("POST", "/v1/events", b"x" * 10_000, auth(token))
        assert (status, body["error"]) == (413, "payload_too_large")
        status, body = gw.request("POST", "/v1/events", b"this is not json", auth(token))
        assert (status, body["error"]) == (400, "malformed_json")
    finally:
        gw.stop()
    assert sorted(d.reason.value for d in dead_letters(isolated)) == ["malformed_json", "payload_too_large"]


def test_gateway_answers_503_when_the_broker_is_down(isolated: Settings, tmp_path):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    gw = GatewayProcess(isolated, tmp_path,
                        extra={"HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:1", "HIGHLAND_PRODUCER_MAX_BLOCK_S": "2"})
    try:
        status, body = gw.request("GET", "/health")
        assert status == 503 and body["broker"] is False
        one_good_one_bad = [GOOD, {**GOOD, "event_id": "e-2", "indicator": "gdp"}]
        status, body = gw.request("POST", "/v1/events", json.dumps(one_good_one_bad).encode(), auth(token))
        assert status == 503 and body["retry"] is True and body["accepted"] == 0
        # Nothing reached the broker, so nothing counts as accepted, rejected or dead-lettered.
        metrics = {s.name: s.value for f in text_string_to_metric_families(gateway_text(gw, "/metrics"))
                   for s in f.samples}
        assert metrics["highland_gateway_events_received_total"] == 2
        assert metrics["highland_gateway_events_accepted_total"] == 0
        assert metrics["highland_gateway_dead_lettered_total"] == 0
        assert "highland_gateway_events_rejected_total" not in metrics
    finally:
        gw.stop()


def gateway_text(gw: GatewayProcess, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=200) | st.lists(st.dictionaries(st.sampled_from([*sorted(GOOD), "x"]),
                                                                 st.none() | st.integers() | st.text(max_size=20)
                                                                 | st.floats()), max_size=4)
       .map(lambda v: json.dumps(v).encode()),
       content_type=st.sampled_from(["application/json", "application/x-ndjson", "text/plain"]))
def test_fuzzed_requests_get_a_status_and_a_reason_never_a_crash(fuzz_gateway, body, content_type):
    gw, token = fuzz_gateway
    status, answer = gw.request("POST", "/v1/events", body, auth(token, content_type))
    assert status in {200, 400, 403, 413}
    assert isinstance(answer, dict)
    for result in answer.get("results", []):
        assert result["status"] == "accepted" or result["reason"] in {r.value for r in Reason}
    assert gw.proc.poll() is None


@pytest.fixture(scope="module")
def fuzz_gateway(stack: Settings, tmp_path_factory):
    settings = stack.model_copy(update={"clickhouse_database": "fuzz_gw", "topic_events": "fuzz.events",
                                        "topic_dlq": "fuzz.dlq"})
    from highland.sinks.migrate import migrate

    from highland.topics import ensure_topics

    ensure_topics(settings)
    migrate(settings)
    token = issue(connect(settings), settings.clickhouse_database, "cq_commerce")
    gw = GatewayProcess(settings, tmp_path_factory.mktemp("fuzz"))
    yield gw, token
    gw.stop()
    connect(settings, database="default").execute("DROP DATABASE IF EXISTS fuzz_gw")



# --- the bounded gateway (issue 15; docs/agencies.md, "Gateway limits") ------------------------------

def ndjson(events: list) -> bytes:
    return "\n".join(json.dumps(e) for e in events).encode()


def post_raw(port: int, headers: dict, body: bytes) -> tuple[int | None, float]:
    """(status or None if the connection was cut, seconds): the gateway may close a connection whose
    body it refused to read while the body is still on its way."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/events", body=body, headers=headers)
        return conn.getresponse().status, time.monotonic() - started
    except (ConnectionError, http.client.HTTPException):
        return None, time.monotonic() - started
    finally:
        conn.close()


class HealthPoller:
    """Polls /health in a thread while something else runs; keeps the worst latency seen."""

    def __init__(self, gw: GatewayProcess) -> None:
        import threading

        self.gw, self.worst, self.polls, self._stop = gw, 0.0, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status, _ = self.gw.request("GET", "/health")
            self.worst = max(self.worst, time.monotonic() - started)
            self.polls += 1
            assert status == 200
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.worst


def test_unauthenticated_posts_are_refused_unread_counted_logged_and_store_nothing(isolated: Settings, gateway):
    body = json.dumps({**GOOD, "pad": "x" * (60 * 1024)}).encode()
    statuses = [post_raw(gateway.port, auth(token), body)[0] for token in ["hlt_forged"] * 25 + [""] * 25]
    # Past the address's budget of failed authentications (gateway_auth_failure_burst) the answer is
    # 429, unread and counted as well (test_gateway_flood).
    assert set(statuses) <= {401, 429, None} and statuses.count(401) + statuses.count(429) >= 40, statuses
    _, health = gateway.request("GET", "/health")
    assert health["unauthenticated_requests"] == 50
    assert dead_letters(isolated) == [] and read_topic(isolated, isolated.topic_events) == []
    log = gateway.log.read_text()
    assert log.count("unauthenticated request from 127.0.0.1 at ") == 50


def test_an_unauthenticated_client_that_expects_100_continue_never_sends_its_body(isolated: Settings, gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer  # not "100 Continue": the body is never asked for


def test_a_client_that_expects_100_continue_is_told_413_before_it_sends_a_body_over_the_limit(
        isolated: Settings, gateway):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")

    def answer_to(length: int) -> bytes:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + token.encode() + b"\r\n"
                      b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % length)
            return s.recv(4096)

    assert answer_to(100 * 1024 * 1024).startswith(b"HTTP/1.1 413"), "the body over the limit was asked for"
    assert answer_to(100).startswith(b"HTTP/1.1 100 Continue")  # within the limit: send it


def test_a_token_over_its_rate_is_told_429_before_it_sends_a_body(isolated: Settings, tmp_path):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    gw = GatewayProcess(isolated, tmp_path, extra={"HIGHLAND_GATEWAY_RATE_BURST_EVENTS": "3",
                                                   "HIGHLAND_GATEWAY_RATE_EVENTS_PER_S": "0.01"})
    try:
        three = [{**GOOD, "event_id": f"r{i}"} for i in range(3)]
        assert gw.request("POST", "/v1/events", json.dumps(three).encode(), auth(token))[0] == 200  # the burst
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + token.encode() + b"\r\n"
                      b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 429") and b"Retry-After" in answer, answer
    finally:
        gw.stop()


def test_a_flood_of_a_million_tiny_events_is_refused_at_once_while_health_answers(isolated: Settings, gateway):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    poller = HealthPoller(gateway)
    status, took = post_raw(gateway.port, auth(token, "application/x-ndjson"), b"{}\n" * 1_000_000)
    worst = poller.stop()
    assert status == 413 and took < 5, (status, took)
    assert worst < 1.0, worst
    letters = dead_letters(isolated)
    assert [d.reason for d in letters] == [Reason.PAYLOAD_TOO_LARGE] and "10000 events" in letters[0].detail
    assert read_topic(isolated, isolated.topic_events) == []


def test_the_largest_allowed_request_keeps_health_under_a_second(isolated: Settings, gateway):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    events = [{**GOOD, "event_id": f"big-{i}", "value": i} for i in range(10_000)]
    poller = HealthPoller(gateway)
    time.sleep(0.2)
    status, took = post_raw(gateway.port, auth(token, "application/x-ndjson"), ndjson(events))
    time.sleep(0.2)
    worst = poller.stop()
    print(f"\n/health worst latency during a {len(events)}-event request ({took:.2f} s): {worst * 1000:.0f} ms "
          f"over {poller.polls} polls")
    assert status == 200
    assert worst < 1.0, worst
    status, _ = post_raw(gateway.port, auth(token, "application/x-ndjson"), ndjson([*events, GOOD]))
    assert status == 413


def test_event_and_byte_limits_answer_413_also_for_a_chunked_body(isolated: Settings, tmp_path):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    gw = GatewayProcess(isolated, tmp_path, extra={"HIGHLAND_GATEWAY_MAX_EVENTS": "5",
                                                   "HIGHLAND_GATEWAY_MAX_BODY_BYTES": "4096"})
    try:
        five = [{**GOOD, "event_id": f"f{i}"} for i in range(5)]
        assert gw.request("POST", "/v1/events", json.dumps(five).encode(), auth(token))[0] == 200
        status, body = gw.request("POST", "/v1/events", json.dumps([*five, GOOD]).encode(), auth(token))
        assert (status, body["error"]) == (413, "payload_too_large") and "more than 5 events" in body["detail"]
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        conn.request("POST", "/v1/events", body=iter([b" " * 1000] * 10), headers=auth(token), encode_chunked=True)
        assert conn.getresponse().status == 413
        conn.close()
    finally:
        gw.stop()


def test_a_revoked_token_is_refused_within_two_seconds(isolated: Settings, gateway):
    client = connect(isolated)
    token = issue(client, isolated.clickhouse_database, "cq_commerce")
    assert gateway.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth(token))[0] == 200  # now cached
    revoke_all(client, isolated.clickhouse_database, "cq_commerce")
    revoked_at = time.monotonic()
    while gateway.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth(token))[0] != 401:
        assert time.monotonic() - revoked_at < 2.0, "a revoked token still works after 2 s"
        time.sleep(0.05)


def test_each_token_has_a_rate_of_events_answered_429_with_retry_after(isolated: Settings, tmp_path):
    client = connect(isolated)
    token = issue(client, isolated.clickhouse_database, "cq_commerce")
    other = issue(client, isolated.clickhouse_database, "cq_commerce")
    gw = GatewayProcess(isolated, tmp_path, extra={"HIGHLAND_GATEWAY_RATE_EVENTS_PER_S": "2",
                                                   "HIGHLAND_GATEWAY_RATE_BURST_EVENTS": "10"})
    try:
        ten = [{**GOOD, "event_id": f"r{i}"} for i in range(10)]
        assert gw.request("POST", "/v1/events", json.dumps(ten).encode(), auth(token))[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        conn.request("POST", "/v1/events", body=json.dumps(GOOD).encode(), headers=auth(token))
        resp = conn.getresponse()
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert json.loads(resp.read())["error"] == "rate_limited"
        conn.close()
        assert gw.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth(other))[0] == 200  # its own bucket
        time.sleep(1.0)
        assert gw.request("POST", "/v1/events", json.dumps(GOOD).encode(), auth(token))[0] == 200
    finally:
        gw.stop()
    assert len(read_topic(isolated, isolated.topic_events)) == 12
