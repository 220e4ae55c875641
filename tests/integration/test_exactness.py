"""Plan numbers are exact whatever client produced the records (CONTRACT §1.1, "Partitioning is a speed
hint, never a correctness premise"; §2, "What a number means").

Agencies push with whatever Kafka client they have. librdkafka (``confluent-kafka``) places a keyed
record by CRC32 ("consistent_random"), kafka-python by murmur2: the same key ``indicator|region``
lands on different partitions depending on who sent it. And a revision that moves an observation to
another region, indicator, day or year changes its key whoever sends it. So two revisions of one
(agency, event_id) are routinely on two partitions at once, read by two workers (or two writer
processes of one worker) at the same time. The promise tested here: none of this changes a number.

The scenario: two producer clients that partition differently write one feed straight to an events
topic of eight partitions, with the contract's key, timestamp and schema header. The feed holds a few
thousand observations of flows, city-wide and regional levels, indices and ratios of three agencies,
with cross-client duplicates, revisions 1 and 2 of which many move the observation (to another
region, indicator, day or year), lower revisions arriving after higher ones, and both revisions of an
observation sent back to back by the two clients, so that they are in flight on two partitions at the
same time. Real ``highland worker`` processes store it: two workers in one group, one of them killed
with SIGKILL mid-run and restarted; then, separately, one worker with two writer processes.

The answer is an independent model of CONTRACT §2 written below from the records as sent (it shares
nothing with the project's queries). The project's numbers are read as users see them: ``highland
progress --as-of D --json`` at the year ends and mid-year dates, and the public function behind it
(``sinks.progress.progress``) for every day the feed touched, where an observation was, or was moved
from or to. Between two touched days no number can change, except that flows start afresh on 1
January, which is among the dates checked: so these dates stand for every day of the plan.
Integers must be equal, other numbers equal to a relative 1e-9 (sums of floats in another order).
"""

from __future__ import annotations

import json
import math
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import Message
from confluent_kafka import Producer as LibrdkafkaProducer
from highland.catalog.loader import default_catalog
from highland.catalog.models import Catalog, Kind
from highland.ingest.events import Accepted, validate
from highland.sinks.baselines import needs_data_baseline, query_baselines, reference_baselines
from highland.sinks.client import connect
from highland.sinks.progress import progress
from kafka import KafkaAdminClient, KafkaProducer

from highland.settings import Settings
from highland.topics import ensure_topics
from tests.conftest import ROOT
from tests.integration.support import WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration

CATALOG = default_catalog()
PLAN_TZ = ZoneInfo(CATALOG.plan.timezone)  # Asia/Shanghai: the plan's calendar
CITY = "chongqing"
PARTITIONS = 8
YEARS = (2017, 2018, 2019)
CLIENTS = ("librdkafka", "kafka-python")  # CRC32 and murmur2 partitioners
SCHEMA_HEADER = ("schema", b"metric-event/1")
# Small batches: more batches, so more of them are written at the same time by different writers.
BATCH_SIZE = 200
# After every record is committed by the group, how long the numbers may take to settle (a write
# path that reconciles after its insert may do so a little later). The same bound on a cluster: the
# writer reads only once every replica holds what returned (docs/streams.md, "On a cluster"), so
# nothing is left for the self-check, whose cycle (30 s, 30 s grace, 5 s confirmation) is longer.
SETTLE_S = 30.0
RELATIVE = 1e-9


