"""`highland dashboards publish`: push what `build` wrote to a Grafana server through its HTTP API.

Idempotent, keyed by uid: the datasource, the Highland folder, every dashboard (saved with
overwrite) and every alert rule are created when missing, updated when different and left alone
when equal, and each gets one line saying which. Before that the plan tables the SQL reads are
synced into ClickHouse (sinks/plan_tables.py), so published dashboards never meet empty ones.

Grafana unreachable, refusing the token, or rejecting a payload raises PublishError from
`publish_changes`; `publish` (what the CLI calls) prints its message and exits 1, no traceback.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import niquests
import typer
import yaml
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError
from highland.dashboards import alerting
from highland.dashboards.build import datasource, prometheus_datasource
from highland.dashboards.panels import DATASOURCE_UID

from highland.settings import Settings

Json = dict[str, Any]
VOLATILE_DASHBOARD_KEYS = ("id", "version")  # Grafana owns these; they never make a difference


class PublishError(Exception):
    """Publishing failed for a reason the operator can act on; the message says which."""


def publish(settings: Settings, out_dir: Path) -> list[str]:
    """`highland dashboards publish`: as publish_changes, but a failure is one line on stderr and
    exit status 1 (typer.Exit), not a traceback."""
    try:
        return publish_changes(settings, out_dir)
    except PublishError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise typer.Exit(1) from exc


def publish_changes(settings: Settings, out_dir: Path) -> list[str]:
    """Publish the built files in ``out_dir``; returns one line per object saying what changed."""
    token = settings.grafana_token.get_secret_value()
    if not token:
        raise PublishError("HIGHLAND_GRAFANA_TOKEN is not set: create a Grafana service-account token "
                           "(role Admin, or Editor plus alerting write) and export it.")
    boards, rules = load_built(Path(out_dir))
    api = GrafanaApi.from_url(settings.grafana_url, credential=token, timeout=10)
    try:
        # Grafana first: an unreachable server should fail before anything is written anywhere.
        lines = [f"grafana {settings.grafana_url}: version {api.health.check().get('version', '?')}",
                 sync_plan(settings)]
        lines.append(upsert_datasource(api, settings))
        lines.append(upsert_prometheus(api, settings))
        lines.append(ensure_folder(api))
        lines += [upsert_dashboard(api, board) for board in boards]
        lines += [upsert_rule(api, rule) for rule in rules]
        lines.append(ensure_group_interval(api))
    except (niquests.exceptions.RequestException, OSError) as exc:
        raise PublishError(f"Grafana at {settings.grafana_url} is not reachable: {exc}") from exc
    except GrafanaException as exc:
        # grafana-client reports timeouts and transport errors as status 0: no answer at all
        what = "is not reachable" if isinstance(exc, GrafanaTimeoutError) or not exc.status_code else \
            "refused the request"
        raise PublishError(f"Grafana at {settings.grafana_url} {what}: {exc.message}") from exc
    return lines


def sync_plan(settings: Settings) -> str:
    from highland.catalog.loader import catalog_at
    from highland.sinks.client import connect
    from highland.sinks.plan_tables import sync_plan_tables

    try:
        client = connect(settings)
        result = sync_plan_tables(client, settings.clickhouse_database, catalog_at(settings.catalog_dir))
    except Exception as exc:  # the driver raises many types; all mean "could not sync"
        raise PublishError(f"could not sync the plan tables into ClickHouse at {settings.clickhouse_host}:"
                           f"{settings.clickhouse_port}/{settings.clickhouse_database}: {exc}") from exc
    state = "written" if result.changed else "unchanged"
    return f"plan tables {settings.clickhouse_database}: {state} (version {result.version[:12]})"


def load_built(out_dir: Path) -> tuple[list[Json], list[Json]]:
    """The dashboards and the API form of the rules, as `build` wrote them."""
    boards_dir, rules_file = out_dir / "dashboards", out_dir / "provisioning" / "alerting" / "rules.yaml"
    boards = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(boards_dir.glob("*.json"))]
    if not boards or not rules_file.is_file():
        raise PublishError(f"nothing built in {out_dir}: run `highland dashboards build` first")
    groups = yaml.safe_load(rules_file.read_text(encoding="utf-8"))["groups"]
    rules = [{**rule, "orgID": group["orgId"], "folderUID": alerting.FOLDER_UID, "ruleGroup": group["name"]}
             for group in groups for rule in group["rules"]]
    return boards, rules


def _get_or_none(fetch: Callable[[], Json]) -> Json | None:
    try:
        return fetch()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _differs(wanted: Json, existing: Json) -> bool:
    """True when a key we set has another value in Grafana (keys Grafana adds are ignored)."""
    return any(existing.get(key) != value for key, value in wanted.items())


def _upsert(what: str, wanted: Json, fetch: Callable[[], Json], create: Callable[[], object],
            update: Callable[[], object]) -> str:
    """Create ``wanted`` if Grafana has none, update it if a key we set differs, else leave it; says which."""
    existing = _get_or_none(fetch)
    if existing is None:
        create()
        return f"{what}: created"
    if not _differs(wanted, existing):
        return f"{what}: unchanged"
    update()
    return f"{what}: updated"


def _fingerprint(secret: str) -> str:
    """A short hash of the password, stored beside it so a rotation is seen as a change without the
    password ever being readable back (Grafana never returns secureJsonData)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def upsert_datasource(api: GrafanaApi, settings: Settings) -> str:
    password = settings.clickhouse_reader_password.get_secret_value()
    wanted = datasource(settings)
    wanted["jsonData"] = {**wanted["jsonData"], "highlandPasswordFingerprint": _fingerprint(password)}
    existing = _get_or_none(lambda: api.datasource.get_datasource_by_uid(DATASOURCE_UID))
    payload = {**wanted, "secureJsonData": {"password": password}}
    if existing is None:
        api.datasource.create_datasource(payload)
        return f"datasource {DATASOURCE_UID}: created"
    top_level = {k: v for k, v in wanted.items() if k != "jsonData"}
    if not (_differs(top_level, existing) or _differs(wanted["jsonData"], existing.get("jsonData") or {})):
        return f"datasource {DATASOURCE_UID}: unchanged"
    api.datasource.update_datasource_by_uid(DATASOURCE_UID, payload)
    return f"datasource {DATASOURCE_UID}: updated"


