"""The three phases of a run: load cells, latency at one connection, and concurrent streams."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import uvloop

from bench.client import hold_streams, latency_1conn
from bench.load import LoadResult, run_python_load, run_wrk
from bench.procs import Proc, cpu_seconds, listen_overflows, peak_rss_mb, rss_mb
from bench.report import Cell, Latency, Streams
from bench.targets import Target, start_baseline, start_sluice, start_upstream
from bench.workloads import STREAM, Workload

__all__ = ["Lane", "Plan", "latency_phase", "load_phase", "plan_rounds", "streams_phase"]

_LATENCY_WARMUP = 50  # requests per target before sampling: pools and caches filled
_LATENCY_LIMIT_S = 60.0  # the whole one-connection phase of a workload, at most
_STREAMS_CONNECT_PARALLEL = 64  # connects in flight at once: below any listen backlog
_STREAMS_LIMIT_S = 90.0


@dataclass(frozen=True, slots=True)
class Plan:
    duration: int  # measured seconds per target and workload, split into rounds
    round_seconds: int
    warmup: int
    connections: int
    latency_requests: int
    streams: int
    stream_chunk_delay: float
    wrk: str | None  # None: the asyncio load client stands in
    tmp: Path


def _load(plan: Plan, port: int, workload: Workload, seconds: int) -> LoadResult:
    if plan.wrk is not None:
        return run_wrk(plan.wrk, port, workload, plan.connections, seconds, plan.tmp)
    return uvloop.run(run_python_load(port, workload, plan.connections, seconds))


class Lane(NamedTuple):
    """One cell of a load phase: a target and what it is sent. Lanes of a phase take turns."""

    target: Target
    workload: Workload
    stream_events: int | None = None  # events one stream brings its caller, when known


@dataclass
class _Tally:
    """One lane's rounds, summed."""

    lane: Lane
    tool: str = ""
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    proxy_cpu: float = 0.0
    upstream_cpu: float = 0.0
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    round_cpu_us: list[float] = field(default_factory=list)

    def add(self, result: LoadResult, proxy_cpu: float, upstream_cpu: float) -> None:
        self.tool = result.tool
        self.requests += result.requests
        self.seconds += result.seconds
        self.errors += result.errors
        self.proxy_cpu += proxy_cpu
        self.upstream_cpu += upstream_cpu
        self.p50s.append(result.p50_ms)
        self.p99s.append(result.p99_ms)
        if result.requests:
            self.round_cpu_us.append(round(1e6 * proxy_cpu / result.requests, 1))


def _one_round(plan: Plan, tally: _Tally, upstream: Proc) -> None:
    """CPU from /proc around one load run; wrk's completed count is the denominator."""
    target, workload = tally.lane.target, tally.lane.workload
    proxy = target.proc
    proxy_before = cpu_seconds(proxy.pid) if proxy else 0.0
    upstream_before = cpu_seconds(upstream.pid)
    result = _load(plan, target.port, workload, plan.round_seconds)
    proxy_cpu = cpu_seconds(proxy.pid) - proxy_before if proxy else 0.0
    tally.add(result, proxy_cpu, cpu_seconds(upstream.pid) - upstream_before)


def _cell(tally: _Tally) -> Cell:
    target, workload = tally.lane.target, tally.lane.workload
    proxy = target.proc
    per_req = 1e6 / tally.requests if tally.requests else 0.0
    return Cell(
        target=target.name,
        workload=workload.name,
        tool=tally.tool,
        rounds=len(tally.p50s),
        requests=tally.requests,
        seconds=round(tally.seconds, 3),
        rps=round(tally.requests / tally.seconds, 1) if tally.seconds else 0.0,
        p50_ms=round(statistics.median(tally.p50s), 3),
        p99_ms=round(statistics.median(tally.p99s), 3),
        errors=tally.errors,
        proxy_cpu_us_per_req=round(tally.proxy_cpu * per_req, 1) if proxy else None,
        proxy_cpu_us_rounds=tally.round_cpu_us if proxy else [],
        proxy_core_pct=round(100 * tally.proxy_cpu / tally.seconds, 1) if proxy else None,
        upstream_cpu_us_per_req=round(tally.upstream_cpu * per_req, 1),
        peak_rss_mb=round(peak_rss_mb(proxy.pid), 1) if proxy else None,
        route=workload.route,
        stream_events=tally.lane.stream_events,
    )


