"""Alerts delivered where duty staff are: WeCom, DingTalk and Feishu group robots, or plain JSON.

Configured by one setting, ``HIGHLAND_NOTIFY``: a comma-separated list of ``channel:URL``; signing
secrets come from their own settings (HIGHLAND_NOTIFY_DINGTALK_SECRET, HIGHLAND_NOTIFY_FEISHU_SECRET).
``HIGHLAND_ALERT_WEBHOOK_URL`` is a deprecated alias for ``json:URL``.

The robots answer HTTP 200 even when they refuse a message: the error is in the body (``errcode``
for WeCom and DingTalk, ``code`` or ``StatusCode`` for Feishu), so the body is read and non-zero is
a failure. Network errors, 5xx and the vendors' rate-limit codes are retried with exponential
backoff; any other refusal (a wrong key, a failed signature, a missing keyword) would fail the same
way again, so it is logged and given up at once. Every attempt is logged (channel, alert id,
outcome) and counted in the worker's health counters.

Texts are Chinese (docs/alerts.md): the indicator's Chinese name, actual against expected with the
unit, the change in status words, the date and, where a Grafana address is set, a link to the
indicator's dashboard. Times people read are in the plan's zone (Asia/Shanghai), named.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

from highland.catalog import i18n
from highland.catalog.domain import FRESH, STALE, STATUS, Alert
from highland.catalog.models import Catalog
from highland.ingest import wire
from highland.streams.health import Counters
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt, wait_exponential

from highland import strict_json
from highland.settings import Settings

log = logging.getLogger("highland.notify")

CHANNELS = ("wecom", "dingtalk", "feishu", "json")
# The indicator dashboard's path (dashboards/definitions.py INDICATOR_UID; streams may not import
# dashboards, so a unit test holds the two together).
INDICATOR_DASHBOARD_PATH = "/d/highland-indicator/highland-indicator"

# One vocabulary with the board, the CLI's tables and the dashboards (catalog/i18n.py).
STATUS_ZH = {k: v for k, v in i18n.STATUS["zh"].items() if k not in ("stale", "fresh")}

# Codes the vendors return when a robot is sent too much (or the platform is busy): worth a retry.
# WeCom 45009 "api freq out of limit", -1 "system busy"; DingTalk 130101 "send too fast",
# 410100 "send too fast" (newer robots); Feishu 9499 "too many request", 11232 "frequency limited".
RATE_LIMITED = {"wecom": {45009, -1}, "dingtalk": {130101, 410100, -1}, "feishu": {9499, 11232}, "json": set()}


class NotifyError(Exception):
    """A delivery that failed; ``retry`` says whether trying again could help."""

    def __init__(self, outcome: str, retry: bool) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.retry = retry


class _Retryable(NotifyError):
    pass


@dataclass(frozen=True)
class Target:
    channel: str
    url: str
    secret: str = ""

    def __repr__(self) -> str:
        # URLs carry the robot's key: never in a log line whole.
        return f"Target({self.channel}, {redact(self.url)})"


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "…" if parts.query else "", ""))


def parse_targets(spec: str, *, secrets: dict[str, str] | None = None) -> list[Target]:
    """``wecom:https://…,dingtalk:https://…`` -> targets. A URL holding a comma must spell it %2C."""
    secrets = secrets or {}
    targets = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        channel, sep, url = item.partition(":")
        channel = channel.strip().lower()
        if not sep or channel not in CHANNELS or not url.startswith(("http://", "https://")):
            raise ValueError(f"HIGHLAND_NOTIFY: {item.split(':', 1)[0]!r}… is not channel:URL with a channel "
                             f"among {', '.join(CHANNELS)} and an http(s) URL")
        targets.append(Target(channel, url.strip(), secrets.get(channel, "")))
    return targets


def targets_of(settings: Settings) -> list[Target]:
    secrets = {"dingtalk": settings.notify_dingtalk_secret.get_secret_value(),
               "feishu": settings.notify_feishu_secret.get_secret_value()}
    targets = parse_targets(settings.notify or "", secrets=secrets)
    if settings.alert_webhook_url and not any(t.channel == "json" and t.url == settings.alert_webhook_url
                                              for t in targets):
        targets.append(Target("json", settings.alert_webhook_url))
    return targets


# --- texts -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    title: str
    lines: list[str]
    link: str | None

    def markdown(self) -> str:
        link = [f"[查看指标看板]({self.link})"] if self.link else []
        return "\n".join([f"**{self.title}**", *(f"> {line}" for line in self.lines), *link])

    def text(self) -> str:
        link = [f"指标看板：{self.link}"] if self.link else []
        return "\n".join([self.title, *self.lines, *link])


def status_zh(status: str) -> str:
    return STATUS_ZH.get(status, status)


