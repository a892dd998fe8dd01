"""Processes under test: start them pinned to a core, wait until they answer, read /proc, stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.services.postgres import PostgresServer

__all__ = [
    "Proc",
    "cpu_seconds",
    "free_port",
    "listen_overflows",
    "peak_rss_mb",
    "pin_self",
    "rss_mb",
    "spawn",
    "wait_http",
]

# Upstream and load generator share one core; the proxy under test gets the other to itself.
LOAD_CORE = 0
PROXY_CORE = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    pinned: str = field(default="")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(_STOP_GRACE_S)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def pin_self(core: int) -> str:
    """Pin this process (the load client) to `core`; '' when the machine has too few cores."""
    if _cores() <= max(LOAD_CORE, PROXY_CORE):
        return ""
    os.sched_setaffinity(0, {core})
    return str(core)


def spawn(name: str, argv: list[str], core: int, log_dir: Path, env: dict[str, str]) -> Proc:
    """Start `argv` pinned to `core` with `taskset` (exec, so the PID is the program's own)."""
    pinned = ""
    if _cores() > max(LOAD_CORE, PROXY_CORE) and shutil.which("taskset"):
        argv = ["taskset", "-c", str(core), *argv]
        pinned = str(core)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    return Proc(name, popen, log, pinned)


def free_port() -> int:
    # The port is released before the child binds it; a clash on a loopback dev box is unlikely
    # and shows up as a process that never becomes ready.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(proc: Proc, port: int, timeout: float, path: str = "/health") -> str | None:
    """Poll GET `path` until any HTTP answer arrives; return why not, or None when ready."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            return f"{proc.name} exited with code {proc.popen.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(request)
                if s.recv(16).startswith(b"HTTP/1."):
                    return None
        except OSError:
            pass
        time.sleep(0.1)
    return f"{proc.name} did not answer GET {path} on port {port} within {timeout:.0f} s"


def _tree(pid: int) -> list[int]:
    """`pid` and its live descendants, in case a server forks workers."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def child_running(pid: int, arg: str) -> int | None:
    """The PID of a descendant of `pid` with `arg` among its arguments, if there is one."""
    for p in _tree(pid)[1:]:
        with contextlib.suppress(OSError):
            if arg.encode() in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0"):
                return p
    return None


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may itself hold spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its live children, plus what its reaped children used."""
    ticks = 0
    for i, p in enumerate(_tree(pid)):
        with contextlib.suppress(OSError):
            f = _stat_fields(p)
            # utime, stime, cutime, cstime are fields 14-17, so 11-14 after the state field.
            ticks += int(f[11]) + int(f[12])
            if i == 0:
                ticks += int(f[13]) + int(f[14])
    return ticks / _CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    """Sum of one /proc/<pid>/status field over the process tree (kB)."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
                    break
    return total


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the resident-set high-water mark over the process's life (summed over workers)."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (system-wide):
    a server whose accept backlog is too small shows here, and its callers wait on SYN resends."""
    with contextlib.suppress(OSError, ValueError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for keys, values in zip(lines[::2], lines[1::2], strict=False):
            if keys.startswith("TcpExt:"):
                return int(dict(zip(keys.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def private_postgres(stack: ExitStack) -> tuple[PostgresServer | None, str]:
    """A private PostgreSQL server, stopped by its own close() on the way out; or None and why
    not. (Imported here: the tests package is needed only for this lane.)"""
    try:
        from tests.services.postgres import PostgresNotInstalled, PostgresServer
    except ImportError as e:
        return None, f"skipped: tests.services.postgres cannot be imported ({e})"
    try:
        server = PostgresServer()
    except PostgresNotInstalled as e:
        return None, f"skipped: {e}"
    stack.callback(server.close)
    try:
        server.start()
    except (RuntimeError, OSError) as e:
        return None, f"skipped: the server did not start: {str(e)[:500]}"
    return server, f"PostgreSQL {server.bin_dir.parent.name}, private server, fsync off"
