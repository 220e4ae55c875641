"""Wait until the services a one-off job uses answer: Kafka and ClickHouse (`highland setup --wait`).

A deployment starts its parts in any order (Kubernetes has no start order at all, compose only what
depends_on says): the schema job must not give up because the brokers came up a minute after
ClickHouse, or the workers and gateways that wait for it never start.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from highland.settings import Settings

RETRY_S = 2.0


def kafka_problem(settings: Settings) -> str | None:
    """None if the brokers answer a metadata request, else what went wrong."""
    from highland.topics import admin

    try:
        client = admin(settings)
    except Exception as exc:  # kafka-python raises many types; each means "not yet"
        return f"{type(exc).__name__}: {exc}"
    try:
        client.list_topics()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


def clickhouse_problem(settings: Settings) -> str | None:
    """None if ClickHouse answers a query as the configured user, else what went wrong."""
    from highland.sinks.client import connect

    try:
        client = connect(settings, database="default")  # the project's database may not exist yet
        client.execute("SELECT 1")
        client.disconnect()
        return None
    except Exception as exc:  # the driver raises many types; each means "not yet"
        return f"{type(exc).__name__}: {exc}"


CHECKS: dict[str, Callable[[Settings], str | None]] = {"Kafka": kafka_problem, "ClickHouse": clickhouse_problem}


def wait_for_services(settings: Settings, timeout_s: float, say: Callable[[str], None] = print,
                      checks: dict[str, Callable[[Settings], str | None]] | None = None) -> None:
    """Return once every service answers; raise TimeoutError naming those that still don't after
    ``timeout_s`` seconds (checked every RETRY_S)."""
    pending = dict(checks or CHECKS)
    deadline = time.monotonic() + timeout_s
    problems: dict[str, str] = {}
    while True:
        for name, check in list(pending.items()):
            problem = check(settings)
            if problem is None:
                say(f"{name}: answering")
                del pending[name]
            else:
                problems[name] = problem
        if not pending:
            return
        if time.monotonic() >= deadline:
            detail = "; ".join(f"{name}: {problems[name]}" for name in pending)
            raise TimeoutError(f"not answering after {timeout_s:.0f} s: {detail}")
        time.sleep(RETRY_S)
