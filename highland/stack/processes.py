"""Background services of the local stack: start them detached, remember their pids, stop only those.

A pid file alone is not proof of ownership (pids are recycled), so each pid file also records the
executable; ``running`` checks ``/proc/<pid>/cmdline`` before anything is signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from highland.stack.private import UMASK


@dataclass(frozen=True)
class Service:
    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def record(self) -> dict[str, object] | None:
        try:
            return json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        rec = self.record()
        if not rec:
            return None
        pid = int(rec["pid"])  # type: ignore[arg-type]
        return pid if _alive_as(pid, str(rec["exe"])) else None

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` detached (own session, so Ctrl-C of the CLI doesn't reach it)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                umask=UMASK,  # what the service creates in the state folder is 600/700 (stack/private.py)
            )
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "exe": Path(argv[0]).name, "argv": argv}))
        return proc.pid

    def stop(self, grace_s: float = 10.0) -> bool:
        """SIGTERM, wait at most ``grace_s``, then SIGKILL. True if something was stopped."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and process_exists(pid):
            time.sleep(0.1)
        if process_exists(pid):
            _signal(pid, signal.SIGKILL)
            while process_exists(pid):
                time.sleep(0.05)
        return True

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def process_exists(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):  # reap our own child if it is one
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _alive_as(pid: int, exe: str) -> bool:
    if not process_exists(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and Path(cmdline[0].decode(errors="replace")).name == exe


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, log: Service | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    detail = f"\n--- last lines of {log.log_file} ---\n{log.tail()}" if log else ""
    raise TimeoutError(f"{what} did not become ready within {timeout_s:.0f} s{detail}")
