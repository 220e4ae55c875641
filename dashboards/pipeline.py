"""The "pipeline health" dashboard: the pipeline's own metrics (streams/metrics.py on every worker,
ingest/gateway_metrics.py on every gateway), read from Prometheus (deploy/ scrapes both).

Where the other dashboards read ClickHouse (what the data says), this one reads Prometheus (how the
pipeline that stores it is doing): throughput, rejections by reason, dead letters, batch sizes, write
latency, the time from an event's arrival to its storage, stuck batches, poison records, the
self-check's repairs and the gateway's token failures. PromQL, with Grafana's own `$__rate_interval`
and `$__range` (dashboard files are not environment-expanded, unlike the provisioning YAML).
"""

from __future__ import annotations

from highland.dashboards import panels as p
from highland.dashboards.panels import Json

PIPELINE_UID = "highland-pipeline"
PROMETHEUS_TYPE = "prometheus"
PROMETHEUS_UID = "highland-prometheus"
PROMETHEUS = {"type": PROMETHEUS_TYPE, "uid": PROMETHEUS_UID}
WORKER_JOB, GATEWAY_JOB = "highland-worker", "highland-gateway"  # the scrape jobs in deploy/prometheus
RATE = "$__rate_interval"

# Every text a reader sees, in one place (a translation replaces the values; docs/i18n.md).
TEXT = {
    "dashboard": "Highland — pipeline health",
    "dashboard_description": "How the pipeline itself is doing: workers and gateways, from their /metrics.",
    "workers_up": "Workers up",
    "gateways_up": "Gateways up",
    "stuck_now": "Batches stuck now",
    "repairs": "Self-check repairs (range)",
    "throughput": "Events per second",
    "throughput_description": "Records the workers read, accepted and stored; events the gateways accepted.",
    "rejected": "Rejected per second, by reason",
    "rejected_description": "Rejections by the workers' and the gateways' validators; each is a dead letter.",
    "dead_letters": "Dead letters per second",
    "dead_letters_description": "Sent by workers and gateways, and stored in ClickHouse by the workers.",
    "delay": "Arrival to storage",
    "delay_description": "Per event, seconds from its arrival at a worker (received_at) until its batch was "
                         "stored: median and 95th percentile.",
    "write": "Batch write time",
    "write_description": "Seconds to write and settle one batch: median and 95th percentile.",
    "batch": "Events per batch",
    "batch_description": "Mean records per batch read from the events topic.",
    "trouble": "Stuck batches, poison records, retries",
    "trouble_description": "Batches stuck longer than HIGHLAND_WORKER_STUCK_AFTER_S, accepted events the store "
                           "refused (dead-lettered as out_of_range), ClickHouse calls retried.",
    "self_check": "Self-check",
    "self_check_description": "Keys checked and rows / days repaired by the group's self-check.",
    "gateway_requests": "Gateway requests by status",
    "gateway_requests_description": "POST /v1/events answers per second; 401 = no valid token.",
    "token_failures": "Token failures",
    "token_failures_description": "Requests without a valid bearer token (401) and failed token look-ups (503).",
    "gateway_latency": "Gateway request time",
    "gateway_latency_description": "Seconds from a request's arrival to its answer: median and 95th percentile.",
}


def target(expr: str, legend: str, ref_id: str) -> Json:
    return {"refId": ref_id, "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "range": True,
            "editorMode": "code"}


def _on_prometheus(panel: Json) -> Json:
    panel["datasource"] = PROMETHEUS
    return panel


def series(title: str, description: str, queries: list[tuple[str, str]], unit: str | None = None) -> Json:
    targets = [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]
    return _on_prometheus(p.timeseries(TEXT[title], TEXT[description], targets, unit=unit))


def stat(title: str, expr: str, colour: str) -> Json:
    panel = p.stat(TEXT[title], TEXT[title], "", "Value", fixed_colour=colour)
    panel["targets"] = [target(expr, "", "A")]
    panel["options"]["reduceOptions"]["fields"] = ""
    return _on_prometheus(panel)


def rate(counter: str, by: str | None = None) -> str:
    """Per second over Grafana's rate interval, summed over every instance (or per value of ``by``)."""
    return f"sum by ({by}) (rate({counter}[{RATE}]))" if by else f"sum(rate({counter}[{RATE}]))"


