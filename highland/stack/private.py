"""The local stack's state is its operator's alone: folders 700 and files 600 from the moment they
exist, never widened and narrowed afterwards.

The state folder holds generated passwords (``local.env``), password hashes (ClickHouse's
``users.xml``) and every stored event and dead letter (ClickHouse's data, the broker's log), so a
moment of world-readable mode is a leak. Files are created with their final mode (``os.open``
with 600, then renamed into place); folders with ``mkdir(mode=0o700)``; and the services the stack
starts run under ``UMASK``, so what they create (ClickHouse's parts, Kafka's segments) is theirs
alone too. An older state folder made world-readable by an earlier version is narrowed on the next
``stack up``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077  # for the processes the stack starts: no bit for group or others


def private_folder(path: Path) -> Path:
    """``path`` as a folder of mode 700, made with that mode (and its missing parents too); an existing
    one is narrowed to 700."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile: narrowed below
            folder.mkdir(mode=FOLDER_MODE)
    path.chmod(FOLDER_MODE)
    return path


def write_private(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) in a file that is 600 from its creation: written under
    a temporary name opened with that mode, then renamed over ``path`` (so a reader sees the old
    file or the new one, never half of it)."""
    private_folder(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # a crashed run's leftover: O_EXCL makes a new file, never reuses one
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
    return path