def _local(instant: datetime, tz: str) -> str:
    return f"{instant.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M}（北京时间）" if tz == "Asia/Shanghai" else \
        f"{instant.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M} ({tz})"


def message(alert: Alert, catalog: Catalog, dashboard_url: str | None = None) -> Message:
    ind = catalog.indicator(alert.indicator)
    name = f"{ind.name_zh}（{alert.indicator}）" if ind else alert.indicator
    agency = next((a.name_zh for a in catalog.agencies if a.code == alert.agency), alert.agency)
    unit, tz = (ind.unit if ind else ""), catalog.plan.timezone
    link = (f"{dashboard_url.rstrip('/')}{INDICATOR_DASHBOARD_PATH}?"
            f"{urllib.parse.urlencode({'var-indicator': alert.indicator})}") if dashboard_url else None
    who = f"责任单位：{agency}"
    if alert.kind == STATUS:
        change = f"{status_zh(alert.old_status)} → {status_zh(alert.new_status)}"
        lines = [f"指标：{name}", who, f"状态变化：{change}"]
        if alert.actual is not None and alert.expected is not None:
            share = f"（完成预期的 {alert.actual / alert.expected:.1%}）" if alert.expected else ""
            actual, expected = i18n.number(alert.actual), i18n.number(alert.expected)
            lines.append(f"实际值 {actual} {unit}，预期值 {expected} {unit}{share}")
        lines.append(f"数据截至：{alert.as_of}")
        return Message(f"【规划监测】{ind.name_zh if ind else alert.indicator}：{change}", lines, link)
    since = i18n.alert_since(alert.detail)
    if alert.kind == STALE:
        cadence = f"（报送周期 {ind.cadence_days} 天）" if ind else ""
        last = f"自 {_local(since, tz)}起" if since else "已超过报送周期"
        lines = [f"指标：{name}", who, f"{last}未收到数据{cadence}"]
        return Message(f"【数据中断】{agency}：{ind.name_zh if ind else alert.indicator}", lines, link)
    if alert.kind == FRESH:
        last = f"（最近一次 {_local(since, tz)}）" if since else ""
        lines = [f"指标：{name}", who, f"已恢复报送{last}"]
        return Message(f"【数据恢复】{agency}：{ind.name_zh if ind else alert.indicator}", lines, link)
    # The self-check's repair (streams/audit.py) and any later kind: the English detail kept for staff.
    lines = [f"指标：{name}", who, "系统自检发现已存储的数值与原始事件不一致，已自动修复", f"详情：{alert.detail}",
             f"时间：{_local(alert.created_at, tz)}"]
    return Message(f"【数据自检修复】{ind.name_zh if ind else alert.indicator}", lines, link)


# --- payloads and signatures ---------------------------------------------------------------------------

