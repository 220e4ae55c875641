"""The worker's Prometheus metrics, served at ``/metrics`` beside ``/health`` (the Faust web server).

The counters are read from the worker's own tallies (streams/health.py, the self-check's stats) at
scrape time, so they count exactly what ``/health`` shows; the histograms are observed per batch.
Names are prefixed ``highland_worker_``; counters end in ``_total`` (Prometheus' convention).
docs/streams.md, "Metrics", lists them; dashboards/pipeline.py charts them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import asdict
from threading import Lock
from typing import Any

from highland.streams.health import Health
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_SELF_CHECK_COUNTERS = ("rounds", "keys_checked", "rows_repaired", "days_repaired", "sweeps_completed")
# Labelled below (by reason) instead of as one number.
_LABELLED = {"events_rejected"}
STORAGE_DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Tallies(Collector):
    def __init__(self, health: Health, self_check: Callable[[], dict[str, Any]]) -> None:
        self._health, self._self_check = health, self_check

    def collect(self) -> Iterator[Metric]:
        for name, value in asdict(self._health.counters).items():
            if name not in _LABELLED:
                yield CounterMetricFamily(f"highland_worker_{name}", f"{name.replace('_', ' ')} since the worker "
                                          "started", value=value)
        rejected = CounterMetricFamily("highland_worker_events_rejected", "records the validator rejected since the "
                                       "worker started, by reason (each dead-lettered)", labels=["reason"])
        for reason, count in sorted(self._health.rejected_by_reason.items()):
            rejected.add_metric([reason], count)
        yield rejected
        stats = self._self_check()
        for name in _SELF_CHECK_COUNTERS:
            yield CounterMetricFamily(f"highland_worker_self_check_{name}", f"self-check: {name.replace('_', ' ')}",
                                      value=stats.get(name, 0))
        ages = GaugeMetricFamily("highland_worker_batch_age_seconds", "age of the batch each consumer is working on "
                                 "(0 when idle)", labels=["consumer"])
        report = self._health.report()
        for consumer, age in report["batch_age_s"].items():
            ages.add_metric([consumer], age)
        yield ages
        yield GaugeMetricFamily("highland_worker_stuck_batches_now", "batches in progress longer than "
                                "HIGHLAND_WORKER_STUCK_AFTER_S now", value=len(report["stuck"]))


class EventsHistogram(Collector):
    """A histogram observed once per batch but counted per event: every event of a batch has the
    batch's value (prometheus_client's Histogram counts one observation per call, and a call per event
    would cost the worker a lock per event)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.buckets = name, documentation, tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0
        self._lock = Lock()  # scrapes read from the web server's task, observations from the writer's

    def observe(self, value: float, events: int) -> None:
        if events <= 0:
            return
        with self._lock:
            self._counts[bisect_left(self.buckets, value)] += events
            self._sum += value * events

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=total)


class WorkerMetrics:
    def __init__(self, health: Health, self_check: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Tallies(health, self_check))
        self.batch_events = Histogram("highland_worker_batch_events", "events per batch read from the events topic",
                                      buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000), registry=self.registry)
        self.write_seconds = Histogram("highland_worker_write_seconds", "time to write and settle one batch",
                                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        # Arrival = when the worker read the event (its stored received_at, the time stale feeds are
        # measured by); the record's own timestamp is observed_at (CONTRACT §1), not an arrival.
        self.storage_delay = EventsHistogram(
            "highland_worker_arrival_to_storage_seconds",
            "per event: seconds from its arrival at the worker (received_at) until its batch was stored",
            STORAGE_DELAY_BUCKETS)
        self.registry.register(self.storage_delay)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its media type (aiohttp takes the charset apart: it is UTF-8)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST.split(";")[0]
