"""Highland benchmarks: ratios measured side by side, in one run, on this machine.

    .venv/bin/python -m bench.run [--events 200000] [--parts ingest backfill live freshness]

Starts its own stack (state in .highland/bench, ports 27xxx), then measures:
- ingest: raw kafka-python producer vs. `push_files` (validate + produce + dead-letter logic), on the
  same JSON Lines, same producer settings;
- processing: raw aiokafka consumer-group read vs. `highland worker` (1 and 2 processes) from topic to
  rows visible in ClickHouse, sustained (first row to last row; the group join is excluded and
  printed separately);
- CPU: the workers' CPU time per event (their writer processes included), first row to last: on a
  machine shared with other work it moves less than a rate does;
- memory: peak RSS of each worker process, its writer processes included
  (HIGHLAND_WORKER_WRITERS=2 .venv/bin/python -m bench.run ... measures two writers per worker).
Nothing here is asserted: the numbers are printed for people to judge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH_ENV = {
    "HIGHLAND_STATE_DIR": str(ROOT / ".highland" / "bench"),
    "HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:27092",
    "HIGHLAND_CLICKHOUSE_PORT": "27000",
    "HIGHLAND_CLICKHOUSE_HTTP_PORT": "27123",
    "HIGHLAND_WORKER_WEB_PORT": "27066",
}
os.environ.update({k: os.environ.get(k, v) for k, v in BENCH_ENV.items()})

from highland.catalog.loader import default_catalog  # noqa: E402
from highland.sinks.client import connect  # noqa: E402
from highland.sinks.migrate import migrate  # noqa: E402

from highland.settings import Settings, worker_environment  # noqa: E402
from highland.stack import local  # noqa: E402
from highland.topics import ensure_topics  # noqa: E402

FEEDS = [  # (agency, indicator, unit, region choices)
    ("cq_commerce", "ecommerce_turnover", "万元", ["chongqing"]),
    ("cq_comms_admin", "fiber_broadband_ports", "ports", ["yuzhong", "jiangbei", "wanzhou", "fuling"]),
    ("cq_economy_it", "internet_plus_index", "index", ["chongqing"]),
]


def write_events(path: Path, n: int, seed: int = 1, live_since: datetime | None = None) -> None:
    """About 220-byte JSON events, unique ids: a backfill spread over 2016-2020 (every batch touches
    thousands of days), or with ``live_since`` a live feed observed within the hour after it."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            agency, indicator, unit, regions = FEEDS[i % len(FEEDS)]
            if live_since:
                observed = (live_since + timedelta(seconds=rng.randrange(3600))).isoformat()
            else:
                observed = (f"{rng.randint(2016, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                            f"T{rng.randint(0, 23):02d}:00:00+08:00")
            f.write(json.dumps({
                "event_id": f"{'live' if live_since else 'bench'}-{i:09d}", "revision": 0, "agency": agency,
                "indicator": indicator, "region": rng.choice(regions), "value": round(rng.uniform(1, 1000), 3),
                "unit": unit, "observed_at": observed,
            }, ensure_ascii=False) + "\n")


def variant(settings: Settings, tag: str) -> Settings:
    return settings.model_copy(update={
        "topic_events": f"bench.{tag}.events", "topic_dlq": f"bench.{tag}.dlq", "topic_alerts": f"bench.{tag}.alerts",
        "clickhouse_database": f"bench_{tag}", "consumer_group": f"bench-{tag}",
    })


def raw_produce(settings: Settings, path: Path) -> float:
    """kafka-python alone, sending exactly the messages push sends (same value, key, timestamp,
    header, producer settings); keys and timestamps are prepared before the clock starts."""

    from highland.ingest.events import SCHEMA_HEADER
    from kafka import KafkaProducer

    messages = []
    with path.open("rb") as f:
        for line in f:
            e = json.loads(line)
            ts = int(datetime.fromisoformat(e["observed_at"]).timestamp() * 1000)
            messages.append((f"{e['indicator']}|{e['region']}".encode(), line.rstrip(b"\n"), ts))
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                             linger_ms=settings.producer_linger_ms, batch_size=512 * 1024,
                             compression_type=settings.producer_compression,
                             enable_idempotence=settings.producer_idempotence)
    start = time.perf_counter()
    for key, value, ts in messages:
        producer.send(settings.topic_events, key=key, value=value, timestamp_ms=ts, headers=[SCHEMA_HEADER])
    producer.flush()
    elapsed = time.perf_counter() - start
    producer.close()
    return len(messages) / elapsed


