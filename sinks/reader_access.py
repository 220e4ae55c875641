"""The local stack's read-only user is allowed the databases Highland serves and never their auth
databases (the token tables): ClickHouse 18.16 has no grants, and ``allow_databases`` in a user's
configuration is the one thing it enforces per user (docs/security.md, "The local stack").

The local stack names, in ``HIGHLAND_CLICKHOUSE_READER_DATABASES_FILE`` (its local.env), a file of
the server's ``users.d`` that holds the reader's list. ``migrate`` adds the database it migrates
before its first statement, so a database is listed before it holds a row; 18.16 reads a changed
``users.d`` file by itself within seconds, and ``migrate`` waits for it at its end
(``wait_until_readable``). Names of databases that no longer exist are dropped from the list as it
is written. Elsewhere (current ClickHouse, deploy/) the setting is unset and grants do this.
"""

from __future__ import annotations

import fcntl
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from highland.sinks.tables import AUTH_SUFFIX

from highland.settings import Settings

WAIT_S = 15.0  # 18.16 looks at its configuration files every few seconds


def listed(path: Path) -> set[str]:
    """The databases the file allows the reader."""
    if not path.exists():
        return set()
    return {e.text or "" for e in ET.parse(path).getroot().iter("database")} - {""}


def allow(settings: Settings, client: Any, db: str) -> bool:
    """Add ``db`` to the reader's list in the local stack's file; False where there is none."""
    path = settings.clickhouse_reader_databases_file
    if path is None or not path.parent.is_dir():
        return False
    if db.endswith(AUTH_SUFFIX):  # it could be another database's auth database
        raise ValueError(f"a served database's name may not end with {AUTH_SUFFIX!r}: {db!r}")
    existing = {name for (name,) in client.execute("SELECT name FROM system.databases")}
    with _locked(path):
        names = listed(path)
        if db in names and names <= existing:
            return True
        _write(path, sorted((names & existing) | {db}), settings.clickhouse_reader_user)
    return True


def wait_until_readable(settings: Settings, db: str) -> None:
    """Return once the reader may use ``db`` (the server has read its list), else raise."""
    from highland.sinks.client import connect

    deadline = time.monotonic() + WAIT_S
    while True:
        reader = connect(settings, database=db, reader=True)
        try:
            reader.execute("SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            reader.disconnect()


def render(names: list[str], reader: str) -> str:
    root = ET.Element("yandex")
    user = ET.SubElement(ET.SubElement(root, "users"), reader)
    allowed = ET.SubElement(user, "allow_databases")
    for name in names:
        ET.SubElement(allowed, "database").text = name
    return ("<?xml version=\"1.0\"?>\n<!-- Written by Highland's migrations on the local stack "
            "(sinks/reader_access.py): the databases the reader may use. -->\n"
            + ET.tostring(root, encoding="unicode") + "\n")


def _write(path: Path, names: list[str], reader: str) -> None:
    """Replace the file at once (a server reading it sees the old list or the new one), mode 600 from
    its creation, under a name the server does not read (``.tmp``)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    before = int(path.stat().st_mtime) if path.exists() else None
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render(names, reader))
    os.replace(temporary, path)
    # 18.16 notices a changed configuration file by its modification time in whole seconds
    # (docs/clickhouse-dialect.md, "config-reload"): a list written in the same second as the one it
    # last read would never be read. Each list gets a second of its own.
    if before is not None and int(path.stat().st_mtime) <= before:
        os.utime(path, (before + 1, before + 1))


class _locked:
    """An exclusive lock next to ``path``: two migrations at once both keep their database."""

    def __init__(self, path: Path) -> None:
        self.lock = path.with_name(f".{path.name}.lock")

    def __enter__(self) -> None:
        self.fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
