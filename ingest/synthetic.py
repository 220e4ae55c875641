"""A realistic, deterministic synthetic history 2016-2020 for every indicator, one file per agency.

Each indicator gets a performance profile chosen from its code (stable across runs):
- ``ahead``: runs 2-8 % above the plan's path;
- ``on_track``: within about 3 % of the path;
- ``slipping``: on the path until 2018, then falls behind to about 88 % (at risk);
- ``behind``: about 75-80 % of the path throughout (off track);
- ``silent``: the agency stops reporting after mid-2019 (no data for 2020; shown as stopped since
  2019-06-30), except for the feeds the card names (``LIVE_FEEDS``), which report to the plan's end.
Flows report monthly, everything else quarterly; the regional level is reported per district.
Where the plan states no baseline (``from_data``) the feed follows a path from a notional 2015
value (``notional_anchor``), and half of those levels, indices and ratios also report that value for
the end of 2015, so the demo shows both ways a baseline is taken from data (the reported 2015 value
and the first report; flows do not report 2015, so their first year is ``pending``).
The files also carry what real feeds carry: a few exact duplicates, statistical corrections
(revision 1), and a few bad rows that must be rejected with a reason.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from highland.catalog.models import CITY_WIDE, Catalog, Direction, Indicator, Kind, Shape
from highland.catalog.trajectory import Anchor, BaselineSource, annual_expected, expected, plan_anchor

PROFILES = ("ahead", "on_track", "on_track", "slipping", "behind", "on_track", "slipping", "silent")
# The three feeds the project's card names -- broadband ports, e-commerce turnover and logistics volume
# (international express items and Yuxinou rail freight) -- stay live to the end of the plan.
LIVE_FEEDS = frozenset({"fiber_broadband_ports", "ecommerce_turnover", "intl_express_items", "yuxinou_rail_freight"})
YEARS = range(2016, 2021)


def profile_of(indicator: Indicator) -> str:
    digest = hashlib.sha256(indicator.code.encode()).digest()
    profile = PROFILES[digest[0] % len(PROFILES)]
    return "on_track" if profile == "silent" and indicator.code in LIVE_FEEDS else profile


def notional_anchor(ind: Indicator) -> Anchor:
    """The plan's baseline, or where the synthetic agency stood at the end of 2015 when the plan
    states none: 40 % of the target (2.5 times less), or 1.6 times it where lower is better."""
    stated = plan_anchor(ind)
    if stated is not None:
        return stated
    target = ind.target.value or 0.0
    value = target * 1.6 if ind.direction is Direction.DOWN else target * 0.4
    return Anchor(0.0, value, BaselineSource.REPORTED, date(ind.baseline.year, 12, 31))


def reports_end_of_2015(ind: Indicator) -> bool:
    """Half the levels, indices and ratios without a stated baseline report their 2015 value."""
    return (ind.baseline_from_data and ind.kind is not Kind.FLOW and ind.trajectory is not Shape.FLAT
            and hashlib.sha256(ind.code.encode()).digest()[1] % 2 == 0)


def performance(profile: str, when: date, rng: random.Random) -> float:
    """Share of the plan's path reached at ``when`` (1.0 = exactly on the path)."""
    t = (when - date(2016, 1, 1)).days / 365.25  # 0 .. 5
    if profile == "ahead":
        base = 1.02 + 0.012 * t
    elif profile == "slipping":
        base = 1.0 if t < 2.5 else 1.0 - 0.05 * (t - 2.5)
    elif profile == "behind":
        base = 0.78
    else:
        base = 1.0
    return base * rng.uniform(0.985, 1.015)


def _months(year: int) -> Iterator[date]:
    for month in range(1, 13):
        yield (date(year, 12, 31) if month == 12 else date(year, month + 1, 1) - timedelta(days=1))


def _quarters(year: int) -> Iterator[date]:
    yield from (d for d in _months(year) if d.month in (3, 6, 9, 12))


