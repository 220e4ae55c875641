"""`highland push --dry-run` and `--json` (issue 16): the check before sending needs no service,
reads the files agencies have, and lists every rejected row with its reason in English and Chinese."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from highland.catalog.loader import default_catalog
from highland.ingest.events import Reason
from highland.ingest.names import REASON_EN, REASON_ZH
from highland.ingest.push import push_files

from highland.settings import Settings
from tests.conftest import ROOT
from tests.integration.support import one_bad_row_per_reason
from tests.unit.test_files import CHINESE_HEADER, GB_ROWS, XLSX_ROWS, excel_workbook

# Nothing listens on port 1: a dry run that touched a service would fail.
NO_SERVICES = {"HIGHLAND_KAFKA_BOOTSTRAP": "127.0.0.1:1", "HIGHLAND_CLICKHOUSE_PORT": "1",
               "HIGHLAND_CLICKHOUSE_HTTP_PORT": "1", "HIGHLAND_PRODUCER_MAX_BLOCK_S": "1"}
GOOD = {"event_id": "e-1", "agency": "cq_commerce", "indicator": "ecommerce_turnover", "value": 12.5,
        "unit": "亿元", "observed_at": "2019-05-01T00:00:00+08:00"}


def highland(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **NO_SERVICES}
    return subprocess.run([sys.executable, "-m", "highland", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)


def test_every_reason_has_a_chinese_and_an_english_label():
    assert set(REASON_ZH) == set(Reason) == set(REASON_EN)


def test_a_dry_run_of_agency_files_gives_the_exact_events_without_a_broker(tmp_path):
    gb = tmp_path / "报表.csv"
    gb.write_bytes((CHINESE_HEADER + GB_ROWS.replace("p1,0,重庆市通信管理局", "p1,0,重庆市商务委员会")
                    ).encode("gb18030"))
    book = excel_workbook(tmp_path / "报表.xlsx", XLSX_ROWS)
    settings = Settings(kafka_bootstrap="127.0.0.1:1", clickhouse_port=1)
    summary = push_files([gb, book], "cq_commerce", settings, default_catalog(), dry_run=True)
    assert summary.accepted == 4 and not summary.ok  # the fibre ports are not cq_commerce's
    assert [(r.file, r.line, r.reason) for r in summary.rejections] == [("报表.csv", 4, Reason.FORBIDDEN_AGENCY)]
    report = summary.report()
    assert report["files"][0] == {"file": "报表.csv", "format": "csv", "encoding": "gb18030",
                                  "encoding_detected": True, "sheet": None, "rows": 3}
    assert report["rejections"][0]["reason_zh"] == REASON_ZH[Reason.FORBIDDEN_AGENCY]
    assert not (tmp_path / "报表.csv.rejected.jsonl").exists()  # a dry run writes nothing


def bad_file(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    bad = one_bad_row_per_reason(GOOD)
    path = tmp_path / "mixed.jsonl"
    lines = [GOOD, *bad.values()]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in lines))
    return path, bad


def test_dry_run_on_a_bad_file_with_no_services_lists_every_reason(tmp_path):
    path, bad = bad_file(tmp_path)
    result = highland("push", str(path), "--agency", "cq_commerce", "--dry-run")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "would be accepted: 1" in result.stdout
    listed = [line.split() for line in result.stdout.splitlines() if line.startswith("  mixed.jsonl:")]
    assert [(cells[0], cells[1], cells[2]) for cells in listed] == [
        (f"mixed.jsonl:{i}", reason, REASON_ZH[Reason(reason)]) for i, reason in enumerate(bad, 2)]
    assert not (tmp_path / "mixed.jsonl.rejected.jsonl").exists()


def test_push_json_is_strict_json_listing_every_rejected_row(tmp_path):
    path, bad = bad_file(tmp_path)
    result = highland("push", str(path), "--agency", "cq_commerce", "--dry-run", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert report["accepted"] == 1 and report["rejected"] == len(bad) and report["dry_run"] is True
    assert [(r["file"], r["line"], r["reason"]) for r in report["rejections"]] == [
        ("mixed.jsonl", i, reason) for i, reason in enumerate(bad, 2)]
    assert all(r["reason_zh"] == REASON_ZH[Reason(r["reason"])] and r["detail"] for r in report["rejections"])


def test_a_wrong_encoding_is_one_error_in_text_and_in_json(tmp_path):
    path = tmp_path / "gb.csv"
    path.write_bytes((CHINESE_HEADER + GB_ROWS).encode("gb18030"))
    result = highland("push", str(path), "--agency", "cq_commerce", "--dry-run", "--encoding", "utf-8")
    assert result.returncode == 2 and result.stdout == ""
    assert "line 1 is not utf-8 text" in result.stderr and "unit_mismatch" not in result.stderr
    result = highland("push", str(path), "--agency", "cq_commerce", "--dry-run", "--encoding", "utf-8", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"].startswith("gb.csv: line 1 is not utf-8 text")


def test_a_filled_in_template_is_accepted_as_is(tmp_path):
    """Both formats: the agency fills in 事件编号, 数值 and 观测时间 (an Excel date) and pushes."""
    from highland.ingest.template import write_template
    from openpyxl import load_workbook

    catalog = default_catalog()
    owned = sorted(i.code for i in catalog.indicators if i.agency == "cq_commerce")
    csv_path, xlsx_path = tmp_path / "t.csv", tmp_path / "t.xlsx"
    assert write_template(catalog, "cq_commerce", "csv", csv_path) == len(owned)
    write_template(catalog, "cq_commerce", "xlsx", xlsx_path)
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf" + "事件编号,修订版本,机构,指标".encode())
    lines = csv_path.read_text(encoding="utf-8-sig").splitlines()
    # ",0,机构,指标,重庆市,,亿元," -> "c0,0,机构,指标,重庆市,1,亿元,2019/6/30"
    filled = [lines[0], *(f"c{i}" + line.replace(",,", ",1,", 1).rstrip(",") + ",2019/6/30"
                          for i, line in enumerate(lines[1:]))]
    csv_path.write_text("\n".join(filled) + "\n", encoding="utf-8-sig")
    book = load_workbook(xlsx_path)
    ws = book.worksheets[0]
    for n, row in enumerate(ws.iter_rows(min_row=2), 1):
        row[0].value, row[5].value, row[7].value = f"x{n}", 1, datetime(2019, 6, 30)
    book.save(xlsx_path)
    summary = push_files([csv_path, xlsx_path], "cq_commerce", Settings(), catalog, dry_run=True)
    assert summary.ok and summary.accepted == 2 * len(owned), summary.rejections