def upsert_prometheus(api: GrafanaApi, settings: Settings) -> str:
    """The pipeline dashboard's Prometheus (no secret: it is reached inside the deployment)."""
    wanted = prometheus_datasource(settings)
    uid = wanted["uid"]
    return _upsert(f"datasource {uid}", wanted, lambda: api.datasource.get_datasource_by_uid(uid),
                   lambda: api.datasource.create_datasource(wanted),
                   lambda: api.datasource.update_datasource_by_uid(uid, wanted))


def ensure_folder(api: GrafanaApi) -> str:
    if _get_or_none(lambda: api.folder.get_folder(alerting.FOLDER_UID)) is not None:
        return f"folder {alerting.FOLDER_UID}: unchanged"
    api.folder.create_folder(alerting.FOLDER_TITLE, uid=alerting.FOLDER_UID)
    return f"folder {alerting.FOLDER_UID}: created"


def _comparable(board: Json) -> Json:
    return {k: v for k, v in board.items() if k not in VOLATILE_DASHBOARD_KEYS}


def upsert_dashboard(api: GrafanaApi, board: Json) -> str:
    uid = board["uid"]
    existing = _get_or_none(lambda: api.dashboard.get_dashboard(uid))
    if existing is not None and _comparable(existing.get("dashboard", {})) == _comparable(board):
        return f"dashboard {uid}: unchanged"
    api.dashboard.update_dashboard({"dashboard": {**board, "id": None}, "folderUid": alerting.FOLDER_UID,
                                    "overwrite": True, "message": "highland dashboards publish"})
    return f"dashboard {uid}: {'created' if existing is None else 'updated'}"


def upsert_rule(api: GrafanaApi, rule: Json) -> str:
    uid = rule["uid"]
    return _upsert(f"alert rule {uid}", rule, lambda: api.alertingprovisioning.get_alertrule(uid),
                   lambda: api.alertingprovisioning.create_alertrule(rule),
                   lambda: api.alertingprovisioning.update_alertrule(uid, rule))


def ensure_group_interval(api: GrafanaApi) -> str:
    """Rules created one by one land in a group with Grafana's default interval: set ours."""
    group = api.alertingprovisioning.get_rule_group(alerting.FOLDER_UID, alerting.RULE_GROUP)
    if group.get("interval") == alerting.GROUP_INTERVAL_S:
        return f"rule group {alerting.RULE_GROUP}: unchanged"
    api.alertingprovisioning.update_rule_group(alerting.FOLDER_UID, alerting.RULE_GROUP,
                                               {**group, "interval": alerting.GROUP_INTERVAL_S})
    return f"rule group {alerting.RULE_GROUP}: interval set to {alerting.GROUP_INTERVAL_S}s"
