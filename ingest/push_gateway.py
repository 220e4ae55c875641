"""`highland push FILE --gateway URL`: an agency's files through the HTTP gateway, its documented door.

Files are read exactly as a push straight to Kafka reads them (ingest/files.py: encodings, .xlsx,
Chinese headers and names), then sent as NDJSON in requests of at most ``batch_events`` events and
``batch_bytes`` bytes, far below the gateway's limits. The gateway judges every event in the name of
the token's agency and answers one result per event; the summary is the same ``PushSummary`` as a
push to Kafka (every rejected row with file, line and reason, ``<file>.rejected.jsonl``), so
`push --json` reads the same either way.

The token comes from the caller (a file or an environment variable, never the command line). A 429
waits ``Retry-After`` (as often as it comes, up to ``MAX_RATE_WAITS``); a 503 (broker or token store
down or busy) or a gateway that cannot be reached (a restart) is retried a few times with a growing
wait: sending a request again is safe, as an event sent twice counts once (CONTRACT §1, revision);
a 401 stops everything (``Unauthenticated``): nothing more is sent. A push that stops after some
requests were answered says how many rows were accepted before it stopped.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from highland.catalog.models import Catalog
from highland.ingest.events import Reason, Rejected
from highland.ingest.files import Row, read_rows
from highland.ingest.names import Names
from highland.ingest.push import PushSummary, Rejection, RejectLog, file_report

USER_AGENT = "highland-push/1"
RETRIES_503 = 5
MAX_RATE_WAITS = 600  # 429s in a row, each waiting its Retry-After


class Unauthenticated(RuntimeError):
    """The gateway refused the token (401): missing, unknown, revoked or expired."""


class GatewayUnavailable(RuntimeError):
    """The gateway could not be reached, or kept answering 503."""


class InsecureGateway(GatewayUnavailable):
    """A gateway URL the token must not be sent to: plain http to another machine (the token would
    cross the network in clear text), or not http at all."""


def check_url(url: str) -> None:
    """Raise InsecureGateway unless ``url`` is https, or http to this machine (a test, a tunnel)."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return
    raise InsecureGateway(f"{url}: the token would cross the network in clear text; use https:// "
                          "(plain http only to this machine)" if parts.scheme == "http" else
                          f"{url}: not an http(s) URL of a gateway")


@dataclass(frozen=True)
class Gateway:
    url: str  # e.g. https://gateway.example:8443 (no path)
    token: str
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        check_url(self.url)

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/x-ndjson") -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON answer, headers); errors of the network as GatewayUnavailable."""
        headers = {"Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url.rstrip("/") + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, _json(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read()), dict(exc.headers)
        except (urllib.error.URLError, OSError) as exc:
            raise GatewayUnavailable(f"{self.url}: {getattr(exc, 'reason', exc)}") from None

    def call(self, method: str, path: str, body: bytes | None = None,
             reconnect: bool = True) -> tuple[int, dict[str, Any]]:
        """``request``, again after a 429 (its Retry-After), a 503 or (``reconnect``) an unreachable
        gateway (a growing wait, RETRIES_503 times); GatewayUnavailable when it stays unreachable."""
        failures = waits = 0
        while True:
            try:
                status, answer, headers = self.request(method, path, body)
            except GatewayUnavailable:
                if failures >= RETRIES_503 or not reconnect:
                    raise
                status, answer, headers = 0, {}, {}
            if status == 429 and waits < MAX_RATE_WAITS:
                waits += 1
                time.sleep(_seconds(headers.get("Retry-After")))
            elif status in (0, 503) and failures < RETRIES_503:
                time.sleep(min(2.0 ** failures, 30.0))
                failures += 1
            else:
                return status, answer

    def agency(self) -> str:
        """The agency the token belongs to (GET /v1/whoami); Unauthenticated if none."""
        # The first call: a gateway that cannot be reached here is a wrong URL more likely than a restart.
        status, answer = self.call("GET", "/v1/whoami", reconnect=False)
        if status == 401:
            raise Unauthenticated("the gateway refused the token: missing, unknown, revoked or expired")
        if status != 200 or not isinstance(answer.get("agency"), str):
            raise GatewayUnavailable(f"{self.url}/v1/whoami answered {status}: {answer}")
        return str(answer["agency"])


def _seconds(retry_after: str | None) -> float:
    """A Retry-After in seconds (a proxy may send an HTTP date instead: then a second)."""
    try:
        return min(max(float(retry_after or 1), 0.0), 60.0)
    except ValueError:
        return 1.0


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"error": "not_json", "detail": raw[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"value": value}


def push_through_gateway(paths: list[Path], gateway: Gateway, catalog: Catalog,
                         on_progress: Callable[[int], None] | None = None, *, encoding: str | None = None,
                         sheet: str | None = None, batch_events: int = 1000,
                         batch_bytes: int = 1 << 20) -> PushSummary:
    """Push every row of every file through ``gateway``. Raises FileError for a file that cannot be
    read (before anything is sent), Unauthenticated and GatewayUnavailable."""
    summary = PushSummary()
    names = Names.of(catalog)
    plans = [file_report(path, encoding, sheet) for path in paths]
    for path, report in zip(paths, plans, strict=True):
        summary.files.append(report)
        log = RejectLog(path)
        rows = read_rows(path, encoding=report.encoding, sheet=report.sheet, names=names)
        try:
            for batch in _batches(rows, batch_events, batch_bytes):
                _send(gateway, batch, summary, log)
                report.rows += len(batch)
                if on_progress:
                    on_progress(len(batch))
        except GatewayUnavailable as exc:
            if summary.sent or summary.rejected:  # not "nothing was sent": say what was
                raise GatewayUnavailable(
                    f"{exc}; stopped after {summary.sent} row(s) were accepted and {sum(summary.rejected.values())} "
                    "rejected; push again: a row sent twice counts once") from None
            raise
        finally:
            if log.close():
                summary.rejected_files.append(log.path)
    summary.delivered = summary.sent
    return summary


def _batches(rows: Iterator[Row], max_events: int, max_bytes: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    size = 0
    for row in rows:
        if batch and (len(batch) >= max_events or size + len(row.payload) + 1 > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += len(row.payload) + 1
    if batch:
        yield batch


def _send(gateway: Gateway, batch: list[Row], summary: PushSummary, log: RejectLog) -> None:
    body = b"\n".join(r.payload for r in batch)
    status, answer = gateway.call("POST", "/v1/events", body)
    if status == 401:
        raise Unauthenticated("the gateway refused the token: missing, unknown, revoked or expired")
    results = answer.get("results")
    if status not in (200, 400, 403) or not isinstance(results, list) or len(results) != len(batch):
        raise GatewayUnavailable(f"the gateway answered {status}: {answer.get('error')}: {answer.get('detail')}")
    for row, result in zip(batch, results, strict=True):
        if result.get("status") == "accepted":
            summary.sent += 1
            continue
        reason = Reason(result["reason"])
        summary.rejected[reason.value] += 1
        summary.rejections.append(Rejection(row.file, row.line, reason, str(result.get("detail", ""))))
        log.write(row.origin, Rejected(reason, str(result.get("detail", ""))), row.payload)
