"""Instructions per request, counted by valgrind's callgrind: a figure that does not move with
the machine's load, for comparisons the CPU-time bench cannot resolve on a noisy host.

Each lane's server runs under callgrind twice, answering `--few` and then `--many` sequential
requests from one client; the difference of the two totals over the difference of the counts
is the per-request cost, start-up and shutdown cancelled out. Lanes: the naive aiohttp
pass-through (`baseline`), Sluice with usage recording off (`usage.store: none`), Sluice as it
ships (SQLite records, metrics, request log lines), and the same with the records in a private
PostgreSQL server (tests.services.postgres; the lane is skipped when PostgreSQL is not
installed). Each lane's figure is its server process's own; the instructions of its children
(the SQLite writer process) are counted beside, and the PostgreSQL server's not at all.
Kernel time (writes, fsync) is not counted: callgrind sees user-space instructions only.

Run: `python -m bench.instructions [--few 200] [--many 1200] [--workload stream-20]` (about
five minutes; needs valgrind). Network traffic stays on 127.0.0.1; every server is stopped by
its PID.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.procs import free_port, private_postgres

_BODIES = {
    "non-stream": {"model": "m", "messages": [{"role": "user", "content": "hello there"}]},
    # bench.upstream answers 20 chunks and, as asked, the usage chunk.
    "stream-20": {"model": "m", "messages": [{"role": "user", "content": "hello there"}],
                  "stream": True, "stream_options": {"include_usage": True}},
}
_READY_S = 120.0
_ROOT = Path(__file__).resolve().parent.parent
# The lanes: the naive pass-through, and Sluice with usage off, in SQLite, in PostgreSQL.
BASELINE, OFF, SQLITE, POSTGRES = "baseline", "sluice, usage off", "sluice", "sluice, postgresql"
LANES = (BASELINE, OFF, SQLITE, POSTGRES)
_UPSTREAM_KEY = "sk-bench-instructions"


def _sluice_config(upstream: int, port: int, extra: str) -> str:
    return (f"server: {{host: 127.0.0.1, port: {port}}}\n"
            "providers:\n"
            f"  oai: {{kind: openai, base_url: \"http://127.0.0.1:{upstream}/v1\", "
            "api_key: env:BENCH_UPSTREAM_KEY}\n"
            "models:\n"
            "  m: {targets: [{provider: oai, model: gpt-4o-mini}]}\n" + extra)


def _lanes(upstream: int, tmp: Path, pg_url: str | None
           ) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (argv after the interpreter, environment, path to POST)."""
    lanes = {}
    # Under load the writer takes ~1000 records a flush; at callgrind's pace a 200 ms flush
    # would take a few, and charge each a whole commit. One flush at the end is the loaded case.
    batched = "flush_interval: 10m, batch_max: 2000"
    lanes_extra = [(OFF, "usage: {store: none}\n"), (SQLITE, f"usage: {{{batched}}}\n")]
    if pg_url is not None:
        lanes_extra.append((POSTGRES, f"usage: {{store: \"{pg_url}\", {batched}}}\n"))
    for name, extra in lanes_extra:
        config = tmp / f"{name.replace(' ', '_').replace(',', '')}.yaml"
        config.write_text(_sluice_config(upstream, 0, extra))
        lanes[name] = (["-m", "proxy", "serve", "--config", str(config), "--port", "{port}"],
                       {"BENCH_UPSTREAM_KEY": _UPSTREAM_KEY,
                        "SLUICE_DATA_DIR": str(tmp / f"{config.stem}.data")},
                       "/v1/chat/completions")
    lanes[BASELINE] = (["-m", "bench.baseline_proxy", "--port", "{port}", "--upstream",
                          f"http://127.0.0.1:{upstream}"], {}, "/v1/chat/completions")
    return lanes


