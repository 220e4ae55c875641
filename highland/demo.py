"""`highland demo`: the main job on the embedded stack, from nothing to a plan shown in progress.

Brings the stack up, starts a background worker, writes the synthetic 2016-2020 history of every
indicator (one JSON Lines file per agency, under ``<state_dir>/demo``), pushes each file as its
agency, and waits until ClickHouse holds every accepted observation. Running it again changes no
number: the same events are deduplicated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from highland.catalog.loader import catalog_at
from highland.catalog.models import Catalog
from highland.ingest.events import Accepted, validate
from highland.ingest.files import read_rows
from highland.ingest.push import push_files
from highland.ingest.synthetic import write_feeds
from highland.settings import Settings
from highland.sinks.client import connect
from highland.stack import local


@dataclass
class DemoReport:
    files: dict[str, Path] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    stored: int = 0
    worker_started: bool = False


def expected_observations(files: dict[str, Path], catalog: Catalog) -> int:
    """Distinct (agency, event_id) among the valid rows: the observations the worker will store
    (a superseded revision in the same batch may never be written, so revisions are not counted)."""
    keys = set()
    for path in files.values():
        for row in read_rows(path):
            verdict = validate(row.payload, catalog)
            if isinstance(verdict, Accepted):
                keys.add((verdict.agency, verdict.event_id))
    return len(keys)


def run_demo(settings: Settings, say: Callable[[str], None], timeout_s: float = 300.0) -> DemoReport:
    report = DemoReport()
    up = local.up(settings)
    settings = local.with_secrets(settings)
    say(f"stack: started {', '.join(up.started) or 'nothing (already running)'}")
    report.worker_started = local.start_worker(settings) is not None
    say("worker: started in the background" if report.worker_started else "worker: already running")
    catalog = catalog_at(settings.catalog_dir)
    report.files = write_feeds(catalog, settings.state_dir / "demo")
    say(f"feeds: {len(report.files)} agency files of synthetic history 2016-2020 in {settings.state_dir / 'demo'}")
    for agency, path in report.files.items():
        summary = push_files([path], agency, settings, catalog)
        report.accepted += summary.accepted
        report.rejected += sum(summary.rejected.values())
    say(f"pushed: {report.accepted} accepted, {report.rejected} rejected (on purpose: bad rows in the feeds)")
    want = expected_observations(report.files, catalog)
    client = connect(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report.stored = client.execute(
            f"SELECT uniqExact(agency, event_id) FROM {settings.clickhouse_database}.events")[0][0]
        if report.stored >= want:
            break
        time.sleep(1)
    else:
        raise TimeoutError(f"the worker stored {report.stored} of {want} events within {timeout_s:.0f} s; "
                           f"see {local.worker_service(settings).log_file}")
    say(f"stored: {report.stored} observations in ClickHouse (duplicates removed, corrections applied)")
    return report
