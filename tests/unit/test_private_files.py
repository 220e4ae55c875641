"""The local stack's secrets are written private from the start: under the loosest umask, the state
folder is 700 and local.env 600, and rewriting a file never leaves it (or a copy of it) wider."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from highland.settings import Settings
from highland.stack import local
from highland.stack.private import private_folder, write_private


@pytest.fixture
def loosest_umask() -> Iterator[None]:
    """umask 000: whatever mode a file or folder gets is the one the code asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_state_folder_is_700_and_local_env_600(tmp_path: Path, loosest_umask: None):
    state = tmp_path / "new" / "state"
    local.ensure_secrets(Settings(state_dir=state, install_missing=False))
    assert mode(state) == 0o700
    assert mode(state.parent) == 0o700  # a missing parent is made private as well
    assert mode(local.env_file(Settings(state_dir=state))) == 0o600
    assert sorted(p.name for p in state.iterdir()) == ["local.env"]  # no temporary copy left behind


def test_rewriting_a_world_readable_file_makes_it_600_and_keeps_no_copy(tmp_path: Path, loosest_umask: None):
    old = tmp_path / "local.env"
    old.write_text("HIGHLAND_CLICKHOUSE_PASSWORD=old\n")
    old.chmod(0o644)
    write_private(old, "HIGHLAND_CLICKHOUSE_PASSWORD=new\n")
    assert (mode(old), old.read_text()) == (0o600, "HIGHLAND_CLICKHOUSE_PASSWORD=new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["local.env"]


def test_an_existing_world_readable_folder_is_narrowed(tmp_path: Path, loosest_umask: None):
    folder = tmp_path / "state"
    folder.mkdir(mode=0o755)
    assert mode(private_folder(folder)) == 0o700

