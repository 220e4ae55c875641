"""The Grafana provisioning `highland dashboards build` writes, loaded the way Grafana loads it.

No Grafana runs here, so ``GrafanaLoader`` below plays Grafana's documented load order and folder
rules, as Grafana's own source states them (pkg/services/provisioning/provisioning.go and
pkg/services/provisioning/alerting/rules_provisioner.go, v12):
1. ``RunInitProvisioners`` (during server init): datasources, plugins, then alerting. A rule group
   names its folder by title only (grafana/grafana#125079: file-provisioned rules take no folder
   uid); a missing folder is created with that title and a random uid.
2. ``Run`` (a background service, later): dashboards. A provider with ``folderUid`` looks its folder
   up by uid, else by title; a missing one is created, and a folder whose title is already taken at
   that level is refused (Grafana 11+: "a folder with the same name already exists").
Provisioning files expand ``$VAR`` / ``${VAR}`` from Grafana's environment; a relative provider path
is taken from Grafana's working directory.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml
from highland.catalog.loader import default_catalog
from highland.dashboards import alerting, definitions
from highland.dashboards.build import IMPORT_INPUTS, build_all, sql_for
from highland.dashboards.pipeline import PIPELINE_UID, PROMETHEUS_UID, pipeline
from highland.ingest.gateway_metrics import GatewayMetrics
from highland.streams.health import Health
from highland.streams.metrics import WorkerMetrics
from prometheus_client.parser import text_string_to_metric_families

from highland.settings import Settings

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SETTINGS = Settings(clickhouse_database="highland_db", clickhouse_reader_password="reader-secret-7f3a")
GRAFANA_WORKDIR = "/usr/share/grafana"  # the official image's WORKDIR
ENV_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


class FolderClash(Exception):
    pass


@dataclass
class GrafanaLoader:
    """Folders, rules and dashboards as Grafana's provisioning would leave them (see the docstring)."""

    env: dict[str, str]
    folders: dict[str, str] = field(default_factory=dict)  # uid -> title
    rules: dict[str, str] = field(default_factory=dict)  # rule uid -> folder uid
    dashboards: dict[str, str] = field(default_factory=dict)  # dashboard uid -> folder uid

    def expand(self, text: str) -> str:
        return ENV_REF.sub(lambda m: self.env.get(m.group(1) or m.group(2), ""), text)

    def _by_title(self, title: str) -> str | None:
        return next((uid for uid, t in self.folders.items() if t == title), None)

    def _create(self, title: str, uid: str) -> str:
        if self._by_title(title) is not None:
            raise FolderClash(f"a folder with the same name already exists: {title}")
        self.folders[uid] = title
        return uid

    def load(self, provisioning: Path) -> None:
        # 1. init: alerting (datasources and plugins hold no folders)
        for path in sorted((provisioning / "alerting").glob("*.yaml")):
            for group in yaml.safe_load(self.expand(path.read_text(encoding="utf-8"))).get("groups", []):
                folder = self._by_title(group["folder"]) or self._create(group["folder"], uuid.uuid4().hex[:14])
                self.rules.update({rule["uid"]: folder for rule in group["rules"]})
        # 2. run: dashboards
        for path in sorted((provisioning / "dashboards").glob("*.yaml")):
            for provider in yaml.safe_load(self.expand(path.read_text(encoding="utf-8")))["providers"]:
                uid = provider.get("folderUid")
                folder = (uid if uid in self.folders else None) if uid else self._by_title(provider["folder"])
                folder = folder or self._create(provider["folder"], uid or uuid.uuid4().hex[:14])
                where = Path(os.path.normpath(Path(GRAFANA_WORKDIR, provider["options"]["path"])))
                for board in sorted(where.glob("*.json")):
                    self.dashboards[json.loads(board.read_text(encoding="utf-8"))["uid"]] = folder


@pytest.fixture
def built(tmp_path: Path) -> Path:
    build_all(SETTINGS, tmp_path / "build")
    return tmp_path / "build"


def grafana_mount(built: Path, tmp_path: Path) -> Path:
    """The built files where Grafana sees them: another folder than the one they were built in."""
    mount = tmp_path / "srv" / "grafana"
    mount.parent.mkdir(parents=True)
    built.rename(mount)
    return mount


def test_rules_and_dashboards_land_in_one_folder_in_grafanas_load_order(built: Path, tmp_path: Path):
    mount = grafana_mount(built, tmp_path)
    grafana = GrafanaLoader(env={"GF_PATHS_PROVISIONING": str(mount / "provisioning")})
    grafana.load(mount / "provisioning")
    assert len(grafana.folders) == 1 and list(grafana.folders.values()) == [alerting.FOLDER_TITLE]
    [folder] = grafana.folders
    assert set(grafana.rules) == {r["uid"] for r in alerting.api_rules(sql_for(SETTINGS, default_catalog()))}
    assert set(grafana.dashboards) == {*definitions.BUILDERS, PIPELINE_UID}  # found where Grafana mounts them
    assert set(grafana.rules.values()) == set(grafana.dashboards.values()) == {folder}


def test_the_loader_sees_the_clash_a_folder_uid_on_the_provider_makes(built: Path, tmp_path: Path):
    """The model can fail: the provider the project had before (folder by uid) clashes with the folder
    the rule provisioner created by title."""
    mount = grafana_mount(built, tmp_path)
    provider_file = mount / "provisioning" / "dashboards" / "highland.yaml"
    provider = yaml.safe_load(provider_file.read_text())
    provider["providers"][0]["folderUid"] = alerting.FOLDER_UID
    provider_file.write_text(yaml.safe_dump(provider))
    with pytest.raises(FolderClash):
        GrafanaLoader(env={"GF_PATHS_PROVISIONING": str(mount / "provisioning")}).load(mount / "provisioning")


def test_no_file_names_a_path_of_the_machine_that_built_it(built: Path):
    for path in built.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert str(built) not in text and str(built.resolve()) not in text and os.getcwd() not in text, path
    provider = yaml.safe_load((built / "provisioning/dashboards/highland.yaml").read_text())["providers"][0]
    assert not Path(provider["options"]["path"]).is_absolute() or provider["options"]["path"].startswith("$")
    assert "folderUid" not in provider and provider["folder"] == alerting.FOLDER_TITLE


def test_every_rule_links_to_the_panel_that_shows_what_it_fires_on(built: Path):
    rules = yaml.safe_load((built / "provisioning/alerting/rules.yaml").read_text())["groups"][0]["rules"]
    boards = {p.stem: json.loads(p.read_text()) for p in (built / "dashboards").glob("*.json")}
    for rule in rules:
        notes = rule["annotations"]
        board = boards[notes["__dashboardUid__"]]  # both set (Grafana refuses one without the other)
        panel = next(p for p in board["panels"] if str(p["id"]) == notes["__panelId__"])
        assert panel["type"] == "table", rule["uid"]
    by_uid = {r["uid"]: r["annotations"]["__dashboardUid__"] for r in rules}
    assert by_uid == {"highland-off-track": definitions.OVERVIEW_UID, "highland-at-risk": definitions.OVERVIEW_UID,
                      "highland-stale-feed": definitions.FEEDS_UID}


def test_import_copies_ask_for_their_datasources(built: Path):
    copies = sorted((built / "import").glob("*.json"))
    assert copies and [p.name for p in copies] == sorted(p.name for p in (built / "dashboards").glob("*.json"))
    for path in copies:
        exported = json.loads(path.read_text())
        provisioned = json.loads((built / "dashboards" / path.name).read_text())
        text = json.dumps(exported)
        assert not any(f'"uid": "{uid}"' in text for uid in IMPORT_INPUTS), path.name  # no fixed datasource
        names = {i["name"] for i in exported["__inputs"]}
        assert names and set(re.findall(r"\$\{(DS_\w+)\}", text)) == names
        assert all(i["type"] == "datasource" for i in exported["__inputs"])
        assert {r["id"] for r in exported["__requires"]} == {i["pluginId"] for i in exported["__inputs"]}
        # Filling the inputs in gives back the provisioned dashboard.
        for uid, (name, *_rest) in IMPORT_INPUTS.items():
            text = text.replace(f"${{{name}}}", uid)
        filled = {k: v for k, v in json.loads(text).items() if not k.startswith("__")}
        assert filled == provisioned


def test_the_pipeline_dashboard_validates_and_reads_prometheus_only():
    board = pipeline()
    schema = json.loads((SCHEMAS / "dashboard.schema.json").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(board)) == []
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == PROMETHEUS_UID
        assert panel["targets"] and all(t["datasource"]["uid"] == PROMETHEUS_UID and t["expr"]
                                        for t in panel["targets"])


def exported_names() -> set[str]:
    """Every sample name the worker and the gateway export (a fresh worker's and gateway's scrape)."""
    health = Health(30.0)
    health.rejected_by_reason["malformed_json"] = 1
    gateway = GatewayMetrics()
    gateway.settled(1, ["malformed_json"])
    gateway.requests.labels("200").inc()
    texts = [WorkerMetrics(health, dict).render()[0].decode(), gateway.render()[0].decode()]
    return {s.name for text in texts for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_metric_the_pipeline_dashboard_reads_is_exported():
    names = exported_names()
    used = {name for panel in pipeline()["panels"] for t in panel["targets"]
            for name in re.findall(r"\bhighland_\w+", t["expr"])}
    assert used and used <= names, sorted(used - names)
    assert all(n.startswith("highland_") for n in names)
