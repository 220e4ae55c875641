"""Deciding alerts: a status change, or a feed gone stale (and fresh again), exactly once.

The decision is pure: previous state + current progress rows + last arrival per feed -> new alerts.
Where it runs (the worker group's leader, on a timer) and where alerts go (ClickHouse, the alerts
topic, an optional webhook) is the worker's business.

Identity: an alert's id is a hash of (indicator, kind, old, new, previous alert id). Re-evaluating
the same change from the same state gives the same id, so a fail-over between two evaluators
cannot produce two different alerts for one change.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta

from highland.catalog.domain import FRESH, STALE, STATUS, Alert, AlertState, ProgressRow
from highland.catalog.i18n import number
from highland.catalog.models import Catalog


def alert_id(indicator: str, kind: str, old: str, new: str, previous_id: str) -> str:
    return hashlib.sha256(f"{indicator}|{kind}|{old}|{new}|{previous_id}".encode()).hexdigest()[:24]


def _make(state: AlertState, chain: str, kind: str, indicator: str, agency: str, new: str, as_of: date,
          now: datetime, detail: str, actual: float | None = None, expected: float | None = None) -> Alert:
    prev = state.get(indicator, chain)
    return Alert(alert_id(indicator, kind, prev.state, new, prev.alert_id), kind, prev.seq + 1, indicator,
                 agency, prev.state, new, actual, expected, as_of, detail, now)


def status_alerts(state: AlertState, rows: list[ProgressRow], as_of: date, now: datetime) -> list[Alert]:
    """One alert per indicator whose status differs from its last alerted status.

    Losing all data (back to no_data) is not a slip and is not alerted, nor is a baseline still
    being taken from data (``pending``): neither says anything about the plan. The first status
    measured against the path is alerted from whichever of the two came before.
    """
    alerts = []
    for row in rows:
        prev = state.get(row.indicator, STATUS)
        if row.status == prev.state or row.status in ("no_data", "pending"):
            continue
        detail = (f"{row.indicator}: {prev.state} -> {row.status} "
                  f"(actual {number(row.actual)} vs expected {number(row.expected)} {row.unit}, as of {as_of})"
                  if row.actual is not None and row.expected is not None else f"{row.indicator}: {row.status}")
        alerts.append(_make(state, STATUS, STATUS, row.indicator, row.agency, row.status, as_of, now,
                            detail, row.actual, row.expected))
    return alerts


def feed_alerts(state: AlertState, catalog: Catalog, last_arrival: dict[str, datetime], as_of: date,
                now: datetime) -> list[Alert]:
    """A feed (indicator from its owning agency) is stale when nothing arrived for longer than its
    cadence. Feeds that never delivered anything are not stale (they are no_data). One alert when
    it goes stale, one when it is fresh again."""
    alerts = []
    for ind in catalog.indicators:
        arrived = last_arrival.get(ind.code)
        if arrived is None:
            continue
        stale = now - arrived > timedelta(days=ind.cadence_days)
        prev = state.get(ind.code, STALE)
        new = STALE if stale else FRESH
        if new == prev.state:
            continue
        detail = (f"{ind.code}: no event from {ind.agency} since {arrived.isoformat()} "
                  f"(cadence {ind.cadence_days} d)" if stale else
                  f"{ind.code}: {ind.agency} reports again (last event {arrived.isoformat()})")
        alerts.append(_make(state, STALE, new, ind.code, ind.agency, new, as_of, now, detail))
    return alerts
