"""A private PostgreSQL server for the tests: its own data dir and loopback port, a subprocess
stopped by its PID, that a test may stop and start again to play an outage."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness import free_port, stop_process

__all__ = ["DATABASE", "PostgresNotInstalled", "PostgresServer", "find_bin_dir"]

BIN_GLOB = "/usr/lib/postgresql/*/bin"
NEEDED = ("initdb", "postgres", "pg_isready", "createdb", "dropdb")
DATABASE = "sluice_test"
SUPERUSER = "postgres"
# postgres refuses to run as root ("root" execution of the PostgreSQL server is not permitted).
RUN_AS = "postgres"
# A fresh cluster accepts connections in well under a second; the rest is for a loaded CI box.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 30.0


class PostgresNotInstalled(RuntimeError):
    pass


def _version(bin_dir: str) -> tuple[int, ...]:
    name = Path(bin_dir).parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/*/bin holding the server and the client tools we run."""
    for bin_dir in sorted(glob.glob(BIN_GLOB), key=_version, reverse=True):
        if all(os.access(Path(bin_dir, name), os.X_OK) for name in NEEDED):
            return Path(bin_dir)
    raise PostgresNotInstalled(
        f"PostgreSQL server binaries ({', '.join(NEEDED)}) not found under {BIN_GLOB}: "
        "run the tests with `make test`, which installs Debian's postgresql package "
        "(tests/services/install-packages)")


class PostgresServer:
    """`postgres` on 127.0.0.1:<free port> with trust auth and fsync off, in a temp dir.

    `start()` and `stop()` may alternate (same port, same data); `close()` stops it for good
    and removes the dir.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self._user = RUN_AS if os.geteuid() == 0 else None
        # The server user must reach its data dir: a root-only TMPDIR (pytest's own tmp dirs
        # are 0700) would not do, so under root the dir goes straight into /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="sluice-pg-", dir="/tmp" if self._user else None))
        if self._user:
            shutil.chown(self.root, self._user, self._user)
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.url = self.url_for(DATABASE)
        self.proc: subprocess.Popen[bytes] | None = None
        self._initialized = False
        self._created = False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PostgresServer 127.0.0.1:{self.port} {state} {self.data}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> PostgresServer:
        if self.running:
            return self
        if not self._initialized:
            self._check([str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                         "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"], user=self._user)
            self._initialized = True
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                user=self._user, group=self._user, extra_groups=[] if self._user else None)
        self._wait_ready()
        if not self._created:
            self._client("createdb", DATABASE)
            self._created = True
        return self

    def stop(self) -> None:
        """Stop the server by its PID; its data stays for the next `start()`."""
        proc, self.proc = self.proc, None
        # SIGINT is PostgreSQL's fast shutdown, which ends open sessions; SIGTERM (smart
        # shutdown) would wait for every client, a test's pool included, to leave first.
        # Popen(user=) rather than `runuser`: runuser does not pass SIGINT on to its child.
        stop_process(proc, signal.SIGINT, STOP_TIMEOUT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._client("createdb", name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        # --force ends sessions a failed test may have left open.
        self._client("dropdb", "--if-exists", "--force", name)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", SUPERUSER, "-d", "postgres", "-t", "1"], check=False)
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres not ready in {READY_TIMEOUT}s:\n{self.log()}")

    def _client(self, tool: str, *args: str) -> None:
        self._check([str(self.bin_dir / tool), "-h", "127.0.0.1", "-p", str(self.port),
                     "-U", SUPERUSER, *args])

    def _check(self, cmd: list[str], user: str | None = None) -> None:
        # cwd: the server user may not be allowed into ours.
        done = subprocess.run(cmd, capture_output=True, check=False, timeout=CLIENT_TIMEOUT,
                              stdin=subprocess.DEVNULL, cwd=self.root, user=user, group=user,
                              extra_groups=[] if user else None)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n"
                               f"{(done.stdout + done.stderr).decode(errors='replace')}")
