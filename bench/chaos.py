"""The chaos run: one model on three fake upstreams while one throttles and one dies.

Upstream A is healthy; B answers 429 (`Retry-After` 1 or 2 s) to a seeded random share of its
calls; C is healthy until its process is killed (SIGKILL, by PID) half-way through the run. The
model `chaos` has one target on each, equal weights. Beside it, on the same gateway process, the
model `plain` has a single target on a fourth, healthy fake (D): the reference for CPU per
request; and the model `calm` has three targets (three providers) all on D: the same shape as
`chaos` with nothing going wrong, which tells the cost of routing over several targets from the
cost of the failures. `direct` sends the same request straight to D: the reference for latency.

The four lanes (direct, plain, calm, chaos) take turns in rounds, as the other phases do, so
drift of the machine falls on each alike; the chaos lane's rounds together are its run, and C
dies in the middle of the round after its half-way mark (under load, not between rounds).
Cooldowns and breakers run on the clock, through the other lanes' turns too. The fakes log every
call with the system's monotonic clock, the one this harness and the gateway read as well, so
the calls B received can be laid over the cooldowns its 429s asked for.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.chaos_load import RoundLoad, load_round
from bench.chaos_report import Chaos, LaneRounds, UpstreamLog, analyse
from bench.procs import Proc, cpu_seconds
from bench.targets import (
    ADMIN_KEY,
    UPSTREAM_KEY_REF,
    Target,
    start_gateway,
    start_upstream,
)
from bench.workloads import MODEL, non_stream_for, raw_request

__all__ = ["ChaosPlan", "chaos_phase"]

PLAIN_MODEL = "plain"
CALM_MODEL = "calm"
CHAOS_MODEL = "chaos"
_LANES = ("direct", "plain", "calm", "chaos")
_CALM_PROVIDERS = ("d1", "d2", "d3")
_POLL_INTERVAL_S = 0.25  # operations API reads per sluice round: far below any window (>= 1 s)
# Short traffic-control settings, so that cooldowns, their ends and a breaker's trip and probes
# all happen within a run of tens of seconds (the defaults are minutes).
_COOLDOWN = "{rate_limit: 2s, error: 2s, threshold: 3, window: 5s, cap: 30s}"
_BREAKER = (
    "{failure_ratio: 0.5, window: 5s, min_volume: 5, open_for: 2s, half_open_probes: 1, "
    "close_after: 2}"
)
_RETRY = "{attempts: 2, backoff: 50ms, max_backoff: 500ms, deadline: 10s}"


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    seconds: int  # the chaos lane's measured load, split into rounds
    round_seconds: int
    warmup: int
    rate: float  # requests per second, paced
    connections: int  # at most this many in flight
    rate_limit_ratio: float  # B's share of 429s
    retry_after: tuple[int, ...]  # B's Retry-After values, drawn at random
    seed: int
    tmp: Path

    @property
    def rounds(self) -> int:
        """An even number, so that the serpentine order of the lanes is balanced."""
        rounds = max(2, self.seconds // self.round_seconds)
        return rounds + rounds % 2

    @property
    def kill_round(self) -> int:
        return self.rounds // 2

    @property
    def kill_at(self) -> float:
        """Seconds into the chaos lane's load when C is killed."""
        return (self.kill_round + 0.5) * self.round_seconds


def _config(upstreams: dict[str, int]) -> Callable[[int], str]:
    def text(port: int) -> str:
        providers = "\n".join(
            f"  {name}: {{kind: openai, base_url: \"http://127.0.0.1:{up}/v1\", "
            f"api_key: {UPSTREAM_KEY_REF}, cooldown: {_COOLDOWN}, breaker: {_BREAKER}}}"
            for name, up in upstreams.items()
        )
        def targets(names: tuple[str, ...]) -> str:
            return ", ".join(f"{{provider: {n}, model: {MODEL}, weight: 1}}" for n in names)

        return f"""server: {{host: 127.0.0.1, port: {port}}}
admin: {{key: env:BENCH_ADMIN_KEY}}
retry: {_RETRY}
providers:
{providers}
models:
  {PLAIN_MODEL}:
    targets: [{{provider: d, model: {MODEL}}}]
  {CALM_MODEL}:
    targets: [{targets(_CALM_PROVIDERS)}]
  {CHAOS_MODEL}:
    targets: [{targets(("a", "b", "c"))}]
"""

    return text


@dataclass
class _Run:
    """The processes of a chaos run."""

    sluice: Target
    fakes: dict[str, tuple[Target, Proc, Path]]  # "A".."D" -> (target, process, call log)
    killed_at: float = 0.0  # monotonic

    def kill_c(self) -> None:
        proc = self.fakes["C"][1]
        self.killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait()


