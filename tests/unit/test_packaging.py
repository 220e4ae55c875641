"""What `pip install .` puts into site-packages: the one `highland` namespace, with its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_the_wheel_holds_only_the_highland_namespace_and_its_data(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    [wheel] = tmp_path.glob("highland-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"highland", next(t for t in top if t.endswith(".dist-info"))}, top
    for layer in ("catalog", "ingest", "streams", "sinks", "dashboards", "stack"):
        assert f"highland/{layer}/__init__.py" in names, layer
    assert "highland/catalog/data/plan.yaml" in names
    assert "highland/sinks/migrations/__init__.py" in names
    assert "highland/stack/templates/clickhouse-config.xml" in names
    assert "highland/stack/templates/kafka-pom.xml" in names
    assert "highland/ingest/openapi.yaml" in names  # the gateway serves it at GET /openapi.yaml
