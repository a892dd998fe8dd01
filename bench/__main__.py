"""`make bench`: what the gateway costs, side by side with a naive baseline, in the same run.

Core: direct to the fake upstream, the baseline pass-through, and Sluice, each loaded with one
chat completion and a 20-chunk stream. Dialects: Sluice alone, an OpenAI and an Anthropic caller
each reaching an OpenAI and an Anthropic provider (same dialect: bytes forwarded; otherwise
translated), the four routes of a workload taking turns. Chaos: one model on three fake
upstreams, one answering 429 to a share of calls and one killed half-way, against a single-target
model on the same gateway and direct calls, taking turns (bench/chaos.py). Usage: a gateway per
`usage.store` (none, SQLite, a private PostgreSQL) taking turns, the records each store wrote
under that load, and each store's capacity written directly (bench/usage.py). Exit 0 whether or not
a target is met (it reports, it is not a test); non-zero only when the harness itself fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import uvloop

from bench.chaos import ChaosPlan, chaos_phase
from bench.client import check
from bench.load import find_wrk
from bench.phases import Lane, Plan, latency_phase, load_phase, plan_rounds, streams_phase
from bench.procs import LOAD_CORE, PROXY_CORE, Proc, pin_self
from bench.report import Results, render, verdicts, write
from bench.targets import Target, start_baseline, start_sluice, start_upstream
from bench.upstream import CHUNKS
from bench.usage import usage_phase
from bench.workloads import WORKLOADS, route_workloads

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--duration", type=int, help="measured seconds per target and workload (default 12)"
    )
    p.add_argument(
        "--round",
        type=int,
        help="seconds per turn; targets take turns until --duration (default 2)",
    )
    p.add_argument("--warmup", type=int, help="seconds of load before each cell (default 2)")
    p.add_argument("--connections", type=int, default=64, help="load connections (default 64)")
    p.add_argument(
        "--latency-requests",
        type=int,
        help="sequential requests per target at one connection (default 500)",
    )
    p.add_argument("--streams", type=int, default=500, help="concurrent streams (default 500)")
    p.add_argument(
        "--stream-chunk-delay",
        type=float,
        default=0.25,
        help="upstream pacing per chunk in the streams check, s (default 0.25)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 s cells in 1 s rounds, 100 one-connection requests",
    )
    p.add_argument(
        "--loader",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk, the asyncio client, or wrk when it can be had (default)",
    )
    p.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    p.add_argument(
        "--only",
        choices=("all", "core", "translated", "chaos", "usage"),
        default="all",
        help="core: direct, baseline and Sluice, OpenAI in and out; translated: Sluice's four "
        "caller->provider routes, same-dialect and translated; chaos: three upstreams behind "
        "one model, one throttling, one dying; usage: usage records off, in SQLite and in "
        "PostgreSQL; all: each (default)",
    )
    p.add_argument(
        "--chaos-seconds",
        type=int,
        help="the chaos lane's measured load, taking turns in --round rounds (default 20)",
    )
    p.add_argument(
        "--chaos-rate", type=float, default=1000.0, help="chaos run: requests/s (default 1000)"
    )
    p.add_argument(
        "--chaos-connections",
        type=int,
        default=16,
        help="chaos run: requests in flight at most (default 16)",
    )
    p.add_argument(
        "--rate-limit-ratio",
        type=float,
        default=0.3,
        help="chaos run: share of upstream B's calls answered 429 (default 0.3)",
    )
    p.add_argument("--seed", type=int, default=1, help="chaos run: seeds B's 429s (default 1)")
    p.add_argument("--no-sluice", action="store_true", help="direct and baseline only")
    p.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where <timestamp>.json and latest.json go (default bench/results)",
    )
    args = p.parse_args(argv)
    if args.no_sluice and args.only in ("translated", "chaos", "usage"):
        p.error(f"--no-sluice leaves nothing to measure with --only {args.only}")
    quick = args.quick
    args.duration = args.duration or (2 if quick else 12)
    args.chaos_seconds = args.chaos_seconds or (6 if quick else 20)
    args.round = min(args.round or (1 if quick else 2), args.duration)
    args.warmup = args.warmup or (1 if quick else 2)
    args.latency_requests = args.latency_requests or (100 if quick else 500)
    return args


def _loader(args: argparse.Namespace) -> str | None:
    if args.loader == "python" or args.only == "chaos":  # the chaos run has its own client
        return None
    wrk = find_wrk(install=not args.no_install)
    if wrk is None and args.loader == "wrk":
        raise RuntimeError("wrk is not installed and could not be installed")
    return wrk


def _machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
    }


def _sanity(targets: list[Target], notes: list[str]) -> None:
    """One request of each workload per target: a target that answers wrong is not measured."""
    for target in targets:
        for workload in WORKLOADS:
            error, events = uvloop.run(check(target.port, workload))
            if events is not None and events != CHUNKS:
                notes.append(
                    f"{target.name}: {workload.name}: {events} events before [DONE], not {CHUNKS}"
                )
            if error is None:
                continue
            if target.name != "sluice":
                raise RuntimeError(f"{target.name} answers wrongly: {error}")
            target.skipped = target.skipped or f"answers wrongly: {error}"


def _dialect_lanes(sluice: Target, stream: bool, notes: list[str]) -> list[Lane]:
    """The routes that answer in their caller's shape; a route that does not is reported, with
    the request and the gateway's log, and left out."""
    assert sluice.proc is not None
    lanes = []
    for workload in route_workloads(stream):
        error, events = uvloop.run(check(sluice.port, workload))
        if error is None:
            lanes.append(Lane(sluice, workload, events))
            continue
        tail = sluice.proc.log_tail(12).replace("\n", "\n    ")
        notes.append(
            f"sluice {workload.label} not measured: {error}\n"
            f"  request: POST {workload.path} {workload.body.decode()}\n"
            f"  the gateway's log ends:\n    {tail}"
        )
    return lanes


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _core(plan: Plan, results: Results, upstream: Proc, targets: list[Target]) -> bool:
    """Load cells and latency of direct, baseline and Sluice; whether Sluice was measured."""
    _sanity([t for t in targets if not t.skipped], results.notes)
    results.notes += [f"{t.name} skipped: {t.skipped}" for t in targets if t.skipped]
    live = [t for t in targets if not t.skipped]
    for workload in WORKLOADS:
        lanes = [Lane(t, workload) for t in live]
        results.cells += load_phase(plan, lanes, upstream, workload.name, _progress)
    for workload in WORKLOADS:
        _progress(f"one connection, {workload.name}")
        rows, notes = latency_phase(plan, live, workload)
        results.latency, results.notes = results.latency + rows, results.notes + notes
    return any(t.name == "sluice" for t in live)