# --- the feed --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    """An indicator the feed writes: the units it uses and the range of its values (in the indicator's
    own unit). An integral indicator is sent only in units of factor 1, so its numbers are exact."""

    indicator: str
    units: tuple[str, ...]
    low: float
    high: float
    integral: bool = False


SERIES = {s.indicator: s for s in (
    # cq_comms_admin: a flow, a regional level, city-wide levels and a ratio
    Series("telecom_business_volume", ("亿元", "万元"), 1, 80),
    Series("fiber_broadband_ports", ("ports", "个"), 1_000, 500_000, integral=True),
    Series("direct_connect_cities", ("cities", "个"), 15, 25, integral=True),
    Series("backbone_interconnect_bw", ("Gbit/s", "Tbit/s"), 200, 900),
    Series("internet_penetration", ("%", "fraction"), 40, 95),
    # cq_economy_it: flows, indices and a ratio
    Series("software_it_revenue", ("亿元", "万元"), 5, 200),
    Series("bigdata_cloud_output", ("亿元", "元"), 1, 60),
    Series("internet_plus_index", ("index",), 3, 5),
    Series("two_integration_index", ("index",), 50, 90),
    Series("industrial_internet_access_rate", ("%", "fraction"), 10, 60),
    # cq_commerce: flows and a ratio
    Series("ecommerce_turnover", ("亿元", "万元"), 1, 120),
    Series("crossborder_ecommerce", ("亿元", "万元"), 0.5, 30),
    Series("sme_ecommerce_rate", ("%", "fraction"), 20, 80),
)}
# How often each indicator is picked for a new observation.
WEIGHTS = {"telecom_business_volume": 3, "fiber_broadband_ports": 5, "direct_connect_cities": 1,
           "backbone_interconnect_bw": 1, "internet_penetration": 1, "software_it_revenue": 3,
           "bigdata_cloud_output": 2, "internet_plus_index": 1, "two_integration_index": 1,
           "industrial_internet_access_rate": 1, "ecommerce_turnover": 3, "crossborder_ecommerce": 2,
           "sme_ecommerce_rate": 1}
DISTRICTS = ("yuzhong", "jiangbei", "wanzhou", "yubei", "nanan", "shapingba")
# Plan-local times of day, few on purpose: levels of one region then often tie on observed_at.
LOCAL_TIMES = (clock(0, 0), clock(0, 30), clock(9, 0), clock(18, 0), clock(23, 30))
# observed_at is written with any offset; the plan's day is Shanghai's (2018-01-01 00:30 there is
# 2017-12-31T16:30:00+00:00).
OFFSETS = (timedelta(hours=8), timedelta(0), timedelta(hours=-5), timedelta(hours=5, minutes=45))
# What a revision changes besides the value ("region" moves only the regional indicator).
MOVES = ("value", "region", "indicator", "day", "year")


@dataclass(frozen=True)
class Record:
    """One record to send, and the client that sends it."""

    client: str
    event: dict[str, Any]

    @property
    def payload(self) -> bytes:
        return json.dumps(self.event, ensure_ascii=False).encode()

    @property
    def key(self) -> bytes:  # CONTRACT §1: indicator|region
        return f"{self.event['indicator']}|{self.event.get('region', CITY)}".encode()

    @property
    def timestamp_ms(self) -> int:  # CONTRACT §1: observed_at in epoch ms
        return int(datetime.fromisoformat(self.event["observed_at"]).timestamp() * 1000)


@dataclass
class Feed:
    chunks: list[list[Record]]

    @property
    def records(self) -> list[Record]:
        return [r for chunk in self.chunks for r in chunk]


class FeedBuilder:
    """A deterministic feed (one seed, one feed)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.days = {year: self._days_of(year) for year in YEARS}
        self.by_agency: dict[str, list[str]] = defaultdict(list)
        for code in SERIES:
            self.by_agency[CATALOG.indicator(code).agency].append(code)

    def _days_of(self, year: int) -> list[date]:
        start = date(year, 1, 1)
        picked = {start + timedelta(days=self.rng.randrange(365)) for _ in range(40)}
        return sorted(picked | {date(year, 1, 1), date(year, 6, 30), date(year, 12, 31)})

    def observed_at(self, day: date) -> str:
        local = datetime.combine(day, self.rng.choice(LOCAL_TIMES), PLAN_TZ)
        return local.astimezone(timezone(self.rng.choice(OFFSETS))).isoformat()

    def value_and_unit(self, indicator: str) -> tuple[float, str]:
        spec = SERIES[indicator]
        unit = self.rng.choice(spec.units)
        canonical = (float(self.rng.randint(int(spec.low), int(spec.high))) if spec.integral
                     else round(self.rng.uniform(spec.low, spec.high), 4))
        if spec.integral:
            return canonical, unit  # units of factor 1 only
        factor = 1.0 if unit == CATALOG.indicator(indicator).unit else CATALOG.indicator(indicator).unit_aliases[unit]
        return round(canonical / factor, 6), unit

    def region_of(self, indicator: str) -> str:
        """A regional level also takes a city-wide report now and then (docs/numbers.md, "level")."""
        return self.rng.choice((*DISTRICTS, CITY)) if CATALOG.indicator(indicator).regional else CITY

    def observation(self, n: int) -> dict[str, Any]:
        indicator = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        day = self.rng.choice(self.days[self.rng.choice(YEARS)])
        value, unit = self.value_and_unit(indicator)
        return {"event_id": f"obs-{n:05d}", "revision": 0, "agency": CATALOG.indicator(indicator).agency,
                "indicator": indicator, "region": self.region_of(indicator), "value": value, "unit": unit,
                "observed_at": self.observed_at(day)}

    def revise(self, e: dict[str, Any], revision: int) -> dict[str, Any]:
        """A correction of ``e``: a new value, and often a new place (another key, so another partition)."""
        move = self.rng.choice(MOVES)
        indicator, region, observed_at = e["indicator"], e["region"], e["observed_at"]
        day = datetime.fromisoformat(observed_at).astimezone(PLAN_TZ).date()
        if move == "region" and CATALOG.indicator(indicator).regional:
            region = self.rng.choice([d for d in (*DISTRICTS, CITY) if d != region])
        elif move == "indicator":  # the same agency must own both
            indicator = self.rng.choice([c for c in self.by_agency[e["agency"]] if c != indicator])
            region = self.region_of(indicator)
        elif move == "day":
            observed_at = self.observed_at(self.rng.choice([d for d in self.days[day.year] if d != day]))
        elif move == "year":
            year = self.rng.choice([y for y in YEARS if y != day.year])
            observed_at = self.observed_at(self.rng.choice(self.days[year]))
        value, unit = self.value_and_unit(indicator)
        return {**e, "revision": revision, "indicator": indicator, "region": region, "value": value,
                "unit": unit, "observed_at": observed_at}

    def build(self, observations: int, chunks: int) -> Feed:
        """Each observation starts in a random chunk, sent by a random client; 20 % are sent by both
        clients (a cross-client duplicate). 40 % are revised: revision 1, and for a third of them also
        revision 2, sent in the order 1, 2 or (half of the time) 2, 1, the lower revision arriving
        late. Each revision is sent by the other client than the one before it: most often right
        behind the previous one (two revisions in flight at once, on two partitions), else in one of
        the next chunks; 15 % of the revisions are sent by both clients."""
        groups: list[list[list[tuple[str, dict[str, Any]]]]] = [[] for _ in range(chunks + 4)]
        for n in range(observations):
            first = self.observation(n)
            at = self.rng.randrange(chunks)
            sender = self.rng.choice(CLIENTS)
            group = [(sender, first)]
            groups[at].append(group)
            if self.rng.random() < 0.2:
                group.append((other(sender), first))
            if self.rng.random() >= 0.4:
                continue
            one = self.revise(first, 1)
            follow = [one]
            if self.rng.random() < 0.33:
                two = self.revise(one, 2)
                follow = [two, one] if self.rng.random() < 0.5 else [one, two]
            for k, revision in enumerate(follow):
                if self.rng.random() >= (0.65 if k == 0 else 0.5):  # not right behind: in a later chunk
                    at += self.rng.randint(1, 2) if k == 0 else 1
                    group = []
                    groups[at].append(group)
                sender = other(sender)
                group.append((sender, revision))
                if self.rng.random() < 0.15:  # this revision from both clients (two partitions once more)
                    group.append((other(sender), revision))
        chunked: list[list[Record]] = []
        for chunk in groups:
            self.rng.shuffle(chunk)  # a chunk's groups in any order, each group's records back to back
            if chunk:
                chunked.append([Record(client, e) for group in chunk for client, e in group])
        return Feed(chunked)


