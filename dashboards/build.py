"""`highland dashboards build`: Grafana provisioning files for Highland.

Layout written under ``out_dir`` (point Grafana's `paths.provisioning` at ``out_dir/provisioning``):

    provisioning/datasources/clickhouse.yaml      the official ClickHouse plugin, read-only user, and
                                                  the Prometheus of the pipeline dashboard
    provisioning/dashboards/highland.yaml         a file provider loading ``out_dir/dashboards``
    provisioning/alerting/rules.yaml              unified-alerting rules (SQL against ClickHouse)
    provisioning/alerting/contact-points.yaml     templates (addresses from the environment)
    provisioning/alerting/notification-policies.yaml
    dashboards/<uid>.json                         bare dashboard models (what the provider loads)
    import/<uid>.json                             the same with ``__inputs``, for Grafana's manual
                                                  import (Dashboards > New > Import): it asks for
                                                  the datasources instead of assuming their uids

No secret is ever written: the reader's password is the environment reference
``$HIGHLAND_CLICKHOUSE_READER_PASSWORD``, expanded by Grafana when it loads the file. No path of the
machine that built the files is written either: the provider finds the dashboards relative to
Grafana's own provisioning folder (``$GF_PATHS_PROVISIONING/../dashboards``), so the files can be
built anywhere and copied or mounted wherever Grafana keeps them.

One folder (docs/dashboards.md, "One folder"): Grafana provisions alert rules before dashboards
(``RunInitProvisioners``: datasources, plugins, alerting; dashboards later, in ``Run``), and a rule
file can name its folder by title only; the rule provisioner creates a missing folder under a random
uid. The dashboard provider therefore names the same title and no uid, and finds that folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from highland.catalog.loader import catalog_at
from highland.catalog.models import Catalog
from highland.dashboards import alerting
from highland.dashboards.definitions import all_dashboards
from highland.dashboards.localize import localize
from highland.dashboards.panels import DATASOURCE_TYPE, DATASOURCE_UID
from highland.dashboards.pipeline import PROMETHEUS_TYPE, PROMETHEUS_UID, pipeline
from highland.dashboards.queries import Sql

from highland.settings import Settings

DATASOURCE_NAME = "Highland ClickHouse"
PROMETHEUS_NAME = "Highland Prometheus"
READER_PASSWORD_ENV = "HIGHLAND_CLICKHOUSE_READER_PASSWORD"
# Grafana expands environment references in provisioning files; its Docker image sets this one.
DASHBOARDS_PATH = "$GF_PATHS_PROVISIONING/../dashboards"
# The manual import's inputs: datasource uid -> (input name, label, plugin id, plugin name).
IMPORT_INPUTS = {
    DATASOURCE_UID: ("DS_HIGHLAND_CLICKHOUSE", DATASOURCE_NAME, DATASOURCE_TYPE, "ClickHouse"),
    PROMETHEUS_UID: ("DS_HIGHLAND_PROMETHEUS", PROMETHEUS_NAME, PROMETHEUS_TYPE, "Prometheus"),
}


def sql_for(settings: Settings, catalog: Catalog) -> Sql:
    return Sql.for_catalog(settings.clickhouse_database, catalog)


def datasource(settings: Settings) -> dict[str, Any]:
    """The datasource as Grafana's API and provisioning files both describe it."""
    return {
        "name": DATASOURCE_NAME,
        "type": DATASOURCE_TYPE,
        "uid": DATASOURCE_UID,
        "access": "proxy",
        "isDefault": False,
        "jsonData": {
            "host": settings.clickhouse_host,
            "port": settings.clickhouse_port,
            "protocol": "native",
            "secure": False,
            "username": settings.clickhouse_reader_user,
            "defaultDatabase": settings.clickhouse_database,
        },
    }


