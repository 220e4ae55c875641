"""`highland tokens` as a careless administrator types it (issue 16, attacked): an expiry that is
not in the future is refused before anything is written, with the moment it was read as. Before,
`--expires 2020-01-01` (a typo for 2029) issued a token refused from its first use."""

from __future__ import annotations

import pytest

from tests.unit.test_push_report import highland


@pytest.mark.parametrize("expires", ["2020-01-01", "0d", "2026-01-01T00:00:00+08:00"])
@pytest.mark.parametrize("command", [("tokens", "issue", "--agency", "cq_commerce"),
                                     ("tokens", "rotate", "0123456789ab")])
def test_an_expiry_not_in_the_future_is_refused_before_anything_is_written(command, expires):
    # No service answers here (NO_SERVICES): the refusal must come before any connection is used.
    result = highland(*command, "--expires", expires)
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join(result.stderr.replace("│", " ").split())  # as read, whatever the terminal's width
    assert "is not in the future" in said and "Traceback" not in said
