"""Runs the alert decision on a timer and delivers the alerts it finds.

One worker of the group evaluates (the holder of partition 0 of the events topic), so one change
gives one alert. Every run reads the last alerted state from ClickHouse, so a new evaluator after a
rebalance or a restart continues the same chain. Alerts are stored in ClickHouse first (the record
of truth, idempotent by alert_id), then sent to the alerts topic, then to duty staff's channels
(streams/notify.py, HIGHLAND_NOTIFY) in the background: a slow robot never blocks ingestion. The
worker is the one sender of notifications; Grafana's rules notify nobody (docs/alerts.md).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from highland.catalog.domain import Alert
from highland.catalog.models import Catalog
from highland.ingest import wire
from highland.sinks import alerts as alert_sink
from highland.sinks.baselines import query_baselines
from highland.sinks.plan_tables import sync_if_baselines_changed
from highland.sinks.progress import default_as_of, progress
from highland.streams.alerts import feed_alerts, status_alerts
from highland.streams.notify import Notifier

from highland.settings import Settings

log = logging.getLogger("highland.alerts")


def _as_of(catalog: Catalog, now: datetime) -> date:
    return default_as_of(catalog, now.astimezone(ZoneInfo(catalog.plan.timezone)).date())


def data_version(client: Any, db: str, catalog: Catalog, now: datetime) -> tuple[date, int]:
    """Changes whenever a status could have changed: the as-of date, or the per-day series. Every
    write ends by appending recomputed rows to daily_series, so its row count moves only once the
    numbers are complete (the events INSERT lands before them and would be too early)."""
    (stored,) = client.execute(f"SELECT count() FROM {db}.daily_series")[0]
    return _as_of(catalog, now), int(stored or 0)


def evaluate(client: Any, db: str, catalog: Catalog, now: datetime, *, statuses: bool = True) -> list[Alert]:
    """Decide and store the alerts due at ``now`` (also used directly by tests with a shifted clock).

    ``statuses=False`` checks feed freshness only: the evaluator skips the status query while
    nothing has been written since its last run.
    """
    as_of = _as_of(catalog, now)
    state = alert_sink.load_state(client, db)
    alerts = []
    if statuses:
        anchors = query_baselines(client, db, catalog)
        # Baselines taken from data move the plan's paths: the dashboards read them from the plan tables.
        sync_if_baselines_changed(client, db, catalog, anchors)
        alerts = status_alerts(state, progress(client, db, catalog, as_of, anchors), as_of, now)
    alerts += feed_alerts(state, catalog, alert_sink.last_arrivals(client, db, catalog), as_of, now)
    alert_sink.store(client, db, alerts)
    return alerts


def evaluate_if_changed(client: Any, db: str, catalog: Catalog, now: datetime,
                        last: tuple[date, int] | None) -> tuple[list[Alert], tuple[date, int]]:
    version = data_version(client, db, catalog, now)
    return evaluate(client, db, catalog, now, statuses=version != last), version


class AlertEvaluator:
    def __init__(self, settings: Settings, catalog: Catalog, sink: Any) -> None:
        self.settings = settings
        self.catalog = catalog
        self.sink = sink
        self.notifier = Notifier(settings, catalog)
        self._evaluated: tuple[date, int] | None = None  # data version of the last status evaluation

    async def run(self, app: Any, now: datetime) -> list[Alert]:
        bind_counters(self.notifier, app)
        alerts, self._evaluated = await self.sink.call("alert evaluation", evaluate_if_changed, self.catalog, now,
                                                       self._evaluated)
        if alerts:
            futures = [await wire.send_with_faust(app.producer, wire.alert_record(self.settings, a)) for a in alerts]
            await asyncio.gather(*futures)
        for alert in alerts:
            log.warning("ALERT %s", alert.detail)
        # Also with no new alert: releases those held during quiet hours once they end.
        self.notifier.dispatch(alerts, now)
        return alerts


def bind_counters(notifier: Notifier, app: Any) -> None:
    """Count deliveries in the worker's health counters (the app carries its Health)."""
    health = getattr(app, "health", None)
    if notifier.counters is None and health is not None:
        notifier.counters = health.counters