def prometheus_datasource(settings: Settings) -> dict[str, Any]:
    """The Prometheus that scrapes the workers and gateways (the pipeline dashboard's datasource)."""
    return {"name": PROMETHEUS_NAME, "type": PROMETHEUS_TYPE, "uid": PROMETHEUS_UID, "access": "proxy",
            "url": settings.prometheus_url, "isDefault": False, "jsonData": {"httpMethod": "POST"}}


def datasource_file(settings: Settings) -> dict[str, Any]:
    entry = {**datasource(settings), "editable": False,
             "secureJsonData": {"password": f"${READER_PASSWORD_ENV}"}}
    return {"apiVersion": 1, "datasources": [entry, {**prometheus_datasource(settings), "editable": False}]}


def dashboard_provider() -> dict[str, Any]:
    """The file provider: the folder by title, like the rule file (see the module's docstring: a
    ``folderUid`` here would make Grafana create a second folder of that title, or refuse it), and
    the dashboards' folder relative to Grafana's provisioning folder."""
    return {"apiVersion": 1, "providers": [{
        "name": "highland", "orgId": 1, "folder": alerting.FOLDER_TITLE,
        "type": "file", "disableDeletion": False, "allowUiUpdates": False, "updateIntervalSeconds": 30,
        "options": {"path": DASHBOARDS_PATH, "foldersFromFilesStructure": False}}]}


def for_import(board: dict[str, Any]) -> dict[str, Any]:
    """``board`` as Grafana's manual import wants it: each datasource it uses an ``__inputs`` entry,
    and every reference to it ``${DS_…}``, so the importer picks the datasource (provisioned
    dashboards keep the fixed uids: the file provider does not fill inputs in)."""
    used: dict[str, tuple[str, str, str, str]] = {}

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("uid") in IMPORT_INPUTS and set(node) == {"type", "uid"}:
                used[node["uid"]] = IMPORT_INPUTS[node["uid"]]
                return {"type": node["type"], "uid": f"${{{IMPORT_INPUTS[node['uid']][0]}}}"}
            return {key: swap(value) for key, value in node.items()}
        if isinstance(node, list):
            return [swap(item) for item in node]
        return node

    swapped = swap(board)
    inputs = [{"name": name, "label": label, "description": "", "type": "datasource", "pluginId": plugin,
               "pluginName": plugin_name} for name, label, plugin, plugin_name in used.values()]
    requires = [{"type": "datasource", "id": plugin, "name": plugin_name, "version": ""}
                for _, _, plugin, plugin_name in used.values()]
    return {"__inputs": inputs, "__elements": {}, "__requires": requires, **swapped}


class _Dumper(yaml.SafeDumper):
    """Readable provisioning files: SQL as literal blocks, no anchors for repeated objects."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    path.write_text("# Generated by `highland dashboards build`; edit dashboards/*.py instead.\n" + body,
                    encoding="utf-8")
    return path


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return path


def build_all(settings: Settings, out_dir: Path, catalog: Catalog | None = None) -> list[Path]:
    """Write every provisioning file; returns the paths written. Same input, same bytes."""
    catalog = catalog or catalog_at(settings.catalog_dir)
    sql = sql_for(settings, catalog)
    out_dir = Path(out_dir)
    prov = out_dir / "provisioning"
    written = [
        _write_yaml(prov / "datasources" / "clickhouse.yaml", datasource_file(settings)),
        _write_yaml(prov / "dashboards" / "highland.yaml", dashboard_provider()),
        _write_yaml(prov / "alerting" / "rules.yaml", alerting.file_groups(alerting.api_rules(sql))),
        _write_yaml(prov / "alerting" / "contact-points.yaml", alerting.contact_points(catalog)),
        _write_yaml(prov / "alerting" / "notification-policies.yaml", alerting.notification_policies(catalog)),
    ]
    boards = [localize(board, catalog, settings.lang) for board in (*all_dashboards(sql), pipeline())]
    written += [_write_json(out_dir / "dashboards" / f"{board['uid']}.json", board) for board in boards]
    written += [_write_json(out_dir / "import" / f"{board['uid']}.json", for_import(board)) for board in boards]
    return written
