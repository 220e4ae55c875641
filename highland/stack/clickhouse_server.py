"""A private ClickHouse server for the local stack: Debian's package, state under the stack folder.

Every user has a password (generated once into ``<state_dir>/local.env``, never committed); the
server listens on 127.0.0.1 only. Debian's 18.16 carries unfixed CVEs: local and CI use only
(docs/clickhouse-dialect.md, "security"; users live in users.xml: "users-and-grants").
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from highland.settings import Settings
from highland.sinks.reader_access import listed, render
from highland.stack.private import private_folder, write_private
from highland.stack.processes import Service, port_open, wait_until

SERVER_BINARY = "clickhouse-server"
PACKAGES = ["clickhouse-server", "clickhouse-client"]
TEMPLATES = Path(__file__).parent / "templates"


def service(settings: Settings) -> Service:
    return Service("clickhouse", settings.state_dir)


def binary() -> str | None:
    return shutil.which(SERVER_BINARY) or (
        "/usr/sbin/clickhouse-server" if Path("/usr/sbin/clickhouse-server").exists() else None
    )


def install() -> str:
    """apt-get the Debian packages if the server binary is missing; return its path."""
    found = binary()
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(cmd, env=env).returncode != 0:
        # A fresh machine may have stale package lists.
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(cmd, check=True, env=env)
    found = binary()
    if not found:
        raise RuntimeError("clickhouse-server is still missing after apt-get install")
    return found


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def reader_databases_file(settings: Settings) -> Path:
    """The users.d file listing the databases the local reader may use (sinks/reader_access.py)."""
    return settings.state_dir / "clickhouse" / "users.d" / "reader-databases.xml"


def render_config(settings: Settings, admin_password: str, timezone: str = "UTC",
                  reader_list: bool = True) -> Path:
    """Write config.xml and users.xml into ``<state_dir>/clickhouse`` and return the config path.

    The local stack's server runs in UTC; ``timezone`` runs one in another zone (tests prove that what
    a person reads does not depend on it: docs/clickhouse-dialect.md, "server-time-zone").
    ``reader_list``: the reader is allowed only the databases its users.d list names (kept by
    ``migrate``: sinks/reader_access.py), here the configured one and those listed before; else
    every database (the cluster stack's servers)."""
    root = settings.state_dir / "clickhouse"
    for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
        private_folder(root / sub)  # the server, started under a umask of 077, keeps it so below
    config = (TEMPLATES / "clickhouse-config.xml").read_text().format(
        root=root, tcp_port=settings.clickhouse_port, http_port=settings.clickhouse_http_port, timezone=timezone,
    )
    users = (TEMPLATES / "clickhouse-users.xml").read_text().format(
        admin_sha256=_sha256(admin_password),
        writer=settings.clickhouse_user,
        writer_sha256=_sha256(settings.clickhouse_password.get_secret_value()),
        reader=settings.clickhouse_reader_user,
        reader_sha256=_sha256(settings.clickhouse_reader_password.get_secret_value()),
        # Without a configured token reader (settings read without local.env) the user still exists,
        # with a password nobody knows.
        token_reader=settings.clickhouse_token_reader_user or "highland_tokens",
        token_reader_sha256=_sha256(settings.clickhouse_token_reader_password.get_secret_value()
                                    if settings.clickhouse_token_reader_user else secrets.token_hex(32)),
    )
    write_private(root / "config.xml", config)
    write_private(root / "users.xml", users)  # password hashes
    listing = reader_databases_file(settings)
    if reader_list:
        names = sorted(listed(listing) | {settings.clickhouse_database})
        write_private(listing, render(names, settings.clickhouse_reader_user))
    return root / "config.xml"


def start(settings: Settings, admin_password: str, timeout_s: float = 60.0, timezone: str = "UTC") -> int | None:
    """Start the server unless ours already runs; return the pid we started, or None."""
    svc = service(settings)
    if svc.pid() is not None:
        return None
    if port_open(settings.clickhouse_port):
        raise RuntimeError(f"port {settings.clickhouse_port} is taken by a process the stack did not start")
    exe = install() if settings.install_missing else binary()
    if exe is None:
        raise RuntimeError("clickhouse-server is not installed (HIGHLAND_INSTALL_MISSING=false)")
    config = render_config(settings, admin_password, timezone)
    pid = svc.start([exe, f"--config-file={config}"], cwd=config.parent)
    wait_until(lambda: _answers(settings), timeout_s, "ClickHouse", log=svc)
    return pid


def _answers(settings: Settings) -> bool:
    if not port_open(settings.clickhouse_port):
        return False
    from highland.sinks.client import connect

    try:
        connect(settings, database="default").execute("SELECT 1")
        return True
    except Exception:
        return False
