"""Outbound proxies for the tests: tinyproxy (HTTP CONNECT) and Dante (SOCKS5), each a
subprocess with a generated config on a free loopback port, stopped by its PID.

Each proxy makes its outgoing connections from an address of its own on the loopback network
(tinyproxy from 127.0.0.2, Dante from 127.0.0.3; Linux routes all of 127/8 to `lo`), so a server
that sees a connection from that address knows which proxy it came through.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.harness import free_port, stop_process

__all__ = ["DANTE_FROM", "PROXY_PASSWORD", "PROXY_USER", "TINYPROXY_FROM", "Dante",
           "ProxyNotInstalled", "ProxyServer", "TinyProxy", "serve"]

TINYPROXY = "/usr/bin/tinyproxy"
DANTED = "/usr/sbin/danted"
TINYPROXY_FROM = "127.0.0.2"
DANTE_FROM = "127.0.0.3"
# The login of the tests' password-protected proxies.
PROXY_USER = "alice"
PROXY_PASSWORD = "pr0xy-Pa55word-9f2c"
# Both listen within milliseconds; the rest is for a loaded CI box.
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
# Both drop root for this user once listening (tinyproxy refuses to run as root without one).
RUN_AS = "nobody"


class ProxyNotInstalled(RuntimeError):
    pass


class ProxyServer:
    """A proxy daemon in the foreground, its log on stdout/stderr into `log_path`."""

    name = "proxy"
    binary = ""
    package = ""

    def __init__(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise ProxyNotInstalled(
                f"{self.binary} not found: run the tests with `make test`, which installs "
                f"Debian's {self.package} package (tests/services/install-packages)")
        # Under root the daemon's unprivileged user must read the config: not a 0700 temp dir.
        self.root = Path(tempfile.mkdtemp(prefix=f"sluice-{self.name}-",
                                          dir="/tmp" if os.geteuid() == 0 else None))
        self.root.chmod(0o755)
        self.port = free_port()
        self.log_path = self.root / f"{self.name}.log"
        self.config_path = self.root / f"{self.name}.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def config(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> ProxyServer:
        if self.running:
            return self
        self.config_path.write_text(self.config())
        self.config_path.chmod(0o644)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.root)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
            else:
                return self
        self.stop()
        raise RuntimeError(f"{self.name} not listening in {READY_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, timeout=STOP_TIMEOUT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class TinyProxy(ProxyServer):
    """tinyproxy: an HTTP proxy answering CONNECT to any port, BasicAuth when `auth` is given.

    `url` carries the credentials, `bare_url` none.
    """

    name = "tinyproxy"
    binary = TINYPROXY
    package = "tinyproxy"

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.bare_url = f"http://127.0.0.1:{self.port}"
        user = f"{auth[0]}:{auth[1]}@" if auth else ""
        self.url = f"http://{user}127.0.0.1:{self.port}"

    def config(self) -> str:
        # No ConnectPort line: CONNECT to every port (the upstreams listen on free ports).
        # No LogFile nor Syslog: the log goes to stdout, our log file.
        auth = f"BasicAuth {self.auth[0]} {self.auth[1]}\n" if self.auth else ""
        return textwrap.dedent(f"""\
            Port {self.port}
            Listen 127.0.0.1
            Bind {TINYPROXY_FROM}
            Timeout 30
            LogLevel Connect
            MaxClients 64
            Allow 127.0.0.1
            User {RUN_AS}
            Group nogroup
            """) + auth

    def command(self) -> list[str]:
        return [self.binary, "-d", "-c", str(self.config_path)]

    def connects(self) -> int:
        """CONNECT requests seen so far (its log has one `Request ...: CONNECT` line each)."""
        return sum(1 for line in self.log().splitlines() if ": CONNECT " in line)


class Dante(ProxyServer):
    """Dante's danted: a SOCKS5 proxy, with no authentication, or the `username` method when
    `require_login` (checked against the system's users, so every test login fails: that is
    what it is for)."""

    name = "danted"
    binary = DANTED
    package = "dante-server"

    def __init__(self, require_login: bool = False) -> None:
        super().__init__()
        self.require_login = require_login
        self.url = f"socks5://127.0.0.1:{self.port}"
        self.url_h = f"socks5h://127.0.0.1:{self.port}"

    def config(self) -> str:
        method = "username" if self.require_login else "none"
        return textwrap.dedent(f"""\
            logoutput: stderr
            internal: 127.0.0.1 port = {self.port}
            external: {DANTE_FROM}
            clientmethod: none
            socksmethod: {method}
            user.privileged: root
            user.unprivileged: {RUN_AS}
            client pass {{
              from: 127.0.0.0/8 to: 0.0.0.0/0
              log: error
            }}
            socks pass {{
              from: 127.0.0.0/8 to: 0.0.0.0/0
              command: connect
              log: error connect
            }}
            """)

    def command(self) -> list[str]:
        # -N 1: one mother process; -p: its PID file in our dir, not /var/run.
        return [self.binary, "-f", str(self.config_path), "-N", "1",
                "-p", str(self.root / "danted.pid")]

    def connects(self) -> int:
        """Tunnels opened so far (a `tcp/connect [` line each)."""
        return sum(1 for line in self.log().splitlines() if "tcp/connect [" in line)

    def stop(self) -> None:
        super().stop()
        # The mother's children (negotiate, request, io) leave when it does; wait for the port
        # so that a restart can bind it again.
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.05)


S = TypeVar("S", bound=ProxyServer)


def serve(make: Callable[[], S]) -> Iterator[S]:
    """For a fixture: the proxy `make()` builds, started, then closed. A missing binary fails
    the test rather than skip it: `make test` installs them."""
    try:
        server = make()
    except ProxyNotInstalled as exc:
        message = str(exc)
    else:
        try:
            server.start()
            yield server
        finally:
            server.close()
        return
    pytest.fail(message, pytrace=False)  # out of the except: the message alone, not twice
