"""The plan catalog as ClickHouse tables (migration 0005), for dashboards and Grafana alert rules.

SQL alone cannot know a target, a threshold or the plan's path, so they are written here from the
catalog, with ``expected(D)`` computed by catalog/trajectory.py for every plan day: the dashboards
then compare events with exactly the numbers ``highland progress`` uses.

A sync is exact without relying on merges and safe to repeat (see the migration): all rows go in
under a content-derived ``version``, and only then is that version recorded in ``plan_versions``,
which is what makes it current. Syncing an unchanged catalog writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from highland.catalog.models import Catalog, Indicator
from highland.catalog.trajectory import expected, position, year_fraction

INDICATOR_COLUMNS = ("indicator", "name_zh", "name_en", "section", "unit", "kind", "direction", "trajectory",
                     "baseline", "has_baseline", "path_base", "path_base_year", "target", "has_target",
                     "target_year", "annual_growth", "on_track", "at_risk", "agency", "cadence_days", "regional")
TRAJECTORY_COLUMNS = ("indicator", "day", "expected", "has_expected", "year_fraction", "position")
DISTRICT_COLUMNS = ("district", "name_zh", "name_en")
VERSIONED_TABLES = ("plan_indicators", "plan_trajectory", "plan_districts")


@dataclass(frozen=True)
class PlanRows:
    """Everything one sync writes, and the version (content hash) it is written under."""

    indicators: list[tuple[Any, ...]]
    trajectory: list[tuple[Any, ...]]
    districts: list[tuple[Any, ...]]
    version: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        for table in (self.indicators, self.trajectory, self.districts):
            for row in table:
                digest.update(repr(row).encode())
            digest.update(b"\x00")  # table boundary: moving a row between tables changes the hash
        object.__setattr__(self, "version", digest.hexdigest())

    def tables(self) -> Iterator[tuple[str, Sequence[str], list[tuple[Any, ...]]]]:
        yield "plan_indicators", INDICATOR_COLUMNS, self.indicators
        yield "plan_trajectory", TRAJECTORY_COLUMNS, self.trajectory
        yield "plan_districts", DISTRICT_COLUMNS, self.districts


@dataclass(frozen=True)
class PlanSync:
    version: str
    changed: bool
    indicators: int
    trajectory_rows: int


def plan_days(catalog: Catalog) -> list[date]:
    """Every day of the plan period: 1 January of the baseline year to 31 December of the target year."""
    first, last = date(catalog.plan.baseline_year, 1, 1), date(catalog.plan.target_year, 12, 31)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def indicator_row(catalog: Catalog, ind: Indicator) -> tuple[Any, ...]:
    thresholds = catalog.thresholds_for(ind)
    base_value = ind.baseline.value if ind.baseline is not None else None
    baseline = base_value if base_value is not None else 0.0
    target = ind.target.value
    # The path starts from the baseline, or from 0 at the end of the plan's baseline year
    # (catalog/trajectory.py, _baseline): the projection in SQL needs that same start.
    return (ind.code, ind.name_zh, ind.name_en, ind.section, ind.unit, ind.kind.value, ind.direction.value,
            ind.trajectory.value, baseline, int(base_value is not None), baseline, ind.path_start_year,
            target if target is not None else 0.0, int(target is not None), ind.target.year,
            ind.annual_growth or 0.0, thresholds.on_track, thresholds.at_risk, ind.agency, ind.cadence_days,
            int(ind.regional))


def trajectory_rows(ind: Indicator, days: Sequence[date]) -> Iterator[tuple[Any, ...]]:
    for day in days:
        value = expected(ind, day)  # None for growth targets: they need last year's actual
        yield (ind.code, day, value if value is not None else 0.0, int(value is not None), year_fraction(day),
               position(ind, day))


def plan_rows(catalog: Catalog) -> PlanRows:
    days = plan_days(catalog)
    return PlanRows(
        indicators=[indicator_row(catalog, ind) for ind in catalog.indicators],
        trajectory=[row for ind in catalog.indicators for row in trajectory_rows(ind, days)],
        districts=[(d.code, d.name_zh, d.name_en) for d in catalog.districts],
    )


def recorded_versions(client: Any, db: str) -> list[tuple[str, int]]:
    """(version, seq) of every recorded sync, newest first (the first one is current)."""
    rows = client.execute(f"SELECT version, seq FROM {db}.plan_versions ORDER BY seq DESC, version DESC")
    return [(v, int(s)) for v, s in rows]


def sync_plan_tables(client: Any, db: str, catalog: Catalog) -> PlanSync:
    """Make the catalog's plan numbers current in ``db``; does nothing if they already are."""
    rows = plan_rows(catalog)
    recorded = recorded_versions(client, db)
    result = PlanSync(rows.version, True, len(rows.indicators), len(rows.trajectory))
    if recorded and recorded[0][0] == rows.version:
        return PlanSync(rows.version, False, result.indicators, result.trajectory_rows)
    for table, columns, data in rows.tables():
        client.execute(f"INSERT INTO {db}.{table} (version, {', '.join(columns)}) VALUES",
                       [(rows.version, *row) for row in data])
    # Recorded last: until this row exists, readers keep the previous version's complete rows.
    seq = (recorded[0][1] + 1) if recorded else 1
    client.execute(f"INSERT INTO {db}.plan_versions (version, seq, synced_at, indicators, trajectory_rows) VALUES",
                   [(rows.version, seq, datetime.now(UTC).replace(microsecond=0),  # aware: right in any server zone
                     len(rows.indicators), len(rows.trajectory))])
    _drop_superseded(client, db, rows.version, recorded)
    return result


def _drop_superseded(client: Any, db: str, current: str, recorded: list[tuple[str, int]]) -> None:
    """Delete versions that were complete and are now superseded (storage only: readers never see
    them). Versions not recorded are left alone: another sync may be writing one right now."""
    old = sorted({v for v, _ in recorded if v != current})
    if not old:
        return
    listed = ", ".join(f"'{v}'" for v in old)  # hex digests: safe to inline
    for table in (*VERSIONED_TABLES, "plan_versions"):
        client.execute(f"ALTER TABLE {db}.{table} DELETE WHERE version IN ({listed})")
