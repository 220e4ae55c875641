"""The plan catalog: complete, consistent, and loud about broken files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from highland.catalog.loader import DATA_DIR, CatalogError, load_catalog
from highland.catalog.models import CITY_WIDE, Kind

BOX1 = [
    "internet_plus_index", "info_society_index", "telecom_business_volume", "direct_connect_cities",
    "backbone_interconnect_bw", "interprovincial_export_bw", "offshore_settlement", "ecommerce_turnover",
    "crossborder_ecommerce", "software_it_revenue", "it_employment", "bigdata_cloud_output",
    "two_integration_index", "info_benefit_index", "internet_penetration", "smart_city_index",
]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_every_box1_indicator_is_catalogued_with_the_plans_numbers(catalog):
    for code in BOX1:
        assert catalog.indicator(code) is not None, code
    turnover = catalog.indicator("ecommerce_turnover")
    assert (turnover.baseline.year, turnover.baseline.value) == (2015, 6000)
    assert (turnover.target.year, turnover.target.value) == (2020, 18000)
    assert turnover.kind is Kind.FLOW and turnover.unit == "亿元"
    assert turnover.factor_for("万元") == pytest.approx(0.0001)


def test_text_targets_are_catalogued_too(catalog):
    ports = catalog.indicator("fiber_broadband_ports")
    assert ports.target.value == 15_000_000 and ports.regional and ports.kind is Kind.LEVEL
    assert catalog.indicator("container_throughput").target.value == 5_000_000
    latency = catalog.indicator("latency_world_cities")
    assert latency.direction.value == "down" and latency.target.value == 150
    assert len(catalog.indicators) >= 60


def test_districts_agencies_and_regions(catalog):
    assert len(catalog.districts) == 38
    ports = catalog.indicator("fiber_broadband_ports")
    assert catalog.region_allowed(ports, "yuzhong")
    assert not catalog.region_allowed(ports, CITY_WIDE), "a regional level is never reported city-wide"
    turnover = catalog.indicator("ecommerce_turnover")
    assert catalog.region_allowed(turnover, CITY_WIDE)
    assert not catalog.region_allowed(turnover, "yuzhong")
    assert all(catalog.is_agency(i.agency) for i in catalog.indicators)


def _broken_copy(tmp_path: Path, mutate) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    plan = yaml.safe_load((data / "plan.yaml").read_text())
    mutate(plan)
    (data / "plan.yaml").write_text(yaml.safe_dump(plan, allow_unicode=True, sort_keys=False))
    return data


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_an_unknown_kind_is_reported_with_file_line_and_reason(tmp_path):
    def mutate(plan):
        plan["indicators"][3]["kind"] = "stock"

    data = _broken_copy(tmp_path, mutate)
    with pytest.raises(CatalogError) as err:
        load_catalog(data)
    line = _line_of(data / "plan.yaml", "kind: stock")
    assert f"plan.yaml:{line}: indicators.3.kind" in str(err.value)
    assert "flow" in str(err.value)  # the reason lists what is allowed


def test_an_unknown_agency_is_reported(tmp_path):
    def mutate(plan):
        plan["indicators"][0]["agency"] = "nobody"

    with pytest.raises(CatalogError, match="unknown agency 'nobody'"):
        load_catalog(_broken_copy(tmp_path, mutate))


def test_a_regional_flow_is_rejected(tmp_path):
    def mutate(plan):
        flow = next(i for i in plan["indicators"] if i["kind"] == "flow")
        flow["regional"] = True

    with pytest.raises(CatalogError, match="only a level can be regional"):
        load_catalog(_broken_copy(tmp_path, mutate))


def test_duplicate_codes_and_bad_thresholds_are_rejected(tmp_path):
    def dup(plan):
        plan["indicators"].append(dict(plan["indicators"][0]))

    with pytest.raises(CatalogError, match="duplicate indicator code"):
        load_catalog(_broken_copy(tmp_path / "a", dup))

    def thresholds(plan):
        plan["indicators"][0]["thresholds"] = {"on_track": 0.8, "at_risk": 0.9}

    with pytest.raises(CatalogError, match="at_risk must be below on_track"):
        load_catalog(_broken_copy(tmp_path / "b", thresholds))


def test_invalid_yaml_names_the_line(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    text = (data / "agencies.yaml").read_text().splitlines()
    text.insert(3, "  - code: [unclosed")
    (data / "agencies.yaml").write_text("\n".join(text))
    with pytest.raises(CatalogError, match=r"agencies\.yaml:\d+: not valid YAML"):
        load_catalog(data)