def _count(name: str, argv: list[str], env: dict[str, str], path: str, requests: int,
           tmp: Path, body: dict[str, object]) -> tuple[int, int]:
    """The instructions of the server's process, and of its children (the SQLite writer)."""
    port = free_port()
    stem = f"callgrind-{name.replace(' ', '_').replace(',', '')}-{requests}"
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
           f"--callgrind-out-file={tmp / stem}.%p.out", sys.executable,
           *(a.replace("{port}", str(port)) for a in argv)]
    log = (tmp / f"{stem}.log").open("w")
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "PYTHONHASHSEED": "0"},
                            stdout=log, stderr=subprocess.STDOUT,
                            cwd=_ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + _READY_S
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                try:
                    client.post(path, json=body)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"{name} did not start; see {log.name}") from None
                    time.sleep(0.5)
            for _ in range(requests - 1):
                if client.post(path, json=body).status_code != 200:
                    raise RuntimeError(f"{name}: a request failed; see {log.name}")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(_READY_S)
        log.close()
    own = children = 0
    for out in tmp.glob(f"{stem}.*.out"):
        total = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if total is None:
            raise RuntimeError(f"no callgrind total in {out}")
        if out.name == f"{stem}.{proc.pid}.out":
            own = int(total.group(1))
        else:
            children += int(total.group(1))
    if not own:
        raise RuntimeError(f"no callgrind output of {name} (PID {proc.pid}) in {tmp}")
    return own, children


@dataclass
class Counted:
    """One lane's user-space instructions per request: its server process's own, and its
    children's (the SQLite writer process)."""

    lane: str
    workload: str
    own: float
    children: float


def available() -> bool:
    return shutil.which("valgrind") is not None


def count(workload: str, pg_url: str | None, lanes: Sequence[str] = LANES, few: int = 200,
          many: int = 1200) -> list[Counted]:
    """Count `lanes` (those of LANES; the PostgreSQL one needs `pg_url`) under `workload`."""
    with tempfile.TemporaryDirectory(prefix="sluice-instr-") as tmpdir:
        tmp = Path(tmpdir)
        up_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port",
                                     str(up_port)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=_ROOT)
        try:
            # Compiled bytecode first, so that no run pays for writing .pyc files.
            subprocess.run([sys.executable, "-c", "import proxy.lifecycle, proxy.store.sqlite, "
                            "bench.baseline_proxy"], check=True, cwd=_ROOT)
            time.sleep(1.0)
            every = _lanes(up_port, tmp, pg_url)
            chosen = {name: every[name] for name in lanes if name in every}
            jobs = [(name, n) for name in chosen for n in (few, many)]
            with ThreadPoolExecutor(max_workers=2) as pool:  # callgrind is single-threaded
                totals = dict(zip(jobs, pool.map(
                    lambda job: _count(job[0], *chosen[job[0]], job[1], tmp, _BODIES[workload]),
                    jobs), strict=True))
        finally:
            upstream.terminate()
            upstream.wait(10)
    return [Counted(name, workload,
                    (totals[(name, many)][0] - totals[(name, few)][0]) / (many - few),
                    (totals[(name, many)][1] - totals[(name, few)][1]) / (many - few))
            for name in chosen]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--few", type=int, default=200)
    p.add_argument("--many", type=int, default=1200)
    p.add_argument("--workload", choices=sorted(_BODIES), default="non-stream")
    args = p.parse_args(argv)
    with ExitStack() as stack:
        server, about = private_postgres(stack)
        if server is None:
            print(f"the postgresql lane is {about}", file=sys.stderr)
        url = server.url if server is not None else None
        counted = {c.lane: c for c in count(args.workload, url, few=args.few,
                                            many=args.many)}
    base = counted[BASELINE].own
    print(f"Instructions per {args.workload} request (callgrind, {args.many} - {args.few} "
          "sequential requests; user space only)")
    print(f"{'lane':20s} {'instructions':>14s} {'vs baseline':>12s} {'+ writer process':>17s}")
    for c in counted.values():
        print(f"{c.lane:20s} {c.own:14,.0f} {c.own / base:11.2f}x {c.children:17,.0f}")
    off = counted[OFF].own
    for name in (SQLITE, POSTGRES):
        if name in counted:
            own = counted[name].own
            print(f"usage recording on vs off ({name}): {own / off:.3f}x "
                  f"({own - off:,.0f} instructions a request)")
    if counted[SQLITE].children:
        total = counted[SQLITE].own + counted[SQLITE].children
        print(f"usage recording on vs off ({SQLITE}, counting its SQLite writer process too): "
              f"{total / off:.3f}x ({total - off:,.0f} instructions a request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