def other(client: str) -> str:
    return CLIENTS[1 - CLIENTS.index(client)]


# --- the independent model of CONTRACT §2 ------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    indicator: str
    region: str
    value: float  # in the indicator's own unit
    observed: datetime  # an instant
    day: date  # the plan's (Shanghai) day
    revision: int
    event_id: str


class ContractModel:
    """CONTRACT §2 from the events as sent. Per (agency, event_id) the highest revision counts (the same
    revision twice is one; a lower one arriving later changes nothing), wherever it moved the
    observation. actual(D): a flow is the sum of its observations from 1 January of D's year through D
    (no observation in that span: no data); a level is, per region, the latest observation at or
    before D (by observed_at; on a tie the higher revision, then the greater event_id, as
    docs/numbers.md fixes it); where the indicator is regional the latest city-wide one once there is
    one, else the sum over the districts; elsewhere the city-wide one; an index or ratio is the latest
    city-wide observation at or before D."""

    def __init__(self, events: Iterable[dict[str, Any]], catalog: Catalog) -> None:
        self.catalog = catalog
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for e in events:
            key = (e["agency"], e["event_id"])
            if key not in latest or e["revision"] > latest[key]["revision"]:
                latest[key] = e
            elif e["revision"] == latest[key]["revision"]:
                assert e == latest[key], f"two different payloads for one revision: {key}"
        self.live: dict[str, list[Observation]] = defaultdict(list)
        for e in latest.values():
            ind = catalog.indicator(e["indicator"])
            factor = 1.0 if e["unit"] == ind.unit else ind.unit_aliases[e["unit"]]
            observed = datetime.fromisoformat(e["observed_at"])
            self.live[ind.code].append(Observation(ind.code, e.get("region", CITY), e["value"] * factor, observed,
                                                   observed.astimezone(PLAN_TZ).date(), e["revision"],
                                                   e["event_id"]))

    def actual(self, code: str, as_of: date) -> float | None:
        ind = self.catalog.indicator(code)
        seen = [o for o in self.live.get(code, []) if o.day <= as_of]
        if ind.kind is Kind.FLOW:
            this_year = [o.value for o in seen if o.day.year == as_of.year]
            return math.fsum(this_year) if this_year else None
        newest: dict[str, Observation] = {}
        for o in seen:
            rank = (o.observed, o.revision, o.event_id)
            if o.region not in newest or rank > (newest[o.region].observed, newest[o.region].revision,
                                                 newest[o.region].event_id):
                newest[o.region] = o
        if ind.regional and CITY not in newest:
            return math.fsum(o.value for o in newest.values()) if newest else None
        return newest[CITY].value if CITY in newest else None

    def actuals(self, as_of: date) -> dict[str, float | None]:
        return {ind.code: self.actual(ind.code, as_of) for ind in self.catalog.indicators}

    def baseline(self, code: str) -> tuple[str, date, float] | None:
        """Where a path the plan states no baseline for starts (docs/numbers.md, "Baselines from
        data"): the value for the end of the baseline year, else the first report after it (a flow:
        its first year's total), as (source, day, value)."""
        ind = self.catalog.indicator(code)
        end = date(ind.baseline.year, 12, 31)
        reported = self.actual(code, end)
        if reported is not None:
            return "reported", end, reported
        later = sorted(o.day for o in self.live.get(code, []) if o.day > end)
        if not later:
            return None
        day = date(later[0].year, 12, 31) if ind.kind is Kind.FLOW else later[0]
        value = self.actual(code, day)
        assert value is not None
        return "first_report", day, value

    def baselines(self) -> dict[str, tuple[str, date, float]]:
        return {ind.code: found for ind in self.catalog.indicators
                if needs_data_baseline(ind) and (found := self.baseline(ind.code)) is not None}


