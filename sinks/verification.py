"""``highland verify``: the numbers the worker keeps against their definition.

The per-day series (sinks/daily_series.py) give ``actual(D)`` and the baselines taken from data
(sinks/baselines.py) cheaply; the definition computes both again from every event, deduplicated at
query time (sinks/progress.py ``reference_actuals``, sinks/baselines.py ``reference_baselines``).
Every difference is one line; none means the plan numbers shown are the definition's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date
from typing import Any

from highland.catalog.models import Catalog
from highland.catalog.trajectory import Anchor
from highland.sinks.baselines import query_baselines, reference_baselines
from highland.sinks.progress import Actual, query_actuals, reference_actuals


def _close(x: float | None, y: float | None) -> bool:
    """Equal, sums compared to 1e-9 relative (float addition in another order)."""
    return x == y or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9))


def same_actual(a: Actual | None, b: Actual | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.last_observed == b.last_observed and _close(a.value, b.value) and _close(a.prior_year, b.prior_year)


def same_anchor(a: Anchor | None, b: Anchor | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.source, a.day, a.position) == (b.source, b.day, b.position) and _close(a.value, b.value)


def differences(client: Any, db: str, catalog: Catalog, days: Iterable[date]) -> list[str]:
    """One line per number the series and the events disagree on: each indicator's actual on each
    day, and each baseline taken from data."""
    wrong = []
    for day in days:
        fast, slow = query_actuals(client, db, catalog, day), reference_actuals(client, db, catalog, day)
        for code in sorted(fast.keys() | slow.keys()):
            if not same_actual(fast.get(code), slow.get(code)):
                wrong.append(f"{day} {code}: series {fast.get(code)} vs events {slow.get(code)}")
    fast_base, slow_base = query_baselines(client, db, catalog), reference_baselines(client, db, catalog)
    for code in sorted(fast_base.keys() | slow_base.keys()):
        if not same_anchor(fast_base.get(code), slow_base.get(code)):
            wrong.append(f"baseline {code}: series {fast_base.get(code)} vs events {slow_base.get(code)}")
    return wrong
