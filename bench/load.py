"""Load at many connections: wrk (Debian's package) with a Lua script, or, when wrk cannot be had,
an asyncio load client of our own with the same outputs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.client import Conn, connect
from bench.workloads import Workload, raw_request

__all__ = ["LoadResult", "find_wrk", "run_python_load", "run_wrk"]

_APT_TIMEOUT_S = 300.0
_WRK_SLACK_S = 30.0  # wrk exits on its own after -d; past this much longer it is stuck


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    requests: int  # completed in the window; the denominator of CPU per request
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def find_wrk(install: bool) -> str | None:
    """wrk's path; installs Debian's package first when allowed, missing, and we are root."""
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "-q", "wrk"]
    # A fresh machine may have no package lists yet: install, else update and install once more.
    for argvs in ([install_cmd], [["apt-get", "update", "-q"], install_cmd]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            for argv in argvs:
                subprocess.run(
                    argv,
                    env=env,
                    check=True,
                    timeout=_APT_TIMEOUT_S,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        if found := shutil.which("wrk"):
            return found
    return None


def _lua(workload: Workload) -> str:
    # The body goes in a Lua long string, which needs no escaping of JSON.
    body = workload.body.decode()
    assert "]==]" not in body
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in workload.headers)
    return f"""
wrk.method = "POST"
wrk.path = "{workload.path}"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}

-- One machine-readable line instead of parsing the human summary (latency in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_WRK %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_wrk(
    wrk: str, port: int, workload: Workload, connections: int, seconds: int, tmp: Path
) -> LoadResult:
    """One wrk run. It inherits this process's pinning (the load core)."""
    script = tmp / (workload.label.replace(" ", "_").replace("->", "-to-") + ".lua")
    script.write_text(_lua(workload))
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{workload.path}",
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + _WRK_SLACK_S, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_WRK "):
            requests, micros, p50, p99, errors = (float(x) for x in line.split()[1:])
            return LoadResult("wrk", int(requests), micros / 1e6, p50 / 1e3, p99 / 1e3, int(errors))
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {done.stderr[-500:]}")


async def run_python_load(
    port: int, workload: Workload, connections: int, seconds: float
) -> LoadResult:
    """The fallback: `connections` keep-alive connections, each sending back to back."""
    raw = raw_request(workload, port)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn: Conn | None = None
        try:
            conn = await connect(port)
            while time.perf_counter() < deadline:
                answer = await conn.send(raw)
                if answer.status == 200:
                    latencies.append(answer.total)
                else:
                    errors += 1
        except (OSError, TimeoutError):
            errors += 1
        finally:
            if conn is not None:
                conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    if len(latencies) < 2:
        return LoadResult("python", len(latencies), elapsed, 0.0, 0.0, errors)
    cuts = statistics.quantiles(latencies, n=100)
    return LoadResult("python", len(latencies), elapsed, cuts[49] * 1e3, cuts[98] * 1e3, errors)
