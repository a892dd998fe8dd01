"""Process and loop helpers shared by the e2e tests: a background event loop for the fakes and
the real gateway as a subprocess, stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from proxy.store.sqlite import WRITER_SCRIPT

T = TypeVar("T")

# Every environment variable that would switch a real provider on in the embedded default;
# the tests must never reach one.
PROVIDER_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY",
                "DEEPSEEK_API_KEY", "GROQ_API_KEY", "DASHSCOPE_API_KEY", "SLUICE_CONFIG",
                "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY")
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class ThreadLoop:
    """An event loop on its own thread, so fakes keep serving while a sync SDK call blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT)
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    return free_port()


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM,
                 timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process the tests started, by its PID: `sig`, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def stored_request_ids(data_dir: Path, store: str = "sqlite") -> list[str]:
    """The request ids of the usage records a gateway's store holds (newest first)."""
    from proxy.store import open_store

    async def read() -> list[str]:
        s = open_store(store, data_dir)
        await s.open()
        try:
            return [r.request_id for r in await s.records(None, None, limit=1000)]
        finally:
            await s.close()
    return asyncio.run(read())


class Gateway:
    """`sluice serve` as a user runs it, on a free loopback port."""

    def __init__(self, workdir: Path, config: str | None = None,
                 env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
                 tls_ca: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        # With `tls_ca` (the CA of the server.tls certificate) the gateway listens on HTTPS.
        self._ssl = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
        self.url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if k not in PROVIDER_ENV}
        # Usage records (SQLite) and the spill file live with the test's files, not the repo's.
        self.data_dir = workdir / f"data-{self.port}"
        self.env["SLUICE_DATA_DIR"] = str(self.data_dir)
        self.env.update(env or {})
        self.cmd = [sys.executable, "-m", "proxy", "serve", "--port", str(self.port), *args]
        if config is not None:
            path = workdir / f"config-{self.port}.yaml"
            path.write_text(config)
            self.cmd += ["--config", str(path)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=Path(__file__).parent.parent)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"{self.url}/health", timeout=1, context=self._ssl) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway not ready in {READY_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def sqlite_writer(self, timeout: float = 10.0) -> int:
        """The PID of the gateway's SQLite writer process (started by its first write)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                for pid in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        if WRITER_SCRIPT.encode() in args:
                            return int(pid)
            time.sleep(0.05)
        raise AssertionError(f"no SQLite writer process under the gateway in {timeout} s")

    def dropped_records(self) -> float:
        """`sluice_usage_records_dropped_total` now (0 when recording is off)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5, context=self._ssl) as resp:
            body = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith("sluice_usage_records_dropped_total"))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            # Every gateway a test starts must end without having dropped a usage record.
            with contextlib.suppress(OSError):
                dropped = self.dropped_records()
                assert dropped == 0, f"the gateway dropped {dropped:.0f} usage records"
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode
