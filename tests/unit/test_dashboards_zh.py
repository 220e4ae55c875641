"""The dashboards as `highland dashboards build` writes them for a Chinese reader (HIGHLAND_LANG=zh, the
default): every title, panel title, link and variable label in Chinese, columns and legends named in
Chinese, statuses in the notifier's words and the catalog's Chinese names in place of codes; still
valid against Grafana's dashboard schema. Read from the generated JSON files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from highland.catalog.loader import default_catalog
from highland.dashboards.build import build_all

from highland.settings import Settings
from tests.conftest import ROOT
from tests.unit.test_dashboards import _errors, _validator

CJK = re.compile(r"[\u4e00-\u9fff]")
CATALOG = default_catalog()


def built(tmp: Path, lang: str) -> dict[str, dict[str, Any]]:
    build_all(Settings(lang=lang), tmp)
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((tmp / "dashboards").glob("*.json"))}


@pytest.fixture(scope="module")
def zh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return built(tmp_path_factory.mktemp("zh"), "zh")


def _overrides(panel: dict[str, Any], column: str) -> dict[str, Any]:
    """The properties a panel's overrides give one column, merged."""
    found: dict[str, Any] = {}
    for item in panel["fieldConfig"]["overrides"]:
        if item["matcher"] == {"id": "byName", "options": column}:
            found |= {p["id"]: p["value"] for p in item["properties"]}
    return found


def test_every_title_a_reader_sees_is_chinese(zh: dict[str, dict[str, Any]]):
    assert len(zh) >= 5
    for uid, board in zh.items():
        texts = [board["title"], *(link["title"] for link in board["links"]),
                 *(v["label"] for v in board["templating"]["list"]), *(p["title"] for p in board["panels"])]
        untranslated = [t for t in texts if not CJK.search(t)]
        assert untranslated == [], uid


def test_columns_legends_statuses_and_names_are_chinese(zh: dict[str, dict[str, Any]]):
    overview = {p["title"]: p for p in zh["highland-overview"]["panels"]}["各指标与规划对比"]
    status_text = {v["text"] for m in _overrides(overview, "status")["mappings"] for v in m["options"].values()}
    assert {"正常", "有风险", "滞后", "无数据"} <= status_text
    names = {code: o["text"] for m in _overrides(overview, "indicator")["mappings"] for code, o in m["options"].items()}
    assert names == {i.code: i.name_zh for i in CATALOG.indicators}
    assert _overrides(overview, "stale_since")["displayName"] == "停报起始日"
    assert _overrides(overview, "last_observed")["displayName"] == "最近报送"
    assert _overrides(overview, "name_en")["custom.hidden"] is True  # the Chinese name replaces it
    districts = {p["title"]: p for p in zh["highland-indicator"]["panels"]}["分区县（分区县报送的指标）"]
    shown = {code: o["text"] for m in _overrides(districts, "district")["mappings"] for code, o in m["options"].items()}
    assert shown["yuzhong"] == "渝中区" and len(shown) == len(CATALOG.districts)
    chart = {p["title"]: p for p in zh["highland-indicator"]["panels"]}["实际值与规划路径"]
    legends = {c: _overrides(chart, c).get("displayName") for c in ("actual", "expected", "target", "projection")}
    assert legends == {"actual": "实际", "expected": "预期", "target": "目标", "projection": "预测"}
    per_agency = {p["title"]: p for p in zh["highland-feeds"]["panels"]}["各单位每分钟事件数"]
    renames = {t["options"]["regex"]: t["options"]["renamePattern"] for t in per_agency["transformations"]}
    assert renames["^cq_commerce$"] == "重庆市商务委员会"


def test_the_chinese_dashboards_stay_valid_and_english_stays_english(zh: dict[str, dict[str, Any]],
                                                                      tmp_path: Path):
    validator = _validator("dashboard.schema.json")
    for uid, board in zh.items():
        assert _errors(validator, board) == [], uid
    en = built(tmp_path, "en")
    assert en["highland-overview"]["title"] == "Highland — plan overview"
    assert not any(CJK.search(p["title"]) for board in en.values() for p in board["panels"])
    # The same queries in both languages: only what is shown changes.
    for uid in en:
        sql = [[t.get("rawSql") for t in p["targets"]] for p in en[uid]["panels"]]
        assert sql == [[t.get("rawSql") for t in p["targets"]] for p in zh[uid]["panels"]], uid


def test_grafana_itself_speaks_chinese_and_keeps_beijing_time_in_deploy():
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text(encoding="utf-8"))
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_USERS_DEFAULT_LANGUAGE"] == "zh-Hans"
    assert env["GF_DATE_FORMATS_DEFAULT_TIMEZONE"] == "Asia/Shanghai"
