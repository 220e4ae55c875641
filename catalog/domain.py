"""The monitoring's shared domain types: a progress row, an alert and the alert chains' state.

They sit at the bottom of the layers (docs/architecture.md), beside the trajectory math whose
``Status`` a row carries: the alert decision (streams/), the stores (sinks/) and the board
(dashboards/) all speak them, and none of those may depend on another for its vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

# The alert kinds that form chains; a stale feed's chain holds both STALE and FRESH alerts. Other
# kinds (the self-check's ``repair``, streams/audit.py) are reports, not links of a chain.
STATUS = "status"
STALE = "stale"
FRESH = "fresh"


@dataclass(frozen=True)
class ProgressRow:
    """One indicator's numbers as of a day (CONTRACT.md §2); ``status`` is a ``Status`` value."""

    indicator: str
    name_en: str
    kind: str
    unit: str
    agency: str
    period: str
    actual: float | None
    expected: float | None
    target: float | None
    target_year: int
    baseline: float | None
    pct_of_target: float | None
    status: str
    projected: float | None
    last_observed_at: str | None  # the latest observation at or before the as-of day, any year
    # The feed stopped: nothing observed for longer than the indicator's reporting cadence before the
    # as-of day (``is_stale``); ``last_observed_at`` says since when.
    stale: bool = False
    # Where ``baseline`` comes from (catalog/trajectory.py BaselineSource): "plan", "reported" (the
    # agency's value for the end of the baseline year), "first_report" or "pending" (taken from data,
    # none yet); ``baseline_day`` is the day of the reported value.
    baseline_source: str = "plan"
    baseline_day: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_stale(cadence_days: int, last_report: date | None, as_of: date) -> bool:
    """A feed is stale as of D when its latest observation at or before D is more than its cadence
    (the catalog's ``cadence_days``: 31 monthly, 92 quarterly, 366 yearly) before D, in the plan's
    calendar. A feed that never reported is not stale: it has no data (docs/i18n.md, "Stale")."""
    return last_report is not None and (as_of - last_report).days > cadence_days


@dataclass(frozen=True)
class Alert:
    alert_id: str
    kind: str
    seq: int
    indicator: str
    agency: str
    old_status: str
    new_status: str
    actual: float | None
    expected: float | None
    as_of: date
    detail: str
    created_at: datetime


@dataclass(frozen=True)
class Last:
    """The latest alert of one (indicator, kind): its state and its id, for the chain."""

    state: str
    alert_id: str
    seq: int


@dataclass
class AlertState:
    """Latest state per (indicator, kind); the defaults are 'no_data' and 'fresh'."""

    last: dict[tuple[str, str], Last] = field(default_factory=dict)

    def get(self, indicator: str, kind: str) -> Last:
        default = "no_data" if kind == STATUS else FRESH
        return self.last.get((indicator, kind), Last(default, "", 0))

    def apply(self, alert: Alert) -> None:
        kind = STATUS if alert.kind == STATUS else STALE
        self.last[(alert.indicator, kind)] = Last(alert.new_status, alert.alert_id, alert.seq)