def _dialects(plan: Plan, results: Results, upstream: Proc, sluice: Target) -> None:
    """Sluice's four caller->provider routes, per workload, taking turns."""
    if sluice.skipped:
        return
    for stream in (False, True):
        lanes = _dialect_lanes(sluice, stream, results.notes)
        if lanes:
            title = f"{lanes[0].workload.name} dialects"
            results.cells += load_phase(plan, lanes, upstream, title, _progress)


def _chaos(plan: Plan, args: argparse.Namespace, results: Results) -> None:
    chaos_plan = ChaosPlan(
        seconds=args.chaos_seconds,
        round_seconds=args.round,
        warmup=args.warmup,
        rate=args.chaos_rate,
        connections=args.chaos_connections,
        rate_limit_ratio=args.rate_limit_ratio,
        retry_after=(1, 2),
        seed=args.seed,
        tmp=plan.tmp,
    )
    results.chaos, notes = chaos_phase(chaos_plan, _progress)
    results.notes += notes


def _usage(plan: Plan, results: Results) -> None:
    results.usage, notes = usage_phase(plan, _progress)
    results.notes += notes


def _measure(plan: Plan, args: argparse.Namespace, results: Results) -> None:
    """Start the targets, run the phases asked for; every process is stopped on the way out."""
    if args.only == "chaos":
        _chaos(plan, args, results)
        return
    if args.only == "usage":
        _usage(plan, results)
        return
    core = args.only in ("all", "core")
    with ExitStack() as stack:
        direct, upstream = start_upstream(stack, plan.tmp)
        targets = [direct, start_baseline(stack, plan.tmp, direct)] if core else []
        sluice = None if args.no_sluice else start_sluice(stack, plan.tmp, direct)
        if sluice is not None:
            targets.append(sluice)
        with_sluice = _core(plan, results, upstream, targets) if core else False
        if args.only in ("all", "translated") and sluice is not None:
            if not core and sluice.skipped:
                results.notes.append(f"sluice skipped: {sluice.skipped}")
            _dialects(plan, results, upstream, sluice)
    if core:
        _progress(f"{args.streams} concurrent streams")
        rows, notes = streams_phase(plan, with_sluice=with_sluice)
        results.streams, results.notes = rows, results.notes + notes
    if args.only == "all" and not args.no_sluice:
        _chaos(plan, args, results)
        _usage(plan, results)


def _run(args: argparse.Namespace) -> Results:
    wrk = _loader(args)
    pinned = bool(pin_self(LOAD_CORE))
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        plan = Plan(
            args.duration,
            args.round,
            args.warmup,
            args.connections,
            args.latency_requests,
            args.streams,
            args.stream_chunk_delay,
            wrk,
            Path(tmp),
        )
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        settings |= {
            "rounds": plan_rounds(plan),
            "loader": "wrk" if wrk else "python",
            "load_core": LOAD_CORE,
            "proxy_core": PROXY_CORE,
            "pinned": pinned,
        }
        results = Results(settings=settings, machine=_machine())
        if not pinned:
            results.notes.append("fewer than 2 cores: nothing pinned, figures mix load and proxy")
        _measure(plan, args, results)
    results.machine["loadavg_end"] = os.getloadavg()
    results.notes += [
        f"{' '.join(filter(None, (c.target, c.workload, c.route)))}: {c.errors} errors in "
        f"{c.requests} requests under load "
        "(non-2xx answers count as requests, so CPU per request is suspect)"
        for c in results.cells + (results.usage.cells if results.usage else [])
        if c.errors > 0.01 * max(c.requests, 1)
    ]
    results.verdicts = verdicts(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        results = _run(args)
    except (RuntimeError, OSError, subprocess.SubprocessError, TimeoutError) as e:
        print(f"bench: the harness failed: {e}", file=sys.stderr)
        return 1
    print(render(results))
    path = write(results, args.results_dir)
    print(f"\nwritten: {path} and {path.with_name('latest.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
