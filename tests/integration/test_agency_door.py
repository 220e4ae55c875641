"""An agency's way in, end to end (issue 16 items 3-4, issue 15 items 1-2): tokens an administrator
issues, lists, rotates, revokes and lets expire; `highland push` whose token, from a file or the
environment and never an argument, decides the agency, straight to Kafka or through the gateway;
the gateway's CSV and .xlsx uploads; an agency reading its own dead letters and no one else's; and
the OpenAPI description, served as checked in, every documented call made with its examples."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from highland.ingest.gateway import OPENAPI
from highland.sinks.client import connect
from highland.sinks.tables import AGENCY_TOKEN_USES
from highland.sinks.tokens import issue, revoke_all
from jsonschema import Draft202012Validator

from highland.settings import Settings
from tests.conftest import ROOT
from tests.integration.support import WorkerProcess, wait_for, worker_env
from tests.integration.test_ingest import GOOD, GatewayProcess, auth, dead_letters, highland, jsonl, read_topic
from tests.unit.test_files import CHINESE_HEADER, excel_workbook

pytestmark = pytest.mark.integration

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PORTS = {**GOOD, "agency": "cq_comms_admin", "indicator": "fiber_broadband_ports", "unit": "ports",
         "region": "yuzhong"}


@pytest.fixture
def gateway(isolated: Settings, tmp_path) -> Any:
    gw = GatewayProcess(isolated, tmp_path)
    yield gw
    gw.stop()


def tokens(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    result = highland(settings, "tokens", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def listed(settings: Settings, *args: str) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in json.loads(tokens(settings, "list", "--json", *args).stdout)}


def post(gw: GatewayProcess, token: str, event: dict | None = None) -> int:
    return gw.request("POST", "/v1/events", json.dumps(event or GOOD).encode(), auth(token))[0]  # type: ignore[no-any-return]


def refused_within(gw: GatewayProcess, token: str, seconds: float) -> float:
    """Seconds until the gateway answers 401 for ``token``; fails after ``seconds``."""
    started = time.monotonic()
    while post(gw, token) != 401:
        assert time.monotonic() - started < seconds, f"the token still works after {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


# --- tokens an administrator manages -----------------------------------------------------------------

def test_a_token_is_issued_listed_used_rotated_revoked_and_expires(isolated: Settings, tmp_path):
    gw = GatewayProcess(isolated, tmp_path)
    try:
        first_file = tmp_path / "first.token"
        issued = tokens(isolated, "issue", "--agency", "cq_commerce", "--out", str(first_file))
        first = first_file.read_text().strip()
        assert stat.S_IMODE(first_file.stat().st_mode) == 0o600 and first.startswith("hlt_")
        assert first not in issued.stdout + issued.stderr  # written to the file only
        listing = tokens(isolated, "list", "--json").stdout
        [(first_id, row)] = listed(isolated).items()
        assert (row["agency"], row["state"], row["expires_at"], row["last_used_at"]) == \
               ("cq_commerce", "valid", None, None)
        assert first not in listing and first_id not in first  # neither the secret nor a piece of it

        # Used five times: "last used" is set, and written once, not once per request.
        assert [post(gw, first) for _ in range(5)] == [200] * 5
        wait_for(lambda: listed(isolated)[first_id]["last_used_at"] is not None, 10, "last used to be noted")
        [(uses,)] = connect(isolated).execute(
            f"SELECT count() FROM {AGENCY_TOKEN_USES.qualified(isolated.clickhouse_database)}")
        assert uses == 1

        # Rotated, the old one kept for an hour: both work, the old one now expires.
        rotated = tmp_path / "second.token"
        tokens(isolated, "rotate", first_id, "--keep-old", "1h", "--out", str(rotated))
        second = rotated.read_text().strip()
        now = listed(isolated)
        assert {t["state"] for t in now.values()} == {"valid"} and len(now) == 2
        assert now[first_id]["expires_at"] is not None
        assert post(gw, first) == 200 and post(gw, second) == 200

        # Revoked by its id: refused within 2 s; the new one goes on.
        tokens(isolated, "revoke", first_id)
        assert refused_within(gw, first, 2.0) < 2.0
        assert post(gw, second) == 200
        assert first_id not in listed(isolated) and listed(isolated, "--all")[first_id]["state"] == "revoked"

        # Issued for 3 s: works, then is refused (401) once it has expired, and is listed as expired.
        short_file = tmp_path / "short.token"
        tokens(isolated, "issue", "--agency", "cq_commerce", "--expires", "3s", "--out", str(short_file))
        short = short_file.read_text().strip()
        assert post(gw, short) == 200
        refused_within(gw, short, 3.0 + 2.0 + 1.0)  # the expiry, the cache and a second of DateTime
        assert "expired" in {t["state"] for t in listed(isolated, "--all").values()}
        assert post(gw, second) == 200
    finally:
        gw.stop()


def test_a_rotation_without_keep_old_revokes_at_once_and_an_unknown_id_is_an_error(isolated: Settings):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    [token_id] = listed(isolated)
    new = tokens(isolated, "rotate", token_id).stdout.strip()
    states = {t["id"]: t["state"] for t in listed(isolated, "--all").values()}
    assert states[token_id] == "revoked" and list(states.values()).count("valid") == 1
    assert new.startswith("hlt_") and new != token
    unknown = highland(isolated, "tokens", "revoke", "000000000000")
    assert unknown.returncode == 2 and "no token has the id" in unknown.stderr


# --- push: the token decides the agency ------------------------------------------------------------

def test_a_push_to_kafka_is_in_the_name_of_the_tokens_agency(isolated: Settings, tmp_path):
    client, db = connect(isolated), isolated.clickhouse_database
    token_file = tmp_path / "token"
    token_file.write_text(issue(client, db, "cq_commerce") + "\n")
    token_file.chmod(0o600)
    mixed = jsonl(tmp_path / "mixed.jsonl", [GOOD, PORTS])  # the second row is another agency's
    result = highland(isolated, "push", str(mixed), "--token-file", str(token_file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "accepted: 1" in result.stdout and "forbidden_agency: 1" in result.stdout
    assert [d.agency for d in dead_letters(isolated)] == ["cq_commerce"]  # the pusher's, not the row's

    as_other = highland(isolated, "push", str(mixed), "--agency", "cq_comms_admin", "--token-file", str(token_file))
    assert as_other.returncode == 2 and "forbidden_agency" in as_other.stderr
    nobody = highland(isolated, "push", str(mixed))
    assert nobody.returncode == 2 and "no agency token" in nobody.stderr
    revoke_all(client, db, "cq_commerce")
    revoked = highland(isolated, "push", str(mixed), "--token-file", str(token_file))
    assert revoked.returncode == 2 and "unauthenticated" in revoked.stderr
    secret = token_file.read_text().strip()
    on_the_line = highland(isolated, "push", str(mixed), "--token", secret)
    assert on_the_line.returncode == 2 and "--token is removed" in on_the_line.stderr
    assert len(read_topic(isolated, isolated.topic_events)) == 1  # nothing more was sent


def test_the_secret_never_appears_in_any_process_arguments(isolated: Settings, tmp_path):
    gw = GatewayProcess(isolated, tmp_path)
    secret = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    token_file = tmp_path / "token"
    token_file.write_text(secret)
    rows = [{**GOOD, "event_id": f"a-{i}"} for i in range(3000)]
    argv = [sys.executable, "-m", "highland", "push", str(jsonl(tmp_path / "a.jsonl", rows)),
            "--gateway", f"http://127.0.0.1:{gw.port}", "--token-file", str(token_file)]
    seen: list[str] = []
    try:
        push = subprocess.Popen(argv, env=worker_env(isolated, "cli", tmp_path), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while push.poll() is None:  # every process on the machine, while the push runs
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if secret.encode() in cmdline.read_bytes():
                        seen.append(str(cmdline))
                except OSError:
                    pass
        output = push.communicate()[0].decode()
        assert push.returncode == 0, output
        assert "accepted: 3000" in output and secret not in output
    finally:
        gw.stop()
    assert seen == []
    assert secret not in gw.log.read_text()


# --- the gateway: uploads and an agency's own dead letters -----------------------------------------------

def test_the_gateway_reads_csv_in_utf8_and_gb18030_and_xlsx_uploads(isolated: Settings, gateway, tmp_path):
    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    rows = ("u1,0,重庆市商务委员会,电子商务交易额,重庆市,1200,亿元,2019/1/31\n"
            "u2,0,重庆市商务委员会,电子商务交易额,全市,12,kg,2019/2/28\n")
    for body, content_type in [((CHINESE_HEADER + rows).encode("gb18030"), "text/csv; charset=gb18030"),
                               ((CHINESE_HEADER + rows).encode("gb18030"), "text/csv"),  # detected
                               ((CHINESE_HEADER + rows).encode("utf-8-sig"), "text/csv")]:
        status, answer = gateway.request("POST", "/v1/events", body, auth(token, content_type))
        assert status == 400, answer
        assert [(r["line"], r["status"], r.get("reason")) for r in answer["results"]] == \
               [(2, "accepted", None), (3, "rejected", "unit_mismatch")]
    book = excel_workbook(tmp_path / "book.xlsx", [["x1", 0, "重庆市商务委员会", "电子商务交易额", None, 3, "亿元",
                                                    "2019-03-01"]])
    status, answer = gateway.request("POST", "/v1/events?sheet=1", book.read_bytes(), auth(token, XLSX))
    assert (status, answer["accepted"]) == (200, 1), answer
    status, answer = gateway.request("POST", "/v1/events", b"what,is,this\n1,2,3\n", auth(token, "text/csv"))
    assert (status, answer["error"]) == (400, "unreadable_file") and "unknown column header" in answer["detail"]
    assert len(read_topic(isolated, isolated.topic_events)) == 3 * 1 + 1
    assert [d.origin.split(":")[-1] for d in dead_letters(isolated)] == ["line 3"] * 3  # the unreadable file: none


def test_an_agency_reads_its_own_dead_letters_and_no_one_elses(isolated: Settings, gateway, tmp_path):
    client, db = connect(isolated), isolated.clickhouse_database
    commerce, comms = issue(client, db, "cq_commerce"), issue(client, db, "cq_comms_admin")
    assert post(gateway, commerce, {**GOOD, "unit": "kg"}) == 400
    assert post(gateway, commerce, PORTS) == 403  # in another's name: the pusher's forbidden_agency
    assert post(gateway, comms, {**PORTS, "unit": "kg"}) == 400
    worker = WorkerProcess(isolated, "dlq", tmp_path)

    def letters(token: str) -> list[tuple[str, str]]:
        status, answer = gateway.request("GET", "/v1/dead-letters?limit=50", None, auth(token))
        assert status == 200, answer
        return sorted((d["reason"], json.loads(d["payload"])["agency"]) for d in answer["dead_letters"])

    try:
        wait_for(lambda: len(letters(commerce)) == 2 and len(letters(comms)) == 1, 90,
                 "the dead letters to be stored", worker.log)
    finally:
        worker.kill(signal.SIGTERM)
    assert letters(commerce) == [("forbidden_agency", "cq_comms_admin"), ("unit_mismatch", "cq_commerce")]
    assert letters(comms) == [("unit_mismatch", "cq_comms_admin")]
    assert gateway.request("GET", "/v1/dead-letters", None, {})[0] == 401
    assert gateway.request("GET", "/v1/dead-letters?limit=0", None, auth(commerce))[0] == 400


# --- the OpenAPI description ------------------------------------------------------------------------

def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _response(spec: dict, operation: dict, status: str) -> dict:
    response = operation["responses"][status]
    return spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]] if "$ref" in response else response


def _check(spec: dict, path: str, method: str, status: int, body: bytes, media: str = "application/json") -> Any:
    """The answer matches the documented response of its status (which must be documented)."""
    operation = spec["paths"][path][method]
    assert str(status) in operation["responses"], (path, method, status, body[:300])
    if media != "application/json":
        return body
    answer = json.loads(body)
    ref = operation["responses"][str(status)].get("$ref")
    parts = (*ref[2:].split("/"), "content", "application/json", "schema") if ref else \
        ("paths", path, method, "responses", str(status), "content", "application/json", "schema")
    Draft202012Validator({**spec, "$ref": _pointer(*parts)}).validate(answer)
    return answer


def _without_detail(answer: Any) -> Any:
    if isinstance(answer, dict):
        return {k: _without_detail(v) for k, v in answer.items() if k != "detail"}
    if isinstance(answer, list):
        return [_without_detail(v) for v in answer]
    return answer


def test_the_served_description_is_the_checked_in_one_and_every_documented_call_answers_as_documented(
        isolated: Settings, gateway, tmp_path):
    import http.client

    token = issue(connect(isolated), isolated.clickhouse_database, "cq_commerce")
    spec = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))

    def call(method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        try:
            conn.request(method.upper(), path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    status, served = call("get", "/openapi.yaml", None, {})
    assert status == 200 and served == OPENAPI.read_bytes()
    called = set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            called.add((method, path))
            secured = operation.get("security", spec["security"]) != []
            headers = {"Authorization": f"Bearer {token}"} if secured else {}
            if secured:  # without the token: the documented 401
                _check(spec, path, method, *call(method, path, None, {}))
            content = operation.get("requestBody", {}).get("content", {})
            if not content:
                query = {p["name"]: p["example"] for p in operation.get("parameters", []) if "example" in p}
                target = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
                status, body = call(method, target, None, headers)
                media = next(iter(_response(spec, operation, str(status)).get("content", {"x": 0})))
                _check(spec, path, method, status, body, media)
                assert status == 200, body[:300]
                continue
            for media, described in content.items():
                for name, example in described.get("examples", {}).items():
                    value = example["value"]
                    raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
                    status, body = call(method, path, raw, {**headers, "Content-Type": media})
                    expected = next(s for s, r in operation["responses"].items()
                                    if name in r.get("content", {}).get("application/json", {}).get("examples", {}))
                    assert str(status) == expected, (name, status, body[:300])
                    answer = _check(spec, path, method, status, body)
                    documented = operation["responses"][expected]["content"]["application/json"]["examples"][name]
                    assert _without_detail(answer) == _without_detail(documented["value"]), name
            if XLSX in content:  # binary: no inline example; a workbook as `highland template` writes one
                book = excel_workbook(tmp_path / "openapi.xlsx", [["o1", 0, "cq_commerce", "ecommerce_turnover", None,
                                                                   1, "亿元", "2019-11-30"]])
                status, body = call(method, path, book.read_bytes(), {**headers, "Content-Type": XLSX})
                assert status == 200 and _check(spec, path, method, status, body)["accepted"] == 1
    assert called == {(m, p) for p, item in spec["paths"].items() for m in item}
    assert os.environ.get("HIGHLAND_TOKEN") is None  # nothing above leaked a token into this process