def touched_days(events: Iterable[dict[str, Any]]) -> set[date]:
    """Every plan day an observation was on, in any revision (so every day one moved from or to)."""
    return {datetime.fromisoformat(e["observed_at"]).astimezone(PLAN_TZ).date() for e in events}


def as_of_dates() -> list[date]:
    """Year ends, year starts, mid-year days: the dates read through the command line."""
    out = []
    for year in YEARS:
        out += [date(year, 1, 1), date(year, 7, 1), date(year, 12, 31)]
    return out


# --- comparing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    as_of: date
    indicator: str
    got: float | None
    want: float | None
    source: str

    def __str__(self) -> str:
        return f"{self.as_of} {self.indicator}: got {self.got!r}, contract {self.want!r} ({self.source})"


def equal(indicator: str, got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    spec = SERIES.get(indicator)
    if spec is not None and spec.integral:
        return got == want
    return math.isclose(got, want, rel_tol=RELATIVE, abs_tol=0.0)


def compare(as_of: date, got: dict[str, float | None], want: dict[str, float | None], source: str) -> list[Difference]:
    return [Difference(as_of, code, got.get(code), want[code], source)
            for code in want if not equal(code, got.get(code), want[code])]


def progress_function(settings: Settings, client: Any, as_of: date) -> dict[str, float | None]:
    """``actual`` per indicator from ``sinks.progress.progress``, the function behind ``highland progress``."""
    return {row.indicator: row.actual for row in progress(client, settings.clickhouse_database, CATALOG, as_of)}


def progress_cli(settings: Settings, tmp: Path, as_of: date) -> dict[str, float | None]:
    """``actual`` per indicator, as ``highland progress --as-of D --json`` prints it."""
    done = subprocess.run([sys.executable, "-m", "highland", "progress", "--as-of", as_of.isoformat(), "--json"],
                          env=worker_env(settings, "cli", tmp), cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    printed = json.loads(done.stdout)
    assert printed["as_of"] == as_of.isoformat()
    return {row["indicator"]: row["actual"] for row in printed["indicators"]}


def differences(settings: Settings, model: ContractModel, days: Iterable[date], tmp: Path) -> list[Difference]:
    """Every number that differs: through the command line at the as-of dates, through the function
    behind it on every other day."""
    client = connect(settings)
    found: list[Difference] = []
    cli_days = as_of_dates()
    for day in cli_days:
        found += compare(day, progress_cli(settings, tmp, day), model.actuals(day), "highland progress --json")
    for day in sorted(set(days) - set(cli_days)):
        found += compare(day, progress_function(settings, client, day), model.actuals(day), "sinks.progress")
    return found


def explain(found: list[Difference], limit: int = 40) -> str:
    per_indicator: dict[str, int] = defaultdict(int)
    for d in found:
        per_indicator[d.indicator] += 1
    days = len({d.as_of for d in found})
    lines = [f"{len(found)} numbers differ from CONTRACT §2, on {days} dates; per indicator: "
             + ", ".join(f"{k} {v}" for k, v in sorted(per_indicator.items()))]
    lines += [str(d) for d in found[:limit]]
    return "\n".join(lines)


# --- sending and waiting ---------------------------------------------------------------------------

@dataclass
class Sent:
    """What the broker acknowledged: per record its partition, per partition the next offset."""

    partitions: list[int] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def ack(self, partition: int, offset: int) -> None:
        self.ends[partition] = max(self.ends.get(partition, 0), offset + 1)


class TwoClients:
    """The feed's two producers, writing straight to the events topic, each with its own partitioner."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic_events
        self.librdkafka = LibrdkafkaProducer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                                              "linger.ms": 5, "client.id": "exactness-librdkafka"})
        self.kafka_python = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5,
                                          client_id="exactness-kafka-python")
        self.sent = Sent()

    def send(self, chunk: list[Record]) -> None:
        """Send one chunk, each record by its client, and wait until the broker acknowledged all."""
        slots = len(self.sent.partitions)
        self.sent.partitions += [-1] * len(chunk)
        futures = []
        for i, record in enumerate(chunk, start=slots):
            if record.client == "librdkafka":
                self.librdkafka.produce(self.topic, value=record.payload, key=record.key, headers=[SCHEMA_HEADER],
                                        timestamp=record.timestamp_ms, on_delivery=self._delivered(i))
                self.librdkafka.poll(0)
            else:
                futures.append((i, self.kafka_python.send(self.topic, key=record.key, value=record.payload,
                                                          headers=[SCHEMA_HEADER], timestamp_ms=record.timestamp_ms)))
        assert self.librdkafka.flush(30) == 0, "librdkafka did not deliver the chunk in 30 s"
        self.kafka_python.flush(timeout=30)
        for i, future in futures:
            meta = future.get(timeout=30)
            self.sent.partitions[i] = meta.partition
            self.sent.ack(meta.partition, meta.offset)
        assert not self.sent.errors, self.sent.errors[:5]
        assert -1 not in self.sent.partitions[slots:], "a record was not acknowledged"

    def _delivered(self, i: int) -> Callable[[LibrdkafkaError | None, Message], None]:
        def report(err: LibrdkafkaError | None, msg: Message) -> None:
            if err is not None:
                self.sent.errors.append(str(err))
            else:
                self.sent.partitions[i] = msg.partition()
                self.sent.ack(msg.partition(), msg.offset())
        return report

    def close(self) -> None:
        self.librdkafka.flush(10)
        self.kafka_python.close(timeout=10)


def committed(settings: Settings) -> dict[int, int]:
    """The group's committed offsets on the events topic (on Tansu, never end offsets or lag)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000)
    try:
        offsets = admin.list_group_offsets(settings.consumer_group).get(settings.consumer_group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topic_events}


def all_committed(settings: Settings, sent: Sent) -> bool:
    done = committed(settings)
    return all(done.get(p, -1) >= end for p, end in sent.ends.items())


def owned(worker: WorkerProcess, topic: str) -> set[int]:
    """The partitions of ``topic`` in the worker's latest assignment, as its log shows it."""
    found = re.findall(rf"\|\s*{re.escape(topic)}\s*\|\s*\{{([^}}]*)\}}", worker.log_path.read_text(errors="replace"))
    parts: set[int] = set()
    for piece in found[-1].split(",") if found else []:
        lo, _, hi = piece.strip().partition("-")
        parts.update(range(int(lo), int(hi or lo) + 1))
    return parts


def shared_by(workers: list[WorkerProcess], topic: str) -> bool:
    """True when the workers own disjoint, non-empty shares that cover every partition."""
    shares = [owned(w, topic) for w in workers]
    every = set().union(*shares)
    return all(shares) and sum(map(len, shares)) == len(every) == PARTITIONS


def logs(workers: Iterable[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.log_path.name}\n{w.log()}" for w in workers)


@dataclass
class Run:
    """The scenario's outcome, for the report line."""

    name: str
    feed: Feed
    sent: Sent
    notes: list[str] = field(default_factory=list)


def in_flight_on_two_partitions(feed: Feed, sent: Sent) -> int:
    """Observations of which two revisions were sent in one chunk and landed on different partitions."""
    where: dict[tuple[str, str], dict[int, set[tuple[int, int]]]] = defaultdict(lambda: defaultdict(set))
    i = 0
    for c, chunk in enumerate(feed.chunks):
        for record in chunk:
            e = record.event
            where[(e["agency"], e["event_id"])][c].add((e["revision"], sent.partitions[i]))
            i += 1
    return sum(any(len({r for r, _ in s}) > 1 and len({p for _, p in s}) > 1 for s in by_chunk.values())
               for by_chunk in where.values())


def duplicates_on_two_partitions(feed: Feed, sent: Sent) -> int:
    where: dict[bytes, set[int]] = defaultdict(set)
    for record, partition in zip(feed.records, sent.partitions, strict=True):
        where[record.payload].add(partition)
    return sum(len(p) > 1 for p in where.values())


# --- the scenarios ---------------------------------------------------------------------------------

@pytest.fixture
def eight_partitions(isolated: Settings) -> Settings:
    """The test's own events topic, with eight partitions, and small worker batches."""
    settings = isolated.model_copy(update={"topic_events": isolated.topic_events + "8", "topic_partitions": PARTITIONS,
                                           "worker_batch_size": BATCH_SIZE, "alert_check_seconds": 2.0})
    assert ensure_topics(settings, [settings.topic_events]) == [settings.topic_events]
    return settings


def feed_for(seed: int, long_run: bool) -> tuple[Feed, ContractModel]:
    feed = FeedBuilder(seed).build(observations=20_000 if long_run else 3_000, chunks=12)
    for record in feed.records:  # the feed's premise: every record is valid (CONTRACT §1)
        assert isinstance(validate(record.payload, CATALOG), Accepted), record.event
    return feed, ContractModel((r.event for r in feed.records), CATALOG)


def settle_and_check(settings: Settings, run: Run, model: ContractModel, workers: list[WorkerProcess],
                     tmp: Path) -> None:
    """Wait until the group committed every record sent, then until the numbers match at the as-of
    dates (bounded); then compare every number, and fail listing each one that differs."""
    wait_for(lambda: all_committed(settings, run.sent), 180, "the group to commit every record sent",
             lambda: f"sent {run.sent.ends}\ncommitted {committed(settings)}\n{logs(workers)}")
    client = connect(settings)
    checks = as_of_dates()
    settling = time.monotonic()
    deadline = settling + SETTLE_S
    while time.monotonic() < deadline:
        if not any(compare(d, progress_function(settings, client, d), model.actuals(d), "") for d in checks):
            break
        time.sleep(1.0)
    settled_s = round(time.monotonic() - settling, 1)
    events = [r.event for r in run.feed.records]
    found = differences(settings, model, touched_days(events), tmp)
    line = {"test": run.name, "records": len(events), "observations": sum(map(len, model.live.values())),
            "chunks": len(run.feed.chunks), "revisions_in_flight_on_two_partitions":
            in_flight_on_two_partitions(run.feed, run.sent),
            "duplicates_on_two_partitions": duplicates_on_two_partitions(run.feed, run.sent),
            "dates_checked": len(touched_days(events) | set(checks)), "differences": len(found),
            "settled_after_s": settled_s, "notes": run.notes}
    print("\nEXACTNESS REPORT", json.dumps(line))
    if found:
        print(explain(found, limit=200))
    # The scenario really happened: the same key on two partitions, two revisions in flight at once.
    assert line["duplicates_on_two_partitions"] >= 100, line
    assert line["revisions_in_flight_on_two_partitions"] >= 200, line
    assert not found, explain(found)
    # Baselines taken from data, both ways of computing them, against the model's.
    db = settings.clickhouse_database
    want = model.baselines()
    assert want, "the feed gives some indicator a baseline from data"
    both = (("series", query_baselines(client, db, CATALOG)), ("events", reference_baselines(client, db, CATALOG)))
    for name, got in both:
        seen = {code: (a.source.value, a.day, a.value) for code, a in got.items()}
        assert seen.keys() == want.keys(), name
        for code, (source, day, value) in want.items():
            assert seen[code][:2] == (source, day) and math.isclose(seen[code][2], value, rel_tol=1e-9), (name, code)


def stop(workers: Iterable[WorkerProcess]) -> None:
    for w in workers:
        w.kill(signal.SIGTERM)


def test_two_clients_two_workers_and_a_kill_give_the_contract_numbers(eight_partitions: Settings, tmp_path,
                                                                       long_run: bool):
    """Two workers in one group store a feed written by librdkafka and kafka-python at once; one worker
    is killed with SIGKILL mid-run and restarted while the feed goes on. Every number, at every as-of
    date and on every day the feed touched, is the contract's."""
    settings = eight_partitions
    feed, model = feed_for(seed=1301, long_run=long_run)
    clients = TwoClients(settings)
    run = Run("two_clients_two_workers_kill", feed, clients.sent)
    first, second = WorkerProcess(settings, "one", tmp_path), WorkerProcess(settings, "two", tmp_path)
    workers = [first, second]
    try:
        wait_for(lambda: shared_by([first, second], settings.topic_events), 120,
                 "both workers to own a share of the partitions", lambda: logs(workers))
        third = len(feed.chunks) // 3
        for chunk in feed.chunks[:third]:
            clients.send(chunk)
            time.sleep(0.3)
        clients.send(feed.chunks[third])
        second.proc.send_signal(signal.SIGKILL)  # mid-run: batches read, some written, commits behind
        second.proc.wait(timeout=30)
        at_kill = committed(settings)
        unfinished = sum(end - at_kill.get(p, 0) for p, end in clients.sent.ends.items())
        run.notes.append(f"SIGKILL of a worker with {unfinished} of {len(clients.sent.partitions)} records "
                         "sent not yet committed")
        second.kill()  # closes its log
        restarted = WorkerProcess(settings, "two-again", tmp_path)
        workers.append(restarted)
        restarted_at = time.monotonic()
        for chunk in feed.chunks[third + 1:2 * third]:  # while the group rebalances
            clients.send(chunk)
            time.sleep(0.3)
        wait_for(lambda: shared_by([first, restarted], settings.topic_events), 120,
                 "the restarted worker to own a share again", lambda: logs(workers))
        run.notes.append(f"the restarted worker owned a share again after {time.monotonic() - restarted_at:.0f} s")
        for chunk in feed.chunks[2 * third:]:
            clients.send(chunk)
            time.sleep(0.3)
        clients.close()
        assert unfinished > 0, "the kill did not interrupt the run"
        settle_and_check(settings, run, model, workers, tmp_path)
    finally:
        stop(workers)


def test_two_clients_one_worker_with_two_writer_processes_give_the_contract_numbers(eight_partitions: Settings,
                                                                                     tmp_path, long_run: bool):
    """One worker whose batches are written by two writer processes at once (a batch's partitions shared
    between them), the same kind of feed, no fault: every number is the contract's."""
    settings = eight_partitions.model_copy(update={"worker_writers": 2})
    feed, model = feed_for(seed=1302, long_run=long_run)
    clients = TwoClients(settings)
    run = Run("two_clients_one_worker_two_writers", feed, clients.sent)
    worker = WorkerProcess(settings, "writers2", tmp_path)
    try:
        wait_for(lambda: owned(worker, settings.topic_events) == set(range(PARTITIONS)), 120,
                 "the worker to own every partition", worker.log)
        for chunk in feed.chunks:
            clients.send(chunk)
            time.sleep(0.3)
        clients.close()
        settle_and_check(settings, run, model, [worker], tmp_path)
    finally:
        stop([worker])


def test_the_model_reads_the_contract():
    """The model itself, on a handful of events whose numbers are worked out by hand."""
    def ev(eid: str, rev: int, ind: str, region: str, value: float, unit: str, at: str,
           agency: str = "cq_comms_admin") -> dict[str, Any]:
        return {"event_id": eid, "revision": rev, "agency": agency, "indicator": ind, "region": region,
                "value": value, "unit": unit, "observed_at": at}

    events = [
        ev("f1", 0, "telecom_business_volume", CITY, 100, "亿元", "2019-03-01T00:00:00+08:00"),
        ev("f1", 2, "telecom_business_volume", CITY, 300, "亿元", "2019-03-01T00:00:00+08:00"),
        ev("f1", 1, "telecom_business_volume", CITY, 200, "亿元", "2019-03-01T00:00:00+08:00"),  # late, lower
        ev("f2", 0, "telecom_business_volume", CITY, 50_000, "万元", "2019-12-31T17:00:00+00:00"),  # 2020 there
        ev("f3", 0, "telecom_business_volume", CITY, 7, "亿元", "2019-05-01T00:00:00+08:00"),
        ev("f3", 1, "telecom_business_volume", CITY, 7, "亿元", "2018-05-01T00:00:00+08:00"),  # moved a year back
        ev("p1", 0, "fiber_broadband_ports", "wanzhou", 5000, "ports", "2019-06-01T00:00:00+08:00"),
        ev("p1", 1, "fiber_broadband_ports", "yubei", 5000, "ports", "2019-06-01T00:00:00+08:00"),  # moved
        ev("p2", 1, "fiber_broadband_ports", "yubei", 1000, "ports", "2019-06-01T00:00:00+08:00"),  # tie: p2 > p1
        ev("p3", 0, "fiber_broadband_ports", "wanzhou", 2000, "ports", "2019-01-01T00:00:00+08:00"),
        ev("c1", 0, "direct_connect_cities", CITY, 18, "cities", "2019-02-01T00:00:00+08:00"),
        ev("c2", 1, "direct_connect_cities", CITY, 20, "cities", "2019-02-01T00:00:00+08:00"),  # tie: rev 1 wins
        ev("c3", 0, "direct_connect_cities", CITY, 30, "cities", "2019-02-01T00:00:00+08:00"),
    ]
    model = ContractModel(events, CATALOG)
    assert model.actual("telecom_business_volume", date(2019, 12, 31)) == 300
    assert model.actual("telecom_business_volume", date(2020, 1, 1)) == pytest.approx(5, rel=RELATIVE)
    assert model.actual("telecom_business_volume", date(2018, 12, 31)) == 7
    assert model.actual("telecom_business_volume", date(2019, 2, 28)) is None
    assert model.actual("fiber_broadband_ports", date(2019, 12, 31)) == 2000 + 1000
    assert model.actual("fiber_broadband_ports", date(2019, 5, 31)) == 2000
    assert model.actual("direct_connect_cities", date(2019, 2, 1)) == 20
    assert model.actual("direct_connect_cities", date(2019, 1, 31)) is None
    assert touched_days(events) >= {date(2018, 5, 1), date(2019, 5, 1), date(2020, 1, 1)}