def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signed mode: base64 HMAC-SHA256 (key: the secret) of "timestamp\\nsecret", url-encoded."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's signed mode: base64 HMAC-SHA256 keyed by "timestamp\\nsecret" over an empty message."""
    return base64.b64encode(hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()


def request(target: Target, alert: Alert, msg: Message, now_s: float) -> tuple[str, bytes]:
    """The URL to post to and the body, in the channel's documented group-robot format."""
    url, body = target.url, _body(target.channel, alert, msg)
    if target.channel == "dingtalk" and target.secret:
        ms = int(now_s * 1000)
        url += f"{'&' if '?' in url else '?'}timestamp={ms}&sign={dingtalk_sign(target.secret, ms)}"
    if target.channel == "feishu" and target.secret:
        s = int(now_s)
        body = {"timestamp": str(s), "sign": feishu_sign(target.secret, s), **body}
    if target.channel == "json":
        return url, wire.alert_json(alert)
    return url, strict_json.dumps(body, ensure_ascii=False).encode()


def _body(channel: str, alert: Alert, msg: Message) -> dict[str, Any]:
    if channel == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": msg.markdown()}}
    if channel == "dingtalk":
        return {"msgtype": "markdown", "markdown": {"title": msg.title, "text": msg.markdown()}}
    if channel == "feishu":
        return {"msg_type": "text", "content": {"text": msg.text()}}
    return {}


def verdict(channel: str, status: int, body: bytes) -> str:
    """"ok", or raise NotifyError saying what went wrong and whether a retry may help."""
    if status >= 500 or status == 429:
        raise _Retryable(f"HTTP {status}", True)
    if not 200 <= status < 300:
        raise NotifyError(f"HTTP {status}: {body[:200].decode(errors='replace')}", False)
    if channel == "json":
        return "ok"
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        raise NotifyError(f"HTTP {status}, unreadable answer: {body[:200].decode(errors='replace')}", False) from None
    code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
    if code in (0, None):
        return "ok"
    text = answer.get("errmsg", answer.get("msg", answer.get("StatusMessage", "")))
    if code in RATE_LIMITED[channel]:
        raise _Retryable(f"code {code} {text}", True)
    raise NotifyError(f"code {code} {text}", False)


# --- delivery ------------------------------------------------------------------------------------------

async def _post(url: str, body: bytes) -> tuple[int, bytes]:
    import aiohttp
    from yarl import URL

    headers = {"content-type": "application/json; charset=utf-8"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                session.post(URL(url, encoded=True), data=body, headers=headers) as resp:
            return resp.status, await resp.read()
    # encoded=True: the URL goes out byte for byte (a signature's %2B must not be re-quoted).
    except aiohttp.ClientError as exc:
        # One exception family for the caller, which keeps aiohttp an import of this function only.
        raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc


class QuietHours:
    """``22-07``: from 22:00 to 07:00 in the plan's zone notifications are held, then sent together."""

    def __init__(self, spec: str | None, tz: str) -> None:
        self.tz = ZoneInfo(tz)
        self.span: tuple[clock, clock] | None = None
        if spec:
            start, _, end = spec.partition("-")
            self.span = (clock(int(start) % 24), clock(int(end) % 24))

    def holds(self, now: datetime) -> bool:
        if self.span is None:
            return False
        start, end = self.span
        local = now.astimezone(self.tz).time()
        return start <= local < end if start <= end else local >= start or local < end


class Notifier:
    """Sends alerts to every configured target, in the background (a slow robot never blocks the
    worker). ``counters`` are the worker's health counters once it is bound to one."""

    def __init__(self, settings: Settings, catalog: Catalog, counters: Counters | None = None,
                 clock_s: Callable[[], float] = time.time) -> None:
        self.targets = targets_of(settings)
        self.catalog = catalog
        self.counters = counters
        self.attempts = settings.notify_attempts
        self.backoff_s = settings.notify_backoff_seconds
        self.dashboard_url = settings.grafana_public_url
        self.quiet = QuietHours(settings.notify_quiet_hours, catalog.plan.timezone)
        self.held: list[Alert] = []
        self._clock = clock_s
        self._tasks: set[asyncio.Task[Any]] = set()
        if settings.alert_webhook_url:
            log.warning("HIGHLAND_ALERT_WEBHOOK_URL is deprecated: set HIGHLAND_NOTIFY=json:<URL> instead")

    def dispatch(self, alerts: list[Alert], now: datetime) -> None:
        """Start delivering ``alerts`` (or hold them in quiet hours); also releases held ones."""
        if not self.targets:
            return
        if self.quiet.holds(now):
            self.held += alerts
            if alerts:
                log.info("quiet hours: %d alert(s) held (%d in all)", len(alerts), len(self.held))
            return
        for alert in [*self.held, *alerts]:
            task = asyncio.create_task(self.deliver(alert))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.held = []

    async def drain(self) -> None:
        """Wait for the deliveries under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def deliver(self, alert: Alert) -> dict[str, bool]:
        msg = message(alert, self.catalog, self.dashboard_url)
        return {f"{t.channel}:{redact(t.url)}": await self._send(t, alert, msg) for t in self.targets}

    async def _send(self, target: Target, alert: Alert, msg: Message) -> bool:
        attempt = 0
        retrying = AsyncRetrying(stop=stop_after_attempt(self.attempts),
                                 wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_s * 60),
                                 retry=retry_if_exception_type(_Retryable))
        try:
            async for trial in retrying:
                with trial:
                    attempt += 1
                    url, body = request(target, alert, msg, self._clock())
                    try:
                        outcome = verdict(target.channel, *await _post(url, body))
                    except (OSError, TimeoutError) as exc:
                        self._log(target, alert, attempt, f"network error: {exc or type(exc).__name__}", True)
                        raise _Retryable(str(exc), True) from exc
                    except NotifyError as exc:
                        self._log(target, alert, attempt, exc.outcome, exc.retry)
                        raise
                    self._log(target, alert, attempt, outcome, False)
        except (NotifyError, RetryError) as exc:
            last = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
            self._count(sent=False)
            log.error("notify %s alert %s: gave up after %d attempt(s): %s", target.channel, alert.alert_id,
                      attempt, last)
            return False
        self._count(sent=True)
        return True

    def _log(self, target: Target, alert: Alert, attempt: int, outcome: str, retry: bool) -> None:
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(level, "notify %s alert %s attempt %d: %s%s", target.channel, alert.alert_id, attempt, outcome,
                " (will retry)" if retry and attempt < self.attempts else "")
        if self.counters is not None and outcome != "ok":
            self.counters.notification_attempts_failed += 1

    def _count(self, *, sent: bool) -> None:
        if self.counters is None:
            return
        if sent:
            self.counters.notifications_sent += 1
        else:
            self.counters.notifications_failed += 1
