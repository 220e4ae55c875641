"""The sample feeds in ingest/examples/ do what their README says."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from highland.catalog.loader import default_catalog
from highland.ingest.events import Accepted, validate
from highland.ingest.files import read_rows

EXAMPLES = Path(__file__).resolve().parents[2] / "ingest" / "examples"


def verdicts(name: str, agency: str) -> Counter[str]:
    catalog = default_catalog()
    return Counter("accepted" if isinstance(v, Accepted) else v.reason.value
                   for v in (validate(r.payload, catalog, pushed_by=agency) for r in read_rows(EXAMPLES / name)))


@pytest.mark.parametrize(("name", "agency", "rows"), [
    ("cq_commerce.csv", "cq_commerce", 5),
    ("cq_comms_admin.jsonl", "cq_comms_admin", 5),
])
def test_clean_examples_are_fully_accepted(name, agency, rows):
    assert verdicts(name, agency) == {"accepted": rows}


def test_the_example_with_errors_has_one_of_each_documented_reason():
    assert verdicts("cq_economy_it_with_errors.jsonl", "cq_economy_it") == {
        "accepted": 2, "unit_mismatch": 1, "forbidden_agency": 1, "malformed_json": 1}
