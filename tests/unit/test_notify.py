"""streams/notify.py against local HTTP servers that answer as each vendor's group robot does.

Each server records what it was sent (path, query, JSON body) and answers from a script: 200 with
errcode 0, 200 with a non-zero errcode (a refusal, or a rate limit), 500. The DingTalk signature is
recomputed here from its definition, not with the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import threading
import urllib.parse
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from highland.catalog.domain import Alert, AlertState
from highland.catalog.loader import default_catalog
from highland.dashboards import alerting, definitions
from highland.streams import notify
from highland.streams.alerts import feed_alerts
from highland.streams.health import Counters

from highland.settings import Settings

CATALOG = default_catalog()
NOW = datetime(2020, 12, 31, 2, 0, tzinfo=UTC)
SECRET = "SECtest-secret"


class Robot:
    """A vendor's robot endpoint: answers[i] is (HTTP status, JSON body) for the i-th post; the last repeats."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.posts: list[dict[str, Any]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                parts = urllib.parse.urlsplit(self.path)
                posts.append({"path": parts.path, "query": urllib.parse.parse_qs(parts.query),
                              "raw_query": parts.query, "body": json.loads(body),
                              "content_type": self.headers["Content-Type"]})
                status, answer = answers[min(len(posts), len(answers)) - 1]
                data = b"" if status == 204 else json.dumps(answer).encode()  # 204 has no body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def robots():
    made: list[Robot] = []

    def make(*answers: tuple[int, dict[str, Any]]) -> Robot:
        made.append(Robot(list(answers)))
        return made[-1]

    yield make
    for robot in made:
        robot.close()


OK = (200, {"errcode": 0, "errmsg": "ok"})


def status_alert() -> Alert:
    return Alert("a1b2c3", "status", 2, "ecommerce_turnover", "cq_commerce", "on_track", "off_track", 12000.0,
                 18000.0, date(2020, 12, 31), "ecommerce_turnover: on_track -> off_track", NOW)


def settings(spec: str, **extra: Any) -> Settings:
    return Settings(notify=spec, notify_backoff_seconds=0.01, notify_attempts=3, **extra)


def send(spec: str, alert: Alert, clock: float = 1_600_000_000.5, **extra: Any) -> tuple[dict[str, bool], Counters]:
    counters = Counters()
    notifier = notify.Notifier(settings(spec, **extra), CATALOG, counters, clock_s=lambda: clock)
    return asyncio.run(notifier.deliver(alert)), counters


# --- formats ----------------------------------------------------------------------------------------------

def test_wecom_gets_its_markdown_message_in_chinese(robots):
    robot = robots(OK)
    result, counters = send(f"wecom:{robot.base}/cgi-bin/webhook/send?key=K1", status_alert(),
                            grafana_public_url="https://grafana.cq.example/")
    assert list(result.values()) == [True] and counters.notifications_sent == 1
    post = robot.posts[0]
    assert post["query"] == {"key": ["K1"]} and post["content_type"].startswith("application/json")
    content = post["body"]["markdown"]["content"]
    assert post["body"] == {"msgtype": "markdown", "markdown": {"content": content}}
    name = CATALOG.indicator("ecommerce_turnover").name_zh
    assert content.splitlines()[0] == f"**【规划监测】{name}：正常 → 滞后**"
    assert "实际值 12,000 亿元，预期值 18,000 亿元（完成预期的 66.7%）" in content
    assert "状态变化：正常 → 滞后" in content and "数据截至：2020-12-31" in content
    assert "[查看指标看板](https://grafana.cq.example/d/highland-indicator/highland-indicator?" \
           "var-indicator=ecommerce_turnover)" in content


