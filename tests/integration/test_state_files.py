"""The running stack's state is its operator's alone: nothing under the state folder, ClickHouse's
data included, is readable, writable or enterable by group or others (issue 15, "Files")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from highland.settings import Settings

pytestmark = pytest.mark.integration


def too_open(root: Path) -> list[str]:
    """Every path under ``root`` with a permission bit for group or others (symlinks aside). The
    running server merges parts away while we walk: a file or folder gone by the time it is looked at
    is skipped (os.walk ignores a folder it can no longer list)."""
    found = _open_bits(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found += _open_bits(Path(folder) / name)
    return found


def _open_bits(path: Path) -> list[str]:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return []
    if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
        return [f"{oct(stat.S_IMODE(info.st_mode))} {path}"]
    return []


def test_the_state_folder_is_700_and_local_env_600(stack: Settings):
    assert stat.S_IMODE(stack.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((stack.state_dir / "local.env").stat().st_mode) == 0o600


def test_clickhouse_data_config_and_logs_are_private_from_creation(isolated: Settings):
    # isolated: a database, its tables and parts were just created by the running server
    root = isolated.state_dir / "clickhouse"
    assert (root / "data" / "metadata" / isolated.clickhouse_database).is_dir()
    assert too_open(root) == []