def _push_all_agencies(settings: Settings, path: Path) -> int:
    """`highland push` pushes one agency's files; the bench file mixes three agencies, so it was
    split per agency beforehand (untimed); this pushes the three parts one after the other."""
    from highland.ingest.push import push_files

    total = 0
    for agency, *_ in FEEDS:
        part = path.with_name(f"{path.stem}.{agency}.jsonl")
        summary = push_files([part], agency, settings, BENCH_CATALOG)
        assert summary.ok, summary
        total += summary.delivered
    return total


def split_by_agency(path: Path) -> None:
    files = {agency: path.with_name(f"{path.stem}.{agency}.jsonl").open("w") for agency, *_ in FEEDS}
    with path.open() as f:
        for line in f:
            agency = line.split('"agency": "', 1)[1].split('"', 1)[0]
            files[agency].write(line)
    for f in files.values():
        f.close()


async def _aiokafka_consume(settings: Settings, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.topic_events, bootstrap_servers=settings.bootstrap_servers,
                                group_id=f"raw-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                                session_timeout_ms=10_000, heartbeat_interval_ms=1000, max_poll_records=10_000,
                                fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    seen, start = 0, None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            count = sum(len(v) for v in batch.values())
            if count and start is None:
                start = time.perf_counter()
            seen += count
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - start)


@dataclass
class WorkerRun:
    rate: float
    join_s: float
    peak_rss_mb: list[float]
    cpu_us: float  # CPU time of the workers and their writer processes per event, first row to last


def worker_rate(settings: Settings, n: int, workers: int, tmp: Path) -> WorkerRun:
    env = {**os.environ, **worker_environment(settings)}
    procs = [subprocess.Popen([sys.executable, "-m", "highland", "worker"],
                              env={**env, "HIGHLAND_WORKER_DATA_DIR": str(tmp / f"faust-{i}"),
                                   "HIGHLAND_WORKER_WEB_PORT": str(settings.worker_web_port + i)}, cwd=ROOT,
                              stdout=(tmp / f"worker-{i}.log").open("wb"), stderr=subprocess.STDOUT)
             for i in range(workers)]
    ps = [psutil.Process(p.pid) for p in procs]
    peak = [0.0] * workers
    client = connect(settings)
    launched = time.perf_counter()
    first = None
    cpu = [0.0] * workers
    try:
        while True:
            for i, p in enumerate(ps):
                peak[i] = max(peak[i], _rss_mb(p))
                cpu[i] = max(cpu[i], _cpu_s(p))
            (count,) = client.execute("SELECT count() FROM events")[0]
            if count and first is None:
                first = (time.perf_counter(), count, sum(cpu))
            if count >= n:
                break
            if time.perf_counter() - launched > 1800:
                raise TimeoutError(f"worker stuck at {count}/{n}")
            time.sleep(0.2)
        done = time.perf_counter()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    t0, c0, cpu0 = first
    return WorkerRun((n - c0) / max(done - t0, 1e-9), t0 - launched, peak, (sum(cpu) - cpu0) / max(n - c0, 1) * 1e6)


