"""The worker group's self-check (sinks/audit.py), run continuously by one worker of the group.

Each round checks two sets of keys: those stored since the last round (by the worker's receive
time, a grace period behind now, so the writers have finished them), and the next slice of a sweep
that walks every stored key in the events table's order and starts over at the end. A set with
anything wrong is checked again after a pause, and only what is still wrong then is repaired,
counted and reported: an alert of kind ``repair`` per indicator (stored with the others, sent to
the alerts topic and to duty staff's channels, streams/notify.py), and an error in the log.

Where it runs: like the alert evaluator, on the worker that holds partition 0 of the events topic,
on a connection of its own. A worker that takes over starts its recent window a lookback behind
now and its sweep from the start; both only cost time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from highland.catalog.domain import Alert
from highland.catalog.models import Catalog
from highland.ingest import wire
from highland.sinks import alerts as stored_alerts
from highland.sinks.audit import Finding, check, recent_keys_sql, sweep_keys_sql, sweep_slice_end
from highland.sinks.topology import Topology
from highland.streams.notify import Notifier

from highland.settings import Settings

log = logging.getLogger("highland.audit")
REPAIR = "repair"


@dataclass
class AuditStats:
    """Counters of the self-check since the worker started (the worker's health shows them)."""

    rounds: int = 0
    keys_checked: int = 0
    rows_repaired: int = 0
    days_repaired: int = 0
    sweeps_completed: int = 0
    last_round_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Cursor:
    recent_since: int
    sweep_after: tuple[str, str] = ("", "")
    stats: AuditStats = field(default_factory=AuditStats)


class SelfCheck:
    """Rounds of the self-check; ``sink`` runs ``fn(client, db, *args)`` with retries (a
    ClickHouseSink of its own: the check's session tables must not meet another caller's)."""

    def __init__(self, settings: Settings, catalog: Catalog, sink: Any) -> None:
        self.settings = settings
        self.catalog = catalog
        self.sink = sink
        self.notifier = Notifier(settings, catalog)
        now = int(datetime.now(UTC).timestamp())
        self._cursor = _Cursor(recent_since=now - int(settings.audit_lookback_seconds))

    @property
    def stats(self) -> AuditStats:
        return self._cursor.stats

    async def run(self, app: Any | None, now: datetime) -> list[Alert]:
        """One round; returns the repair alerts it raised."""
        cursor = self._cursor
        until = int(now.timestamp() - self.settings.audit_grace_seconds)
        recent = {"since": cursor.recent_since, "until": until, "limit": self.settings.audit_recent_keys}
        sweep = {"agency": cursor.sweep_after[0], "event_id": cursor.sweep_after[1],
                 "limit": self.settings.audit_sweep_keys}
        sweep_end = await self.sink.call("self-check sweep", sweep_slice_end, sweep)
        if sweep_end is not None:
            sweep.update(last_agency=sweep_end[0], last_event_id=sweep_end[1])
        found = [await self._check(recent_keys_sql(self.sink.db), recent),
                 await self._check(sweep_keys_sql(self.sink.db, bounded=sweep_end is not None), sweep)]
        if until > cursor.recent_since:
            cursor.recent_since = until
        if sweep_end is None:
            cursor.sweep_after = ("", "")
            cursor.stats.sweeps_completed += 1
        else:
            cursor.sweep_after = sweep_end
        cursor.stats.rounds += 1
        cursor.stats.last_round_at = now.isoformat()
        alerts = repair_alerts([f for f in found if not f.clean], self.catalog, now)
        if alerts:
            await self.sink.call("repair alerts", stored_alerts.store, alerts)
            if app is not None:
                futures = [await wire.send_with_faust(app.producer, wire.alert_record(self.settings, a))
                           for a in alerts]
                await asyncio.gather(*futures)
        if app is not None and self.notifier.counters is None and getattr(app, "health", None) is not None:
            self.notifier.counters = app.health.counters
        self.notifier.dispatch(alerts, now)
        return alerts

    async def _check(self, keys: str, params: dict[str, Any]) -> Finding:
        tz, topology = self.catalog.plan.timezone, Topology.of(self.settings)
        first: Finding = await self.sink.call("self-check", _check, keys, tz, params, False, topology)
        self.stats.keys_checked += first.keys
        if first.clean:
            return first
        await asyncio.sleep(self.settings.audit_confirm_seconds)
        mended: Finding = await self.sink.call("self-check repair", _check, keys, tz, params, True, topology)
        if not mended.clean:
            self.stats.rows_repaired += mended.missing_rows
            self.stats.days_repaired += len(mended.wrong_days)
            log.error("self-check repaired %d missing observation row(s) and %d series-day(s): %s",
                      mended.missing_rows, len(mended.wrong_days),
                      ", ".join(f"{d.indicator}/{d.region}/{d.day}" for d in mended.wrong_days[:20]))
        return mended


def _check(client: Any, db: str, keys: str, tz: str, params: dict[str, Any], repair: bool,
           topology: Topology) -> Finding:
    return check(client, db, tz, keys, params, repair=repair, topology=topology)


def repair_alerts(findings: list[Finding], catalog: Catalog, now: datetime) -> list[Alert]:
    """One alert per indicator whose series the self-check had to repair."""
    days: dict[str, list[date]] = {}
    rows: dict[str, int] = {}
    for finding in findings:
        for day in finding.wrong_days:
            days.setdefault(day.indicator, []).append(day.day)
        for indicator, n in finding.missing_by_indicator:
            rows[indicator] = rows.get(indicator, 0) + n
    out = []
    for indicator in sorted(days.keys() | rows.keys()):
        touched, missing = days.get(indicator, []), rows.get(indicator, 0)
        parts = ([f"{len(touched)} series-day(s) ({min(touched)} .. {max(touched)})"] if touched else []) + (
            [f"{missing} missing observation row(s)"] if missing else [])
        detail = f"{indicator}: the self-check repaired {' and '.join(parts)}; the stored numbers differed from " \
                 "their events"
        ind = catalog.indicator(indicator)
        ident = hashlib.sha256(f"{indicator}|{REPAIR}|{now.isoformat()}".encode()).hexdigest()[:24]
        out.append(Alert(ident, REPAIR, 0, indicator, ind.agency if ind else "", "", "repaired",
                                       None, None, now.date(), detail, now))
    return out