def test_dingtalk_markdown_and_its_signature_recomputed_independently(robots):
    robot = robots(OK)
    clock = 1_600_000_000.123
    result, _ = send(f"dingtalk:{robot.base}/robot/send?access_token=T1", status_alert(), clock,
                     notify_dingtalk_secret=SECRET)
    assert list(result.values()) == [True]
    post = robot.posts[0]
    body = post["body"]
    assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"title", "text"}
    assert body["markdown"]["title"].startswith("【规划监测】") and "正常 → 滞后" in body["markdown"]["text"]
    timestamp = "1600000000123"
    expected = base64.b64encode(hmac.new(SECRET.encode(), f"{timestamp}\n{SECRET}".encode(),
                                         hashlib.sha256).digest()).decode()
    assert post["query"] == {"access_token": ["T1"], "timestamp": [timestamp], "sign": [expected]}
    # On the wire the signature is url-encoded (base64's + / = escaped).
    assert f"sign={urllib.parse.quote_plus(expected)}" in post["raw_query"]


def test_dingtalk_failing_signature_is_a_failure_not_retried(robots, caplog):
    robot = robots((200, {"errcode": 310000, "errmsg": "sign not match"}))
    with caplog.at_level(logging.INFO, "highland.notify"):
        result, counters = send(f"dingtalk:{robot.base}/robot/send?access_token=T1", status_alert(),
                                notify_dingtalk_secret="wrong")
    assert list(result.values()) == [False] and len(robot.posts) == 1
    assert (counters.notifications_sent, counters.notifications_failed, counters.notification_attempts_failed) == \
        (0, 1, 1)
    assert "notify dingtalk alert a1b2c3 attempt 1: code 310000 sign not match" in caplog.text
    assert "gave up after 1 attempt(s)" in caplog.text and "T1" not in caplog.text


def test_feishu_text_message_signed(robots):
    robot = robots((200, {"code": 0, "msg": "success", "data": {}}))
    result, _ = send(f"feishu:{robot.base}/open-apis/bot/v2/hook/H1", status_alert(), 1_600_000_000.9,
                     notify_feishu_secret=SECRET)
    assert list(result.values()) == [True]
    body = robot.posts[0]["body"]
    expected = base64.b64encode(hmac.new(f"1600000000\n{SECRET}".encode(), b"", hashlib.sha256).digest()).decode()
    assert body["timestamp"] == "1600000000" and body["sign"] == expected
    assert body["msg_type"] == "text" and body["content"]["text"].startswith("【规划监测】")


def test_feishu_error_code_in_a_200_is_a_failure(robots):
    robot = robots((200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}))
    result, counters = send(f"feishu:{robot.base}/hook", status_alert())
    assert list(result.values()) == [False] and counters.notifications_failed == 1 and len(robot.posts) == 1


def test_json_channel_posts_the_alert_as_strict_json(robots):
    robot = robots((204, {}))
    result, _ = send(f"json:{robot.base}/alerts", status_alert())
    assert list(result.values()) == [True]
    assert robot.posts[0]["body"]["alert_id"] == "a1b2c3" and robot.posts[0]["body"]["new_status"] == "off_track"


# --- retries ------------------------------------------------------------------------------------------------

def test_500_then_200_is_retried_and_every_attempt_logged(robots, caplog):
    robot = robots((500, {}), OK)
    with caplog.at_level(logging.INFO, "highland.notify"):
        result, counters = send(f"wecom:{robot.base}/send?key=K", status_alert())
    assert list(result.values()) == [True] and len(robot.posts) == 2
    assert (counters.notifications_sent, counters.notification_attempts_failed) == (1, 1)
    assert "notify wecom alert a1b2c3 attempt 1: HTTP 500 (will retry)" in caplog.text
    assert "notify wecom alert a1b2c3 attempt 2: ok" in caplog.text


def test_rate_limit_code_is_retried_until_the_attempts_run_out(robots, caplog):
    robot = robots((200, {"errcode": 45009, "errmsg": "api freq out of limit"}))
    with caplog.at_level(logging.INFO, "highland.notify"):
        result, counters = send(f"wecom:{robot.base}/send?key=K", status_alert())
    assert list(result.values()) == [False] and len(robot.posts) == 3
    assert counters.notifications_failed == 1 and counters.notification_attempts_failed == 3
    assert "gave up after 3 attempt(s): code 45009 api freq out of limit" in caplog.text


