"""The gateway's Prometheus metrics, served at its ``GET /metrics`` (docs/agencies.md, "Metrics").

One registry per gateway (tests run several in a process). Events count once their request is
settled: ``accepted`` and ``rejected`` only after the broker acknowledged the request's records, so
a 503 (broker down) counts neither, and ``dead_lettered`` is every rejection whose dead letter the
broker took. A request refused whole (body not JSON, too large) is one rejection, as it is one dead
letter. Token failures (401) are counted before anything else is read.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("highland_gateway_requests", "POST /v1/events requests answered, by status",
                                ["status"], registry=registry)
        self.request_seconds = Histogram("highland_gateway_request_seconds",
                                         "POST /v1/events: seconds from the request's arrival to its answer",
                                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                         registry=registry)
        self.events_received = Counter("highland_gateway_events_received",
                                       "events found in request bodies (before validation)", registry=registry)
        self.events_accepted = Counter("highland_gateway_events_accepted",
                                       "events accepted and acknowledged by the broker", registry=registry)
        self.events_rejected = Counter("highland_gateway_events_rejected",
                                       "events (or whole requests) rejected, by reason", ["reason"], registry=registry)
        self.dead_lettered = Counter("highland_gateway_dead_lettered",
                                     "dead letters the broker acknowledged", registry=registry)
        self.unauthenticated = Counter("highland_gateway_unauthenticated_requests",
                                       "requests without a valid bearer token (answered 401, body unread)",
                                       registry=registry)
        self.token_store_errors = Counter("highland_gateway_token_store_errors",
                                          "token look-ups that failed (answered 503)", registry=registry)

    def settled(self, accepted: int, rejected_reasons: list[str]) -> None:
        """A request's records were acknowledged: ``accepted`` events and a dead letter per reason."""
        self.events_accepted.inc(accepted)
        for reason, count in Tally(rejected_reasons).items():
            self.events_rejected.labels(reason).inc(count)
        self.dead_lettered.inc(len(rejected_reasons))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