def increase(counter: str, window: str = RATE) -> str:
    """How much ``counter`` grew over ``window``, summed over every instance."""
    return f"sum(increase({counter}[{window}]))"


def quantiles(metric: str, *labels: str) -> list[tuple[str, str]]:
    by = ", ".join(("le", *labels))
    return [(f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket[{RATE}])))", f"p{int(q * 100)}")
            for q in (0.5, 0.95)]


def pipeline() -> Json:
    grid = p.Grid()
    w = "highland_worker_"
    g = "highland_gateway_"
    grid.add(stat("workers_up", f'sum(up{{job="{WORKER_JOB}"}})', "green"), w=6, h=4)
    grid.add(stat("gateways_up", f'sum(up{{job="{GATEWAY_JOB}"}})', "green"), w=6, h=4)
    grid.add(stat("stuck_now", f"sum({w}stuck_batches_now)", "orange"), w=6, h=4)
    grid.add(stat("repairs", increase(f"{w}self_check_rows_repaired_total", "$__range"), "red"), w=6, h=4)
    grid.add(series("throughput", "throughput_description", [
        (rate(f"{w}records_consumed_total"), "worker: read"),
        (rate(f"{w}events_accepted_total"), "worker: accepted"),
        (rate(f"{w}events_stored_total"), "worker: stored"),
        (rate(f"{g}events_accepted_total"), "gateway: accepted"),
    ], unit="ops"), w=12, h=8)
    grid.add(series("rejected", "rejected_description", [
        (rate(f"{w}events_rejected_total", by="reason"), "worker: {{reason}}"),
        (rate(f"{g}events_rejected_total", by="reason"), "gateway: {{reason}}"),
    ], unit="ops"), w=12, h=8)
    grid.add(series("dead_letters", "dead_letters_description", [
        (rate(f"{w}dead_letters_sent_total"), "worker: sent"),
        (rate(f"{g}dead_lettered_total"), "gateway: sent"),
        (rate(f"{w}dead_letters_stored_total"), "stored"),
    ], unit="ops"), w=12, h=8)
    grid.add(series("delay", "delay_description", quantiles(f"{w}arrival_to_storage_seconds"), unit="s"),
             w=12, h=8)
    grid.add(series("write", "write_description", quantiles(f"{w}write_seconds"), unit="s"), w=8, h=8)
    grid.add(series("batch", "batch_description", [
        (f"{rate(f'{w}batch_events_sum')} / {rate(f'{w}batch_events_count')}", "mean"),
    ], unit="short"), w=8, h=8)
    grid.add(series("trouble", "trouble_description", [
        (increase(f"{w}stuck_batches_total"), "stuck batches"),
        (increase(f"{w}poison_dead_lettered_total"), "poison records"),
        (increase(f"{w}infrastructure_retries_total"), "retries"),
    ], unit="short"), w=8, h=8)
    grid.add(series("self_check", "self_check_description", [
        (rate(f"{w}self_check_keys_checked_total"), "keys checked / s"),
        (increase(f"{w}self_check_rows_repaired_total"), "rows repaired"),
        (increase(f"{w}self_check_days_repaired_total"), "days repaired"),
    ], unit="short"), w=8, h=8)
    grid.add(series("gateway_requests", "gateway_requests_description", [
        (rate(f"{g}requests_total", by="status"), "{{status}}"),
    ], unit="reqps"), w=8, h=8)
    grid.add(series("token_failures", "token_failures_description", [
        (increase(f"{g}unauthenticated_requests_total"), "401 no valid token"),
        (increase(f"{g}token_store_errors_total"), "503 token store"),
    ], unit="short"), w=8, h=8)
    grid.add(series("gateway_latency", "gateway_latency_description", quantiles(f"{g}request_seconds"), unit="s"),
             w=24, h=8)
    return p.dashboard(PIPELINE_UID, TEXT["dashboard"], TEXT["dashboard_description"], grid.panels,
                       timezone="browser", refresh="30s", links=[p.dashboards_link()], time_from="now-6h",
                       time_to="now")