def _rss_mb(worker: psutil.Process) -> float:
    """A worker's resident memory with its writer process's (sinks/writer_process.py)."""
    try:
        return sum(p.memory_info().rss for p in [worker, *worker.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:  # a child that just left
        return 0.0


def _cpu_s(worker: psutil.Process) -> float:
    """CPU seconds a worker has used so far, its writer process's (and any child's) included. On a
    machine shared with other work this moves less than a rate does: it counts the worker's own work
    only, not the time it waited for a core."""
    try:
        own = worker.cpu_times()
        children = sum(c.cpu_times().user + c.cpu_times().system for c in worker.children(recursive=True))
        return own.user + own.system + own.children_user + own.children_system + children
    except psutil.NoSuchProcess:
        return 0.0


BENCH_CATALOG = default_catalog()


def freshness(settings: Settings, rate: int, seconds: float, workers: int,
              tmp: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """p50/p95/p99 seconds from send to queryable, and from the broker's acknowledgement to
    queryable (the worker's and ClickHouse's share), at a steady ``rate`` of new events.

    Every event's (partition, offset) comes back from the producer; a poller reads the highest
    stored offset per partition every 20 ms. Batches cover contiguous offsets of a partition, so an
    event is visible once its partition's stored maximum reaches its offset."""
    import statistics
    import threading

    from highland.ingest.events import SCHEMA_HEADER
    from kafka import KafkaProducer

    env = {**os.environ, **worker_environment(settings)}
    procs = [subprocess.Popen([sys.executable, "-m", "highland", "worker"],
                              env={**env, "HIGHLAND_WORKER_DATA_DIR": str(tmp / f"fresh-{i}"),
                                   "HIGHLAND_WORKER_WEB_PORT": str(settings.worker_web_port + i),
                                   "HIGHLAND_WORKER_BATCH_SECONDS": "0.2"}, cwd=ROOT,
                              stdout=(tmp / f"fresh-{i}.log").open("wb"), stderr=subprocess.STDOUT)
             for i in range(workers)]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5,
                             enable_idempotence=settings.producer_idempotence)
    client = connect(settings)
    sent: list[list[Any]] = []  # [sent at, future, acknowledged at]

    def event(i: int) -> bytes:
        return json.dumps({"event_id": f"fresh-{i}", "agency": "cq_commerce", "indicator": "ecommerce_turnover",
                           "value": 1.0, "unit": "亿元",
                           "observed_at": datetime.now(UTC).isoformat()}).encode()

    def produce(n: int, start_id: int) -> None:
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            future = producer.send(settings.topic_events, key=b"ecommerce_turnover|chongqing",
                                   value=event(start_id + i), headers=[SCHEMA_HEADER])
            entry = [time.perf_counter(), future, None]
            future.add_callback(lambda _meta, entry=entry: entry.__setitem__(2, time.perf_counter()))
            sent.append(entry)
        producer.flush()

    try:
        produce(1, 0)  # warm-up: wait until the group has joined and the first event is visible
        deadline = time.perf_counter() + 120
        while client.execute("SELECT count() FROM events")[0][0] < 1 and time.perf_counter() < deadline:
            time.sleep(0.2)
        sent.clear()
        total = int(rate * seconds)
        thread = threading.Thread(target=produce, args=(total, 1))
        thread.start()
        visible: dict[int, list[tuple[int, float]]] = {}
        done_at = time.perf_counter() + seconds + 60
        while time.perf_counter() < done_at:
            now = time.perf_counter()
            for part, top in client.execute("SELECT kafka_partition, max(kafka_offset) FROM events "
                                            "GROUP BY kafka_partition"):
                visible.setdefault(part, []).append((top, now))
            if not thread.is_alive() and client.execute("SELECT count() FROM events")[0][0] >= total + 1:
                break
            time.sleep(0.02)
        thread.join()
        now = time.perf_counter()  # one last look: the loop may have stopped between two polls
        for part, top in client.execute("SELECT kafka_partition, max(kafka_offset) FROM events "
                                        "GROUP BY kafka_partition"):
            visible.setdefault(part, []).append((top, now))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        producer.close()
    lags, after_ack = [], []
    for sent_at, future, acked_at in sent:
        meta = future.get(timeout=10)
        seen = next((t for top, t in visible.get(meta.partition, []) if top >= meta.offset), None)
        lags.append((seen - sent_at) if seen is not None else float("inf"))
        if acked_at is not None:
            after_ack.append(max(seen - acked_at, 0.0) if seen is not None else float("inf"))
    q, a = statistics.quantiles(lags, n=100), statistics.quantiles(after_ack, n=100)
    return (q[49], q[94], q[98]), (a[49], a[94], a[98])


PARTS = ("ingest", "backfill", "live", "freshness")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A million: per-batch costs grow with what is stored, and at 50,000 events per batch a
    # 200,000-event run times only three batches (docs/streams.md, Throughput).
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep-stack", action="store_true")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="what to measure (default: all)")
    args = parser.parse_args()
    n = args.events

    base = local.with_secrets(Settings())
    started = local.up(base).started
    tmp = base.state_dir / "runs" / uuid.uuid4().hex[:6]
    tmp.mkdir(parents=True)
    data = tmp / "events.jsonl"
    write_events(data, n)
    split_by_agency(data)
    size_mb = data.stat().st_size / 2**20
    print(f"{n:,} events, {size_mb:.0f} MB of JSON Lines, {os.cpu_count()} CPUs, "
          f"{base.worker_writers} writer process(es) per worker (HIGHLAND_WORKER_WRITERS)")

    raw = variant(base, "raw" + tmp.name)
    ensure_topics(raw)
    pushed = variant(base, "push" + tmp.name)
    ensure_topics(pushed)
    migrate(pushed)
    rows = []
    try:
        if "ingest" in args.parts:
            raw_rate = raw_produce(raw, data)
            rows.append(("ingest", "raw kafka-python producer", raw_rate, None))
            rate = n / _timed(lambda: _push_all_agencies(pushed, data))
            rows.append(("ingest", "highland push", rate, rate / raw_rate))
        else:
            raw_produce(pushed, data)  # exactly the messages push would send
        if "backfill" in args.parts:
            rows += _backfill(base, pushed, n, tmp)
        if "live" in args.parts:
            rows += _live_feed(base, n, tmp)
        if "freshness" in args.parts:
            _freshness(base, tmp)
    finally:
        _report(rows)
        if started and not args.keep_stack:
            local.down(base)


def _backfill(base: Settings, pushed: Settings, n: int, tmp: Path) -> list[tuple[str, str, float, float | None]]:
    """The workers on the pushed backfill (2016-2020: every batch touches thousands of series-days)."""
    rows = []
    consume = asyncio.run(_aiokafka_consume(pushed, n))
    rows.append(("processing", "raw aiokafka consumer group", consume, None))
    one = worker_rate(pushed, n, 1, tmp)
    rows.append(("processing", f"worker x1, backfill (join {one.join_s:.0f} s, RSS {one.peak_rss_mb[0]:.0f} MB, "
                 f"CPU {one.cpu_us:.0f} µs/event)", one.rate, one.rate / consume))
    second = variant(base, "two" + tmp.name)
    second = second.model_copy(update={"topic_events": pushed.topic_events})
    migrate(second)
    two = worker_rate(second, n, 2, tmp)
    rss = "/".join(f"{r:.0f}" for r in two.peak_rss_mb)
    rows.append(("processing", f"worker x2, backfill (join {two.join_s:.0f} s, RSS {rss} MB, CPU {two.cpu_us:.0f} "
                 "µs/event)", two.rate, two.rate / consume))
    return rows


def _freshness(base: Settings, tmp: Path) -> None:
    for rate, workers in ((2000, 1), (5000, 2), (10_000, 2)):
        fresh = variant(base, f"fresh{rate}" + tmp.name)
        ensure_topics(fresh)
        migrate(fresh)
        (p50, p95, p99), (a50, a95, a99) = freshness(fresh, rate, 20.0, workers, tmp)
        print(f"freshness at {rate:,}/s, {workers} worker(s): p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s "
              f"(from the broker's ack: {a50:.2f} / {a95:.2f} / {a99:.2f} s)")


def _live_feed(base: Settings, n: int, tmp: Path) -> list[tuple[str, str, float, float | None]]:
    """The same measurement on a live feed (observed in the last hour: few, growing series-days)."""
    live = variant(base, "live" + tmp.name)
    ensure_topics(live)
    migrate(live)
    data = tmp / "live.jsonl"
    write_events(data, n, seed=2, live_since=datetime.now(UTC) - timedelta(hours=1, minutes=5))
    raw_produce(live, data)  # exactly the messages push would send
    consume = asyncio.run(_aiokafka_consume(live, n))
    run = worker_rate(live, n, 1, tmp)
    return [("processing", "raw aiokafka consumer group, live feed", consume, None),
            ("processing", f"worker x1, live feed (RSS {run.peak_rss_mb[0]:.0f} MB, CPU {run.cpu_us:.0f} µs/event)",
             run.rate, run.rate / consume)]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _report(rows) -> None:
    print()
    print(f"{'stage':<11} {'what':<52} {'events/s':>12} {'ratio':>7}")
    for stage, what, rate, ratio in rows:
        print(f"{stage:<11} {what:<52} {rate:>12,.0f} {'' if ratio is None else f'{ratio:6.0%}':>7}")


if __name__ == "__main__":
    main()
