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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from highland.catalog.models import Catalog, Indicator
from highland.catalog.trajectory import Anchor, anchor_for, expected, position, span, year_fraction
from highland.sinks.baselines import query_baselines
from highland.sinks.tables import PLAN_DISTRICTS, PLAN_INDICATORS, PLAN_TRAJECTORY, PLAN_VERSIONS

# The columns of each versioned table a sync fills, besides the version it writes them under.
INDICATOR_COLUMNS = PLAN_INDICATORS.without("version")
TRAJECTORY_COLUMNS = PLAN_TRAJECTORY.without("version")
DISTRICT_COLUMNS = PLAN_DISTRICTS.without("version")
VERSIONED_TABLES = (PLAN_INDICATORS.name, PLAN_TRAJECTORY.name, PLAN_DISTRICTS.name)


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


def indicator_row(catalog: Catalog, ind: Indicator, resolved: Anchor | None = None) -> tuple[Any, ...]:
    thresholds = catalog.thresholds_for(ind)
    anchor = anchor_for(ind, resolved)
    baseline = anchor.value if anchor is not None else 0.0
    target = ind.target.value
    # path_base is where the path starts (the plan's baseline or the one taken from data): the
    # projection in SQL needs that same start (catalog/trajectory.py, projected).
    return (ind.code, ind.name_zh, ind.name_en, ind.section, ind.unit, ind.kind.value, ind.direction.value,
            ind.trajectory.value, baseline, int(anchor is not None), baseline, ind.path_start_year,
            target if target is not None else 0.0, int(target is not None), ind.target.year,
            ind.annual_growth or 0.0, thresholds.on_track, thresholds.at_risk, ind.agency, ind.cadence_days,
            int(ind.regional))


def path_position(ind: Indicator, day: date, anchor: Anchor | None) -> float:
    """How far along its path ``day`` is, in plan years scaled to the whole span: ``position(D)`` for a
    path anchored at the baseline year's end; for one anchored later (a first report at p0) the
    elapsed ``p - p0`` stretched by ``span / (span - p0)``, so the dashboards' projection
    ``path_base + (actual - path_base) * span / position`` is the straight line from that anchor."""
    whole = span(ind)
    if anchor is None or anchor.position == 0:
        return position(ind, day)
    if anchor.position >= whole:
        return float(whole)
    return (position(ind, day) - anchor.position) * whole / (whole - anchor.position)


def trajectory_rows(ind: Indicator, days: Sequence[date], anchor: Anchor | None = None) -> Iterator[tuple[Any, ...]]:
    for day in days:
        # None for growth targets (they need last year's actual) and baselines still pending
        value = expected(ind, day, None, anchor)
        yield (ind.code, day, value if value is not None else 0.0, int(value is not None), year_fraction(day),
               path_position(ind, day, anchor_for(ind, anchor)))


def plan_rows(catalog: Catalog, anchors: Mapping[str, Anchor] | None = None) -> PlanRows:
    """The plan tables' rows; ``anchors``: baselines taken from data (sinks/baselines.py), by code."""
    days = plan_days(catalog)
    found = anchors or {}
    return PlanRows(
        indicators=[indicator_row(catalog, ind, found.get(ind.code)) for ind in catalog.indicators],
        trajectory=[row for ind in catalog.indicators for row in trajectory_rows(ind, days, found.get(ind.code))],
        districts=[(d.code, d.name_zh, d.name_en) for d in catalog.districts],
    )


def recorded_versions(client: Any, db: str) -> list[tuple[str, int]]:
    """(version, seq) of every recorded sync, newest first (the first one is current)."""
    rows = client.execute(f"SELECT version, seq FROM {db}.plan_versions ORDER BY seq DESC, version DESC")
    return [(v, int(s)) for v, s in rows]


def sync_plan_tables(client: Any, db: str, catalog: Catalog, anchors: Mapping[str, Anchor] | None = None) -> PlanSync:
    """Make the catalog's plan numbers current in ``db``; does nothing if they already are.

    Baselines the plan leaves to the data are read from ``db`` unless ``anchors`` gives them: the
    worker's evaluator syncs again whenever they change, so the dashboards' paths are progress's.
    """
    if anchors is None:
        anchors = query_baselines(client, db, catalog)
    rows = plan_rows(catalog, anchors)
    recorded = recorded_versions(client, db)
    result = PlanSync(rows.version, True, len(rows.indicators), len(rows.trajectory))
    if recorded and recorded[0][0] == rows.version:
        return PlanSync(rows.version, False, result.indicators, result.trajectory_rows)
    for table, columns, data in rows.tables():
        client.execute(f"INSERT INTO {db}.{table} (version, {', '.join(columns)}) VALUES",
                       [(rows.version, *row) for row in data])
    # Recorded last: until this row exists, readers keep the previous version's complete rows.
    seq = (recorded[0][1] + 1) if recorded else 1
    client.execute(PLAN_VERSIONS.insert(db),
                   [(rows.version, seq, datetime.now(UTC).replace(microsecond=0),  # aware: right in any server zone
                     len(rows.indicators), len(rows.trajectory))])
    _drop_superseded(client, db, rows.version, recorded)
    return result


# What this process last made current, per (database, plan): the anchors it synced. Building the
# rows computes every plan day of every indicator, so the evaluator syncs only when a baseline
# taken from data moves.
_synced: dict[tuple[str, str], frozenset[tuple[str, Anchor]]] = {}


def sync_if_baselines_changed(client: Any, db: str, catalog: Catalog, anchors: Mapping[str, Anchor]) -> bool:
    """``sync_plan_tables`` with ``anchors`` unless this process already synced exactly them."""
    key, now = (db, catalog.plan.code), frozenset(anchors.items())
    if _synced.get(key) == now:
        return False
    sync_plan_tables(client, db, catalog, anchors)
    _synced[key] = now
    return True


def _drop_superseded(client: Any, db: str, current: str, recorded: list[tuple[str, int]]) -> None:
    """Delete versions that were complete and are now superseded (storage only: readers never see
    them). Versions not recorded are left alone: another sync may be writing one right now."""
    old = sorted({v for v, _ in recorded if v != current})
    if not old:
        return
    listed = ", ".join(f"'{v}'" for v in old)  # hex digests: safe to inline
    for table in (*VERSIONED_TABLES, "plan_versions"):
        client.execute(f"ALTER TABLE {db}.{table} DELETE WHERE version IN ({listed})")
