"""Files as agencies have them, pushed for real (issue 16): a GB18030 CSV and an .xlsx, both with
Chinese headers and the catalog's Chinese names, as Excel writes them, go through `highland push`,
straight to Kafka and through the gateway, and a real worker; the stored number equals the sum
computed by hand."""

from __future__ import annotations

import signal
from datetime import date, datetime

import pytest
from highland.catalog.loader import default_catalog
from highland.sinks.client import connect
from highland.sinks.progress import progress

from highland.settings import Settings
from tests.integration.support import WorkerProcess, wait_for
from tests.integration.test_ingest import GatewayProcess, as_agency, highland
from tests.unit.test_files import CHINESE_HEADER, excel_workbook

pytestmark = pytest.mark.integration

CSV_ROWS = ("t1,0,重庆市商务委员会,电子商务交易额,重庆市,1200,亿元,2019/1/31\n"
            't2,0,重庆市商务委员会,电子商务交易额,全市,"50,000",万元,2019/2/28 0:00\n')
XLSX_ROWS = [
    [1, 0, "重庆市商务委员会", "电子商务交易额", "重庆市", 300, "亿元", datetime(2019, 3, 1)],
    ["x2", 0, "重庆市商务委员会", "电子商务交易额", None, 2.5, "亿元", datetime(2019, 3, 1, 12, 30)],
    ["t1", 1, "重庆市商务委员会", "电子商务交易额", "重庆市", 1250, "亿元", datetime(2019, 1, 31)],  # a correction
]
# By hand, in 亿元: t1 as corrected (1250) + t2 (50,000 万元 = 5) + 1 (300) + x2 (2.5).
EXPECTED_2019 = 1250 + 5 + 300 + 2.5


@pytest.mark.parametrize("door", ["kafka", "gateway"])
def test_a_gb18030_csv_and_an_xlsx_push_exactly(isolated: Settings, tmp_path, door: str):
    gb = tmp_path / "电子商务.csv"
    gb.write_bytes((CHINESE_HEADER + CSV_ROWS).encode("gb18030"))
    book = excel_workbook(tmp_path / "电子商务.xlsx", XLSX_ROWS)
    gateway = GatewayProcess(isolated, tmp_path) if door == "gateway" else None
    through = ["--gateway", f"http://127.0.0.1:{gateway.port}"] if gateway else []
    try:
        for path in (gb, book):
            result = highland(isolated, "push", str(path), *through, env=as_agency(isolated))
            assert result.returncode == 0, result.stdout + result.stderr
            assert "accepted: 2" in result.stdout or "accepted: 3" in result.stdout
    finally:
        if gateway:
            gateway.stop()
    assert "encoding gb18030 (detected)" in highland(isolated, "push", str(gb), "--agency", "cq_commerce",
                                                     "--dry-run").stdout
    worker = WorkerProcess(isolated, "files", tmp_path)
    catalog = default_catalog()

    def actual() -> float | None:
        rows = progress(connect(isolated), isolated.clickhouse_database, catalog, date(2019, 12, 31))
        return next(r.actual for r in rows if r.indicator == "ecommerce_turnover")

    try:
        wait_for(lambda: actual() == pytest.approx(EXPECTED_2019), 120, f"ecommerce_turnover = {EXPECTED_2019}",
                 lambda: f"actual {actual()}\n{worker.log()}")
    finally:
        worker.kill(signal.SIGTERM)