def plan_rounds(plan: Plan) -> int:
    """Rounds per target: an even number, so that the serpentine order below is balanced."""
    rounds = max(2, plan.duration // plan.round_seconds)
    return rounds + rounds % 2


def load_phase(
    plan: Plan,
    lanes: list[Lane],
    upstream: Proc,
    title: str,
    log: Callable[[str], None],
    around: Callable[[Lane], AbstractContextManager[object]] | None = None,
) -> list[Cell]:
    """Warm each lane up, then measure in short rounds that take turns between lanes.

    The machine is shared and its speed drifts by up to 2x over tens of seconds; taking turns
    spreads that drift over every lane alike, so the ratios between them hold. `around(lane)`
    is entered before each measured round's first CPU reading and left after its last (the
    usage phase reads the gateway's /metrics there)."""
    for target, workload, _ in lanes:
        log(f"warm-up {workload.label} -> {target.name}")
        _load(plan, target.port, workload, plan.warmup)
    tallies = [_Tally(lane) for lane in lanes]
    rounds = plan_rounds(plan)
    for r in range(rounds):
        log(f"{title}: round {r + 1}/{rounds}")
        # Forward on even rounds, backward on odd ones: each lane goes as often before as after
        # each other one, so that whatever the previous run leaves behind falls on all alike.
        for tally in tallies if r % 2 == 0 else reversed(tallies):
            with around(tally.lane) if around else nullcontext():
                _one_round(plan, tally, upstream)
    return [_cell(t) for t in tallies]


def _p(values: list[float], q: int) -> float:
    """The q-th percentile in ms."""
    if len(values) < 2:
        return values[0] * 1e3 if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1e3


def latency_phase(
    plan: Plan, targets: list[Target], workload: Workload
) -> tuple[list[Latency], list[str]]:
    """Rows per target, and notes for targets that failed mid-way."""
    ports = {t.name: t.port for t in targets}
    samples, failed = uvloop.run(
        latency_1conn(ports, workload, plan.latency_requests, _LATENCY_WARMUP, _LATENCY_LIMIT_S)
    )
    notes = [
        f"{name} failed at one connection ({workload.name}): {why}" for name, why in failed.items()
    ]
    rows = []
    for name, answers in samples.items():
        if name in failed or not answers:
            continue
        totals = [a.total for a in answers]
        rows.append(
            Latency(
                target=name,
                workload=workload.name,
                requests=len(answers),
                p50_ms=round(_p(totals, 50), 4),
                p99_ms=round(_p(totals, 99), 4),
                ttfb_p50_ms=round(_p([a.ttfb for a in answers], 50), 4),
            )
        )
    direct = next((r for r in rows if r.target == "direct"), None)
    for r in rows:
        if direct is not None and r is not direct:
            r.added_p50_ms = round(r.p50_ms - direct.p50_ms, 4)
            r.added_ttfb_p50_ms = round(r.ttfb_p50_ms - direct.ttfb_p50_ms, 4)
    return rows, notes


def _hold(plan: Plan, target: Target) -> Streams:
    assert target.proc is not None
    idle = rss_mb(target.proc.pid)
    cpu_before = cpu_seconds(target.proc.pid)
    overflows_before = listen_overflows()
    held = uvloop.run(
        hold_streams(target.port, STREAM, plan.streams, _STREAMS_CONNECT_PARALLEL, _STREAMS_LIMIT_S)
    )
    return Streams(
        target=target.name,
        requested=held.requested,
        completed=held.completed,
        errors=held.errors,
        peak_open=held.peak_open,
        peak_at_s=round(held.peak_at, 2),
        ttfb_p50_ms=round(_p(held.ttfbs, 50), 1),
        ttfb_max_ms=round(max(held.ttfbs, default=0.0) * 1e3, 1),
        seconds=round(held.seconds, 2),
        cpu_s=round(cpu_seconds(target.proc.pid) - cpu_before, 2),
        listen_overflows=listen_overflows() - overflows_before,
        idle_rss_mb=round(idle, 1),
        peak_rss_mb=round(peak_rss_mb(target.proc.pid), 1),
        first_error=held.first_error,
    )


def streams_phase(plan: Plan, with_sluice: bool) -> tuple[list[Streams], list[str]]:
    """Fresh proxies, so that VmHWM is this phase's peak alone, behind a slowly paced upstream
    so that every stream is open at the same time. Returns rows and notes."""
    rows: list[Streams] = []
    notes: list[str] = []
    with ExitStack() as stack:
        upstream, _ = start_upstream(
            stack, plan.tmp, "upstream-slow", chunk_delay=plan.stream_chunk_delay
        )
        rows.append(_hold(plan, start_baseline(stack, plan.tmp, upstream, "baseline-streams")))
        if with_sluice:
            sluice = start_sluice(stack, plan.tmp, upstream, "sluice-streams")
            if sluice.skipped:
                notes.append(f"sluice skipped in the streams check: {sluice.skipped}")
            else:
                rows.append(_hold(plan, sluice))
    for row in rows:
        if row.peak_open < row.requested or row.errors:
            notes.append(
                f"{row.target}: {row.peak_open} of {row.requested} streams open at once, "
                f"{row.errors} errors {row.first_error}".rstrip()
            )
        if row.listen_overflows:
            notes.append(
                f"{row.target}: {row.listen_overflows} connections dropped for a full accept "
                "queue while its streams opened (a system-wide count; many mean a listen backlog "
                "too small); each waits for a SYN resend, 1 s then 2 s, seen in 'peak at s'"
            )
    return rows, notes