def test_an_unreachable_robot_is_retried_then_given_up(robots):
    robot = robots(OK)
    url = f"wecom:{robot.base}/send?key=K"
    robot.close()
    result, counters = send(url, status_alert())
    assert list(result.values()) == [False] and counters.notification_attempts_failed == 3


def test_one_alert_goes_to_every_target(robots):
    wecom, ding = robots(OK), robots(OK)
    result, counters = send(f"wecom:{wecom.base}/s?key=K, dingtalk:{ding.base}/r?access_token=T", status_alert())
    assert list(result.values()) == [True, True] and counters.notifications_sent == 2
    assert len(wecom.posts) == len(ding.posts) == 1


# --- configuration ------------------------------------------------------------------------------------------

def test_the_setting_parses_and_the_old_webhook_is_a_json_alias():
    targets = notify.targets_of(Settings(notify="wecom:https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=a,"
                                                "dingtalk:https://oapi.dingtalk.com/robot/send?access_token=b",
                                         notify_dingtalk_secret=SECRET, alert_webhook_url="http://h/alerts"))
    assert [(t.channel, t.url, t.secret) for t in targets] == [
        ("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=a", ""),
        ("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=b", SECRET),
        ("json", "http://h/alerts", "")]
    assert "key=a" not in repr(targets[0])
    with pytest.raises(ValueError, match="slack"):
        notify.parse_targets("slack:https://hooks.slack.com/x")


def test_the_dashboard_path_is_the_indicator_dashboards():
    assert f"/d/{definitions.INDICATOR_UID}/highland-indicator" == notify.INDICATOR_DASHBOARD_PATH


def test_grafana_sends_nothing_to_duty_staff():
    points = {p["name"]: p for p in alerting.contact_points(CATALOG)["contactPoints"]}
    assert points[alerting.DUTY_RECEIVER]["receivers"] == []
    assert "HIGHLAND_ALERT_WEBHOOK_URL" not in json.dumps(points) and "HIGHLAND_NOTIFY" not in json.dumps(points)


# --- texts --------------------------------------------------------------------------------------------------

def test_stale_fresh_and_repair_texts_are_chinese_with_local_time():
    arrived = datetime(2020, 6, 30, 16, 0, tzinfo=UTC)
    stale = feed_alerts(AlertState(), CATALOG, {"ecommerce_turnover": arrived}, date(2020, 12, 31), NOW)[0]
    msg = notify.message(stale, CATALOG)
    agency = next(a.name_zh for a in CATALOG.agencies if a.code == "cq_commerce")
    assert msg.title.startswith(f"【数据中断】{agency}")
    assert "自 2020-07-01 00:00（北京时间）起未收到数据" in msg.text()
    repair = Alert("r1", "repair", 0, "ecommerce_turnover", "cq_commerce", "", "repaired", None, None,
                   NOW.date(), "ecommerce_turnover: the self-check repaired 2 series-day(s)", NOW)
    text = notify.message(repair, CATALOG).text()
    assert text.startswith("【数据自检修复】") and "已自动修复" in text and "2020-12-31 10:00（北京时间）" in text


def test_quiet_hours_hold_alerts_and_release_them_after(robots):
    robot = robots(OK)

    async def run() -> None:
        notifier = notify.Notifier(settings(f"wecom:{robot.base}/s?key=K", notify_quiet_hours="22-07"), CATALOG)
        notifier.dispatch([status_alert()], datetime(2020, 12, 31, 15, 0, tzinfo=UTC))  # 23:00 in Chongqing
        await notifier.drain()
        assert robot.posts == [] and len(notifier.held) == 1
        notifier.dispatch([], datetime(2020, 12, 31, 23, 30, tzinfo=UTC))  # 07:30
        await notifier.drain()
        assert len(robot.posts) == 1 and notifier.held == []

    asyncio.run(run())
