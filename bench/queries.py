"""Query latency over a large synthetic history: `highland progress` and every dashboard query.

    .venv/bin/python -m bench.queries [--events 50000000] [--runs 5]

Uses the benchmark stack (state in .highland/bench, ports 27xxx; started if needed). The history is
generated inside ClickHouse (INSERT ... SELECT FROM numbers()) so loading 50 M rows takes minutes,
not an hour of Kafka: 2016-2020 observations of the plan's indicators by their owning agencies,
spread evenly over every series (each regional indicator per district), 2 % of them sent as a
revision 0 and corrected by a revision 1, received over the last hour. The per-day series the
writer would have kept are then built from them with `sinks.daily_series.rebuild` (what migration
0007 does for events stored before 0006). Prints p50/p95 per query.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from highland.sinks.client import connect
from highland.sinks.daily_series import OBSERVATIONS, rebuild
from highland.sinks.migrate import migrate
from highland.sinks.plan_tables import sync_plan_tables
from highland.sinks.progress import progress

from bench.run import BENCH_CATALOG, variant
from highland.settings import Settings
from highland.stack import local

CHUNK = 10_000_000


def _series() -> tuple[list[str], list[str], list[str]]:
    """(indicator, agency, region) per series: every city-wide indicator, the regional one per district."""
    indicators, agencies, regions = [], [], []
    for ind in BENCH_CATALOG.indicators:
        for region in ([d.code for d in BENCH_CATALOG.districts] if ind.regional else ["chongqing"]):
            indicators.append(ind.code)
            agencies.append(ind.agency)
            regions.append(region)
    return indicators, agencies, regions


def _array(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def load(client, db: str, n: int) -> tuple[float, float]:
    """Seconds to insert the events, and to build the per-day series from them."""
    indicators, agencies, regions = _series()
    k = len(indicators)
    pick = f"((number % {k}) + 1)"
    five_years = 5 * 365 * 86400
    start = time.perf_counter()
    for offset in range(0, n, CHUNK):
        rows = min(CHUNK, n - offset)
        # Every 50th observation twice: revision 0 first, then its correction (revision 1).
        for revision, where in ((0, "number % 50 = 0"), (1, "number % 50 = 0"), (0, "number % 50 != 0")):
            client.execute(f"""
                INSERT INTO {db}.events (agency, event_id, revision, indicator, region, value, unit, raw_value,
                                         observed_at, received_at, kafka_partition, kafka_offset)
                SELECT arrayElement({_array(agencies)}, {pick}), concat('q-', toString(number)), {revision},
                       arrayElement({_array(indicators)}, {pick}), arrayElement({_array(regions)}, {pick}),
                       (number % 1000) / 10.0 + {revision}, 'u', (number % 1000) / 10.0 + {revision},
                       toDateTime('2016-01-01 00:00:00') + intDiv(number * {five_years}, {n}),
                       now() - (number % 3600), number % 4, number
                FROM numbers({offset}, {rows}) WHERE {where}""")
    loaded = time.perf_counter()
    rebuild(client, db, BENCH_CATALOG.plan.timezone, chunks=max(1, n // 2_000_000))
    return loaded - start, time.perf_counter() - loaded


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95


def main() -> None:
    from highland.dashboards import definitions
    from highland.dashboards.macros import TimeRange, expand
    from highland.dashboards.queries import Sql

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reload", action="store_true",
                        help="drop the benchmark database and generate the history again")
    args = parser.parse_args()

    base = local.with_secrets(Settings())
    started = local.up(base).started
    settings = variant(base, f"q{args.events}")
    if args.reload:  # from scratch, schema included
        connect(settings, database="default").execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    migrate(settings)
    client = connect(settings)
    db = settings.clickhouse_database
    (have,) = client.execute(f"SELECT count() FROM {db}.events WHERE revision = 0")[0]
    (days,) = client.execute(f"SELECT count() FROM {db}.daily_series")[0]
    if args.reload or have != args.events or not days:
        for table in ("events", OBSERVATIONS, "daily_series"):
            client.execute(f"TRUNCATE TABLE IF EXISTS {db}.{table}")
        inserted, built = load(client, db, args.events)
        print(f"loaded {args.events:,} events in {inserted:.0f} s; built the per-day series in {built:.0f} s")
    (series_days,) = client.execute(f"SELECT count() FROM (SELECT DISTINCT indicator, region, day FROM "
                                    f"{db}.daily_series)")[0]
    print(f"{series_days:,} series-days")
    sync_plan_tables(client, db, BENCH_CATALOG)
    as_of = datetime(2020, 12, 31, tzinfo=UTC).date()
    rows = [("highland progress", *timed(lambda: progress(client, db, BENCH_CATALOG, as_of), args.runs))]
    now = datetime.now(UTC)
    ranges = {definitions.OVERVIEW_UID: TimeRange(datetime(2016, 1, 1, tzinfo=UTC), datetime(2020, 12, 31, tzinfo=UTC)),
              definitions.INDICATOR_UID: TimeRange(datetime(2016, 1, 1, tzinfo=UTC),
                                                   datetime(2020, 12, 31, tzinfo=UTC)),
              definitions.FEEDS_UID: TimeRange(now - timedelta(hours=1), now),
              definitions.ALERTS_UID: TimeRange(now - timedelta(days=7), now)}
    for board in definitions.all_dashboards(Sql.for_catalog(db, BENCH_CATALOG)):
        for panel in board["panels"]:
            for target in panel["targets"]:
                sql = expand(target["rawSql"], ranges[board["uid"]], {"indicator": "ecommerce_turnover"})
                try:
                    p50, p95 = timed(lambda s=sql: client.execute(s), args.runs)
                    rows.append((f"{board['uid']}: {panel['title']}"[:60], p50, p95))
                except Exception as exc:  # report the failure in the table, keep measuring
                    rows.append((f"{board['uid']}: {panel['title']}"[:60] + f" FAILED {type(exc).__name__}",
                                 float("nan"), float("nan")))
    print(f"\n{args.events:,} events, {args.runs} runs per query")
    print(f"{'query':<62} {'p50 ms':>9} {'p95 ms':>9}")
    for name, p50, p95 in rows:
        print(f"{name:<62} {p50 * 1000:>9.0f} {p95 * 1000:>9.0f}")
    if started:
        local.down(base)


if __name__ == "__main__":
    main()
