"""The worker's Prometheus metrics, served at ``/metrics`` beside ``/health`` (the Faust web server).

The counters are read from the worker's own tallies (streams/health.py, the self-check's stats) at
scrape time, so they count exactly what ``/health`` shows; two histograms are observed per batch.
Names are prefixed ``highland_worker_``; counters end in ``_total`` (Prometheus' convention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from highland.streams.health import Health
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_SELF_CHECK_COUNTERS = ("rounds", "keys_checked", "rows_repaired", "days_repaired", "sweeps_completed")


class _Tallies(Collector):
    def __init__(self, health: Health, self_check: Callable[[], dict[str, Any]]) -> None:
        self._health, self._self_check = health, self_check

    def collect(self) -> Iterator[Metric]:
        for name, value in asdict(self._health.counters).items():
            yield CounterMetricFamily(f"highland_worker_{name}", f"{name.replace('_', ' ')} since the worker "
                                      "started", value=value)
        stats = self._self_check()
        for name in _SELF_CHECK_COUNTERS:
            yield CounterMetricFamily(f"highland_worker_self_check_{name}", f"self-check: {name.replace('_', ' ')}",
                                      value=stats.get(name, 0))
        ages = GaugeMetricFamily("highland_worker_batch_age_seconds", "age of the batch each consumer is working on "
                                 "(0 when idle)", labels=["consumer"])
        for consumer, age in self._health.report()["batch_age_s"].items():
            ages.add_metric([consumer], age)
        yield ages


class WorkerMetrics:
    def __init__(self, health: Health, self_check: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Tallies(health, self_check))
        self.batch_events = Histogram("highland_worker_batch_events", "events per batch read from the events topic",
                                      buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000), registry=self.registry)
        self.write_seconds = Histogram("highland_worker_write_seconds", "time to write and settle one batch",
                                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its media type (aiohttp takes the charset apart: it is UTF-8)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST.split(";")[0]
