"""Alerts in ClickHouse: the state evaluators resume from, storing new ones, listing them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from highland.catalog.domain import FRESH, STALE, STATUS, Alert, AlertState, Last
from highland.catalog.models import Catalog
from highland.sinks.tables import ALERTS

ALERT_COLUMNS = ALERTS.names  # Alert's fields, in the same order


def load_state(client: Any, db: str) -> AlertState:
    rows = client.execute(
        f"SELECT indicator, if(kind = '{STATUS}', '{STATUS}', '{STALE}') AS chain, "
        "argMax(new_status, seq), argMax(alert_id, seq), max(seq) "
        f"FROM {db}.alerts WHERE kind IN ('{STATUS}', '{STALE}', '{FRESH}') GROUP BY indicator, chain")
    return AlertState({(ind, chain): Last(state, aid, seq) for ind, chain, state, aid, seq in rows})


def store(client: Any, db: str, alerts: list[Alert]) -> None:
    if alerts:
        client.execute(ALERTS.insert(db),
                       [tuple(getattr(a, c) for c in ALERT_COLUMNS) for a in alerts])


# Instants are read as DateTime('UTC'): the driver then hands out aware datetimes, the same whatever
# the server's own zone (docs/clickhouse-dialect.md, "server-time-zone").
SELECTED = ", ".join("toTimeZone(created_at, 'UTC') AS created_utc" if c == "created_at" else c
                     for c in ALERT_COLUMNS)


def list_alerts(client: Any, db: str, limit: int = 200) -> list[dict[str, Any]]:
    """Newest first; one row per alert_id however often it was written."""
    rows = client.execute(
        f"SELECT {SELECTED} FROM {db}.alerts "
        "ORDER BY created_at DESC, seq DESC LIMIT 1 BY alert_id LIMIT %(limit)s", {"limit": limit})
    return [asdict(Alert(*r)) for r in rows]


def last_arrivals(client: Any, db: str, catalog: Catalog) -> dict[str, datetime]:
    """When each indicator last received an event from its owning agency (minute precision)."""
    owners = {i.code: i.agency for i in catalog.indicators}
    rows = client.execute(
        f"SELECT indicator, agency, toTimeZone(max(window_start), 'UTC') FROM {db}.event_windows_1m "
        "GROUP BY indicator, agency")
    return {indicator: latest.astimezone(UTC) for indicator, agency, latest in rows
            if owners.get(indicator) == agency}
