"""The worker's per-event histogram (streams/metrics.py): observed once per batch, it reads as if
every event of the batch had been observed on its own, in Prometheus' terms (a bucket counts the
observations less than or equal to its bound; the sum adds every observation)."""

from __future__ import annotations

from highland.streams.metrics import EventsHistogram
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def samples(text: bytes) -> dict[tuple[str, float | None], float]:
    """By name and bucket bound, read as a number (as Prometheus reads ``le``: "1" is "1.0")."""
    return {(s.name, float(s.labels["le"]) if "le" in s.labels else None): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_a_batch_observed_once_reads_as_its_events_observed_one_by_one():
    batches = [(0.5, 3), (0.05, 2), (2.0, 1), (700.0, 4), (0.3, 0)]  # bounds themselves, between, above all
    buckets = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 300)
    per_batch, per_event = CollectorRegistry(), CollectorRegistry()
    histogram = EventsHistogram("h", "per event", buckets)
    per_batch.register(histogram)
    reference = Histogram("h", "per event", buckets=buckets, registry=per_event)
    for value, events in batches:
        histogram.observe(value, events)
        for _ in range(events):
            reference.observe(value)
    got = {k: v for k, v in samples(generate_latest(per_batch)).items() if not k[0].endswith("_created")}
    want = {k: v for k, v in samples(generate_latest(per_event)).items() if not k[0].endswith("_created")}
    assert got == want
    assert got[("h_bucket", 0.5)] == 5  # 0.05 twice and 0.5 three times: a bound counts in its own bucket
    assert got[("h_sum", None)] == 0.5 * 3 + 0.05 * 2 + 2.0 + 700.0 * 4