def _start(stack: ExitStack, plan: ChaosPlan) -> _Run:
    fakes = {}
    for name in "ABCD":
        log = plan.tmp / f"chaos-{name}.calls"
        switches: tuple[str, ...] = ("--log", str(log))
        if name == "B":
            switches += (
                "--rate-limit-ratio",
                str(plan.rate_limit_ratio),
                "--retry-after",
                ",".join(map(str, plan.retry_after)),
                "--seed",
                str(plan.seed),
            )
        target, proc = start_upstream(stack, plan.tmp, f"chaos-upstream-{name}", switches=switches)
        fakes[name] = (target, proc, log)
    ports = {name.lower(): fakes[name][0].port for name in "ABCD"}
    ports |= {name: ports["d"] for name in _CALM_PROVIDERS}
    sluice = start_gateway(stack, plan.tmp, "sluice-chaos", _config(ports))
    return _Run(sluice, fakes)


def _round(
    plan: ChaosPlan, run: _Run, lane: str, seconds: float, kill: bool = False
) -> tuple[RoundLoad, float]:
    """One lane's load for `seconds`; the gateway's CPU over it (0 for direct)."""
    sluice = run.sluice
    assert sluice.proc is not None
    if lane == "direct":
        port = run.fakes["D"][0].port
        raw = raw_request(non_stream_for(MODEL), port)
    else:
        port = sluice.port
        model = {"plain": PLAIN_MODEL, "calm": CALM_MODEL, "chaos": CHAOS_MODEL}[lane]
        raw = raw_request(non_stream_for(model), port)
    actions = [(plan.round_seconds / 2, run.kill_c)] if kill else None
    # Both gateway lanes read the operations API at the same pace, so its cost falls on both.
    poll = (ADMIN_KEY, _POLL_INTERVAL_S) if lane != "direct" else None
    before = cpu_seconds(sluice.proc.pid)
    result = uvloop.run(
        load_round(port, raw, plan.rate, plan.connections, seconds, actions, poll)
    )
    cpu = cpu_seconds(sluice.proc.pid) - before if lane != "direct" else 0.0
    return result, cpu


def _lanes(plan: ChaosPlan, run: _Run, log: Callable[[str], None]) -> dict[str, LaneRounds]:
    lanes = {name: LaneRounds(name) for name in _LANES}
    for name, lane in lanes.items():
        log(f"chaos: warm-up {name}")
        lane.warmup, _ = _round(plan, run, name, plan.warmup)
    chaos_round = 0
    for r in range(plan.rounds):
        log(f"chaos: round {r + 1}/{plan.rounds}")
        order = list(lanes.values())
        # Forward on even rounds, backward on odd ones, as in the other phases.
        for lane in order if r % 2 == 0 else reversed(order):
            kill = lane.name == "chaos" and chaos_round == plan.kill_round
            if kill:
                log(f"chaos: C is killed {plan.round_seconds / 2:g} s into this round")
            result, cpu = _round(plan, run, lane.name, plan.round_seconds, kill)
            lane.rounds.append(result)
            lane.cpu.append(cpu)
            chaos_round += lane.name == "chaos"
    return lanes


def _read_log(path: Path) -> list[tuple[float, int, int]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # a line cut by the kill is dropped
            rows.append((float(parts[0]), int(parts[1]), int(parts[2])))
    return rows


def chaos_phase(plan: ChaosPlan, log: Callable[[str], None]) -> tuple[Chaos | None, list[str]]:
    """The chaos run's findings, and notes; None when the gateway could not be run."""
    with ExitStack() as stack:
        run = _start(stack, plan)
        if run.sluice.skipped or run.sluice.proc is None:
            return None, [f"sluice skipped in the chaos run: {run.sluice.skipped}"]
        lanes = _lanes(plan, run, log)
        log_tail = run.sluice.proc.log_tail(30)
    logs = {
        name: UpstreamLog(name, _read_log(path))
        for name, (_, _, path) in run.fakes.items()
        if name != "D"
    }
    settings = {
        "seconds": plan.seconds,
        "round": plan.round_seconds,
        "rounds": plan.rounds,
        "warmup": plan.warmup,
        "rate": plan.rate,
        "connections": plan.connections,
        "rate_limit_ratio": plan.rate_limit_ratio,
        "retry_after": list(plan.retry_after),
        "seed": plan.seed,
        "kill_at_s": plan.kill_at,
        "cooldown": _COOLDOWN,
        "breaker": _BREAKER,
        "retry": _RETRY,
        "poll_interval_s": _POLL_INTERVAL_S,
    }
    return analyse(settings, lanes, logs, run.killed_at, log_tail)