def _stamp(day: date, tz: ZoneInfo) -> str:
    return datetime(day.year, day.month, day.day, 12, 0, tzinfo=tz).isoformat()


def observations(ind: Indicator, catalog: Catalog, seed: int = 2016) -> Iterator[dict]:
    """The events one indicator's agency sends over the plan period."""
    rng = random.Random(f"{seed}:{ind.code}")
    tz = ZoneInfo(catalog.plan.timezone)
    profile = profile_of(ind)
    regions = [d.code for d in catalog.districts] if ind.regional else [CITY_WIDE]
    weights = [rng.uniform(0.5, 1.5) for _ in regions]
    prior_total: float | None = 100.0  # growth targets: the (unstated) 2015 level
    anchor = notional_anchor(ind)
    if reports_end_of_2015(ind):
        yield from _rows(ind, regions, weights, anchor.value, date(ind.baseline.year, 12, 31), tz)
    for year in YEARS:
        days = list(_months(year) if ind.kind is Kind.FLOW else _quarters(year))
        year_total = 0.0
        for day in days:
            if profile == "silent" and day > date(2019, 6, 30):
                return
            perf = performance(profile, day, rng)
            if ind.kind is Kind.FLOW:
                annual = annual_expected(ind, year, prior_total, anchor)
                value = (annual or 0.0) / len(days) * perf
                year_total += value
            else:
                path = expected(ind, day, None, anchor) or 0.0
                value = path / perf if ind.direction is Direction.DOWN else path * perf
                if ind.unit == "%":
                    value = min(value, 100.0)  # a share never exceeds the whole
            yield from _rows(ind, regions, weights, value, day, tz)
        if ind.trajectory is Shape.GROWTH:
            prior_total = year_total


def _rows(ind: Indicator, regions: list[str], weights: list[float], value: float, day: date,
          tz: ZoneInfo) -> Iterator[dict]:
    """One observation of ``value`` on ``day``, split over the regions by their weights."""
    total_weight = sum(weights)
    for region, weight in zip(regions, weights, strict=True):
        share = value * weight / total_weight
        yield {
            "event_id": f"{ind.code}-{region}-{day.isoformat()}", "revision": 0, "agency": ind.agency,
            "indicator": ind.code, "region": region, "value": round(max(share, 0.0), 6),
            "unit": ind.unit, "observed_at": _stamp(day, tz),
        }


def agency_feeds(catalog: Catalog, seed: int = 2016) -> dict[str, list[dict | str]]:
    """Per agency, its rows in sending order: observations, duplicates, corrections and bad rows."""
    rng = random.Random(seed)
    feeds: dict[str, list[dict | str]] = {a.code: [] for a in catalog.agencies}
    for ind in catalog.indicators:
        for row in observations(ind, catalog, seed):
            rows = feeds[ind.agency]
            rows.append(row)
            roll = rng.random()
            if roll < 0.03:
                rows.append(dict(row))  # the same observation sent twice
            elif roll < 0.05:  # a statistical correction of +/- 2 %
                rows.append({**row, "revision": 1, "value": round(row["value"] * rng.uniform(0.98, 1.02), 6)})
    for agency, rows in feeds.items():
        if not rows:
            continue
        sample = next(r for r in rows if isinstance(r, dict))
        rows.insert(len(rows) // 3, {**sample, "event_id": f"bad-unit-{agency}", "unit": "kg"})
        rows.insert(len(rows) // 2, "{\"event_id\": \"truncated")
        rows.insert(2 * len(rows) // 3, {**sample, "event_id": f"bad-neg-{agency}", "value": -1})
    return {a: r for a, r in feeds.items() if r}


def write_feeds(catalog: Catalog, out_dir: Path, seed: int = 2016) -> dict[str, Path]:
    """Write ``<agency>.jsonl`` files; returns them by agency."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for agency, rows in agency_feeds(catalog, seed).items():
        path = out_dir / f"{agency}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, allow_nan=False)) + "\n")
        files[agency] = path
    return files
