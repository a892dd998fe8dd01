"""What the chaos run found: per lane, per upstream, the calls B received while a cooldown its
429 asked for was running, what became of dead C, and the tables.

The measure of "calls sent to a cooling upstream" is taken at the fake, not from the gateway's
word: B logs each call and each 429 it sent (with the `Retry-After` it gave). A call that B
received within `Retry-After` seconds of one of its 429s, and more than `GRACE_S` after it, was
sent by a gateway that had been told to wait. Calls within `GRACE_S` of the 429 were on their
way before the gateway could have read it, and are counted apart (their lag shows how tight).
The gateway's own cooldowns, read from its operations API, are laid over the same calls as a
cross-check (allowing for the API's millisecond rounding at their ends), and their lengths
against the time asked (the gateway adds up to 10% spread).
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.chaos_load import RoundLoad, Sample, Snapshot
from bench.tables import fmt, table

__all__ = [
    "GRACE_S",
    "Chaos",
    "ChaosLane",
    "ChaosUpstream",
    "Cooling",
    "DeadUpstream",
    "LaneRounds",
    "UpstreamLog",
    "analyse",
    "render_chaos",
]

# A request the gateway wrote before it read B's 429 reaches B after it: on loopback, with the
# gateway's core not saturated, within a fraction of a millisecond. 20 ms is far beyond that
# and far below the shortest cooldown (1 s).
GRACE_S = 0.020
# The operations API gives its times to the millisecond: a call sent just after a cooldown ended
# may seem to fall up to half a millisecond before that end.
_API_ROUNDING_S = 0.001
_FAILURES_LISTED = 10
_VIOLATIONS_LISTED = 10
# Who the fakes are in the report.
_ROLES = {"A": "healthy", "B": "429 for a share", "C": "killed mid-run"}


@dataclass
class LaneRounds:
    """One lane's loads as the run went (not part of the JSON)."""

    name: str
    warmup: RoundLoad | None = None
    rounds: list[RoundLoad] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the gateway's CPU seconds per round


@dataclass
class UpstreamLog:
    name: str
    calls: list[tuple[float, int, int]]  # (monotonic s, status, Retry-After given)


@dataclass
class ChaosLane:
    lane: str
    requests: int
    served: int  # answered 200
    success_pct: float
    rps: float
    p50_ms: float  # over the served requests of every round together
    p99_ms: float
    p99_rounds_ms: list[float]  # min and max of the rounds' own p99: the machine's noise
    added_p50_ms: float | None  # over direct, same run
    added_p99_ms: float | None
    attempts: dict[str, int]  # x-sluice-attempts -> requests ("0": no header)
    proxy_cpu_us_per_req: float | None = None
    proxy_cpu_us_rounds: list[float] = field(default_factory=list)


@dataclass
class ChaosUpstream:
    name: str
    role: str
    calls: int  # calls the fake received, warm-up included
    rate_limited: int  # of which answered 429
    calls_after_kill: int
    served: int  # chaos answers whose x-sluice-provider names it


@dataclass
class Cooling:
    grace_ms: float
    rate_limits: int  # 429s B sent
    windows: int  # their cooldowns (each 429 + its Retry-After), overlapping ones merged
    window_seconds: float  # covered by them together
    requests_during: int  # chaos requests sent while one ran: a third would go to B uncooled
    in_flight: int  # calls B received within the grace after a 429
    in_flight_lag_max_ms: float | None
    to_cooling: int  # calls B received past the grace, within a cooldown: the target is 0
    to_cooling_details: list[str]
    gateway_windows: int  # B's cooldowns the operations API showed
    to_gateway_cooling: int  # calls B received past the grace into one of those
    to_gateway_cooling_details: list[str]
    unseen_rate_limits: int  # 429s that no cooldown in the operations API covers
    reaction_max_ms: float | None  # a 429 leaving B to its cooldown starting at the gateway
    over_asked_ms: list[float]  # min, max of (gateway cooldown end - latest 429 + Retry-After)


@dataclass
class DeadUpstream:
    killed_at_s: float  # seconds into the chaos lane's load
    requests_after_kill: int
    attempts_on_dead: int  # gateway attempts that found C gone (attempts not received by A/B)
    cooldowns: int  # C's cooldowns seen in the operations API
    first_cooldown_after_ms: float | None
    breaker_openings: int
    first_open_after_s: float | None
    breaker_states: list[str]  # the states seen, with when (s after the kill)


@dataclass
class Chaos:
    settings: dict[str, Any]
    lanes: list[ChaosLane]
    upstreams: list[ChaosUpstream]
    cooling: Cooling
    dead: DeadUpstream
    failures: list[str]  # chaos requests not served, with what came back
    gateway_log_tail: str = ""  # kept when a request failed or a cooling upstream was called


# --- lanes --------------------------------------------------------------------------------


def _pct(values: list[float], q: int) -> float:
    """The q-th percentile, in ms."""
    if len(values) < 2:
        return values[0] * 1e3 if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1e3


def _lane(
    name: str,
    samples: list[Sample],
    seconds: float,
    direct: ChaosLane | None,
    rounds: list[RoundLoad] | None = None,
) -> ChaosLane:
    served = [s.seconds for s in samples if s.status == 200]
    p50, p99 = round(_pct(served, 50), 3), round(_pct(served, 99), 3)
    p99s = [_pct([s.seconds for s in r.samples if s.status == 200], 99) for r in rounds or []]
    return ChaosLane(
        lane=name,
        requests=len(samples),
        served=len(served),
        success_pct=round(100 * len(served) / len(samples), 3) if samples else 0.0,
        rps=round(len(samples) / seconds, 1) if seconds else 0.0,
        p50_ms=p50,
        p99_ms=p99,
        p99_rounds_ms=[round(min(p99s), 3), round(max(p99s), 3)] if p99s else [],
        added_p50_ms=round(p50 - direct.p50_ms, 3) if direct else None,
        added_p99_ms=round(p99 - direct.p99_ms, 3) if direct else None,
        attempts={str(k): v for k, v in sorted(Counter(s.attempts for s in samples).items())},
    )


def _with_cpu(row: ChaosLane, lane: LaneRounds) -> ChaosLane:
    cpu, n = sum(lane.cpu), sum(len(r.samples) for r in lane.rounds)
    row.proxy_cpu_us_per_req = round(1e6 * cpu / n, 1) if n else None
    row.proxy_cpu_us_rounds = [
        round(1e6 * c / len(r.samples), 1) for c, r in zip(lane.cpu, lane.rounds, strict=True)
        if r.samples
    ]
    return row


def _lanes(lanes: dict[str, LaneRounds], killed_at: float) -> list[ChaosLane]:
    def samples(name: str) -> list[Sample]:
        return [s for r in lanes[name].rounds for s in r.samples]

    def seconds(name: str) -> float:
        return sum(r.seconds for r in lanes[name].rounds)

    def lane(name: str, title: str, direct: ChaosLane | None) -> ChaosLane:
        row = _lane(title, samples(name), seconds(name), direct, lanes[name].rounds)
        return row if name == "direct" else _with_cpu(row, lanes[name])

    direct = lane("direct", "direct to D", None)
    plain = lane("plain", "plain (1 target)", direct)
    calm = lane("calm", "calm (3 healthy)", direct)
    chaos = lane("chaos", "chaos (3 targets)", direct)
    alive = [s for s in samples("chaos") if s.sent < killed_at]
    dead = [s for s in samples("chaos") if s.sent >= killed_at]
    # Throughput of the halves is not measured apart; their rows carry requests and latency.
    return [
        direct,
        plain,
        calm,
        chaos,
        _lane("  chaos, C alive", alive, 0.0, direct),
        _lane("  chaos, C dead", dead, 0.0, direct),
    ]


# --- B's calls against its cooldowns --------------------------------------------------------


def _gateway_windows(snaps: list[Snapshot], provider: str) -> list[tuple[float, float]]:
    """(start, end) of each cooldown of `provider` the operations API showed, our clock."""
    windows: dict[float, float] = {}
    for snap in snaps:
        entry = snap.body.get("providers", {}).get(provider, {})
        for period in entry.get("cooldowns", []):
            start = round(float(period["started_at"]) - snap.wall_offset, 4)
            end = float(period["ends_at"]) - snap.wall_offset
            windows[start] = max(end, windows.get(start, end))
    return sorted(windows.items())


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _against_b(
    b: UpstreamLog, limits: list[tuple[float, int]], killed_at: float
) -> tuple[int, list[str], list[float]]:
    """Calls B received inside a cooldown one of its 429s asked for: (past the grace, their
    details, the lags of those within the grace)."""
    starts = [t for t, _ in limits]
    longest = max((ra for _, ra in limits), default=0)
    in_flight_lags: list[float] = []
    details: list[str] = []
    to_cooling = 0
    for t, status, _ in b.calls:
        lo = bisect.bisect_left(starts, t - longest)
        hi = bisect.bisect_left(starts, t)  # 429s strictly before this call
        lags = [(t - start, ra) for start, ra in limits[lo:hi] if t < start + ra]
        if any(lag >= GRACE_S for lag, _ in lags):
            to_cooling += 1
            if len(details) < _VIOLATIONS_LISTED:
                lag, ra = max(lags)
                details.append(f"call at {t - killed_at:+.3f} s from the kill, answered {status}, "
                               f"{lag * 1e3:.1f} ms after a 429 that asked for {ra} s")
        elif lags:
            in_flight_lags.append(min(lags)[0])
    return to_cooling, details, in_flight_lags


def _against_gateway(
    b: UpstreamLog, limits: list[tuple[float, int]], gateway: list[tuple[float, float]],
    killed_at: float,
) -> tuple[list[str], int, list[float], list[float]]:
    """B's calls and 429s against the gateway's own cooldowns of B: (calls inside one, past the
    grace; 429s none covers; each cooldown's start after its 429; its end past the time asked)."""
    inside: list[str] = []
    for t, status, _ in b.calls:
        for start, end in gateway:
            if start + GRACE_S <= t < end - _API_ROUNDING_S:
                inside.append(
                    f"call at {t - killed_at:+.3f} s from the kill, answered {status}, "
                    f"{(t - start) * 1e3:.1f} ms into the gateway's cooldown of B, "
                    f"{(end - t) * 1e3:.1f} ms before its end")
                break
    unseen = sum(
        1 for t, _ in limits if not any(start - GRACE_S <= t < end for start, end in gateway)
    )
    reactions, overs = [], []
    for start, end in gateway:
        own = [(t, ra) for t, ra in limits if start - GRACE_S <= t < end]
        if not own:
            continue
        before = [t for t, _ in own if t <= start]
        if before:
            reactions.append(start - max(before))
        overs.append(end - max(t + ra for t, ra in own))
    return inside, unseen, reactions, overs


def _cooling(
    b: UpstreamLog, snaps: list[Snapshot], chaos: list[Sample], killed_at: float
) -> Cooling:
    limits = [(t, ra) for t, status, ra in b.calls if status == 429]
    to_cooling, details, in_flight_lags = _against_b(b, limits, killed_at)
    merged = _merged([(t, t + ra) for t, ra in limits])
    ends = [end for _, end in merged]
    during = 0
    for s in chaos:
        i = bisect.bisect_right(ends, s.sent)  # the first window ending after it was sent
        during += i < len(merged) and merged[i][0] < s.sent
    gateway = _gateway_windows(snaps, "b")
    inside, unseen, reactions, overs = _against_gateway(b, limits, gateway, killed_at)
    return Cooling(
        grace_ms=GRACE_S * 1e3,
        rate_limits=len(limits),
        windows=len(merged),
        window_seconds=round(sum(e - s for s, e in merged), 3),
        requests_during=during,
        in_flight=len(in_flight_lags),
        in_flight_lag_max_ms=round(max(in_flight_lags) * 1e3, 3) if in_flight_lags else None,
        to_cooling=to_cooling,
        to_cooling_details=details,
        gateway_windows=len(gateway),
        to_gateway_cooling=len(inside),
        to_gateway_cooling_details=inside[:_VIOLATIONS_LISTED],
        unseen_rate_limits=unseen,
        reaction_max_ms=round(max(reactions) * 1e3, 3) if reactions else None,
        over_asked_ms=[round(min(overs) * 1e3, 1), round(max(overs) * 1e3, 1)] if overs else [],
    )


# --- dead C ---------------------------------------------------------------------------------


def _dead(
    snaps: list[Snapshot],
    chaos: list[Sample],
    logs: dict[str, UpstreamLog],
    killed_at: float,
    kill_at_s: float,
) -> DeadUpstream:
    after = [s for s in chaos if s.sent >= killed_at]
    received = sum(1 for name in "AB" for t, _, _ in logs[name].calls if t >= killed_at)
    cooldowns = [w for w in _gateway_windows(snaps, "c") if w[1] > killed_at]
    states: list[str] = []
    openings: set[float] = set()
    first_open: float | None = None
    for snap in snaps:
        for breaker in snap.body.get("providers", {}).get("c", {}).get("breakers", {}).values():
            state = str(breaker.get("state"))
            if breaker.get("opened_at") is not None and snap.at >= killed_at:
                openings.add(float(breaker["opened_at"]))
                if first_open is None:
                    first_open = float(breaker["opened_at"]) - killed_at
            if not states or not states[-1].startswith(state):
                states.append(f"{state} at {snap.at - killed_at:+.2f} s")
    return DeadUpstream(
        killed_at_s=kill_at_s,
        requests_after_kill=len(after),
        attempts_on_dead=sum(max(s.attempts, 0) for s in after) - received,
        cooldowns=len(cooldowns),
        first_cooldown_after_ms=round((cooldowns[0][0] - killed_at) * 1e3, 1) if cooldowns
        else None,
        breaker_openings=len(openings),
        first_open_after_s=round(first_open, 3) if first_open is not None else None,
        breaker_states=states,
    )


# --- the whole --------------------------------------------------------------------------------


def _failure(s: Sample, killed_at: float, phase: str) -> str:
    return (f"{phase} request sent {s.sent - killed_at:+.3f} s from the kill: status {s.status}, "
            f"x-sluice-attempts {s.attempts}, x-sluice-provider {s.provider or '-'}, "
            f"after {s.seconds * 1e3:.1f} ms: {s.detail[:200]}")


def analyse(
    settings: dict[str, Any],
    lanes: dict[str, LaneRounds],
    logs: dict[str, UpstreamLog],
    killed_at: float,
    log_tail: str,
) -> tuple[Chaos, list[str]]:
    """The findings and notes (lanes other than chaos failing, the poller failing)."""
    notes = []
    snaps: list[Snapshot] = []
    for name in ("plain", "calm", "chaos"):
        lane = lanes[name]
        for r in [lane.warmup, *lane.rounds]:
            if r is None:
                continue
            snaps += r.snapshots
            if r.poll_error:
                notes.append(f"chaos: the operations API poll stopped in a {name} round: "
                             f"{r.poll_error}")
    snaps.sort(key=lambda s: s.at)
    warm = lanes["chaos"].warmup
    measured = [s for r in lanes["chaos"].rounds for s in r.samples]
    warm_samples = warm.samples if warm else []
    everything = warm_samples + measured
    failures = [_failure(s, killed_at, "warm-up") for s in warm_samples if s.status != 200]
    failures += [_failure(s, killed_at, "measured") for s in measured if s.status != 200]
    for name in ("direct", "plain", "calm"):
        bad = [s for r in lanes[name].rounds for s in r.samples if s.status != 200]
        if bad:
            notes.append(f"chaos: {len(bad)} {name} requests failed, e.g. "
                         f"{_failure(bad[0], killed_at, name)}")
    upstreams = [
        ChaosUpstream(
            name=name,
            role=_ROLES[name],
            calls=len(log.calls),
            rate_limited=sum(1 for _, status, _ in log.calls if status == 429),
            calls_after_kill=sum(1 for t, _, _ in log.calls if t >= killed_at),
            served=sum(1 for s in everything
                       if s.status == 200 and s.provider == name.lower()),
        )
        for name, log in logs.items()
    ]
    cooling = _cooling(logs["B"], snaps, everything, killed_at)
    chaos = Chaos(
        settings=settings,
        lanes=_lanes(lanes, killed_at),
        upstreams=upstreams,
        cooling=cooling,
        dead=_dead(snaps, measured, logs, killed_at, settings["kill_at_s"]),
        failures=failures[:_FAILURES_LISTED],
    )
    if len(failures) > _FAILURES_LISTED:
        chaos.failures.append(f"... {len(failures)} in all")
    if failures or cooling.to_cooling or cooling.to_gateway_cooling:
        chaos.gateway_log_tail = log_tail
    return chaos, notes


# --- tables ---------------------------------------------------------------------------------


def _attempts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items()) or "-"


def _lanes_table(lanes: list[ChaosLane]) -> str:
    headers = ["lane", "", "requests", "served %", "req/s", "p50 ms", "p99 ms", "p99 per round",
               "added p50", "added p99", "x-sluice-attempts (n:requests)", "proxy CPU us/req",
               "per round"]
    rows = [
        [
            r.lane,
            "",
            fmt(r.requests),
            fmt(r.success_pct, 3),
            fmt(r.rps, 0) if r.rps else "",
            fmt(r.p50_ms, 3),
            fmt(r.p99_ms, 3),
            "-".join(f"{v:.2f}" for v in r.p99_rounds_ms) or "-",
            fmt(r.added_p50_ms, 3),
            fmt(r.added_p99_ms, 3),
            _attempts(r.attempts),
            fmt(r.proxy_cpu_us_per_req, 0),
            f"{min(r.proxy_cpu_us_rounds):,.0f}-{max(r.proxy_cpu_us_rounds):,.0f}"
            if r.proxy_cpu_us_rounds else "-",
        ]
        for r in lanes
    ]
    return table(headers, rows)


def _upstreams_table(upstreams: list[ChaosUpstream]) -> str:
    headers = ["upstream", "role", "calls received", "answered 429", "after the kill",
               "answers served via it"]
    rows = [[u.name, u.role, fmt(u.calls), fmt(u.rate_limited), fmt(u.calls_after_kill),
             fmt(u.served)] for u in upstreams]
    return table(headers, rows)


def _cooling_lines(c: Cooling) -> list[str]:
    over = (f"{c.over_asked_ms[0]:+,.0f} to {c.over_asked_ms[1]:+,.0f} ms"
            if c.over_asked_ms else "-")
    lines = [
        f"- B sent {c.rate_limits} 429s: {c.windows} cooldowns (overlaps merged), "
        f"{c.window_seconds:.1f} s in all, during which {c.requests_during} chaos requests were "
        "sent (warm-up included; round robin would give B a third of them)",
        f"- calls B received inside a cooldown it asked for, more than {c.grace_ms:g} ms after "
        f"the 429: {c.to_cooling} (target 0)",
        f"- calls B received within {c.grace_ms:g} ms of a 429 (sent before the gateway read it):"
        f" {c.in_flight}, the latest {fmt(c.in_flight_lag_max_ms, 2)} ms after it",
        f"- the gateway's own cooldowns of B (operations API): {c.gateway_windows}; calls B "
        f"received inside them past the grace (and {_API_ROUNDING_S * 1e3:g} ms before their "
        f"end, the API's rounding): {c.to_gateway_cooling}; 429s none covers: "
        f"{c.unseen_rate_limits}; each began at most {fmt(c.reaction_max_ms, 2)} ms after its "
        f"429 and ended {over} after the time asked (it adds up to 10% spread)",
    ]
    lines += [f"    {d}" for d in c.to_cooling_details + c.to_gateway_cooling_details]
    return lines


def _dead_lines(d: DeadUpstream) -> list[str]:
    first_cool = fmt(d.first_cooldown_after_ms, 0)
    first_open = fmt(d.first_open_after_s, 2)
    return [
        f"- C killed {d.killed_at_s:g} s into the chaos load; {d.requests_after_kill} requests "
        f"after it, whose attempts on dead C came to about {d.attempts_on_dead} (attempts "
        "not received by A or B)",
        f"- C's cooldowns after the kill: {d.cooldowns}, the first {first_cool} ms after it; "
        f"breaker openings: {d.breaker_openings}, the first {first_open} s after it",
        f"- C's breaker as polled: {', '.join(d.breaker_states) or '-'}",
    ]


def _cpu_split(lanes: list[ChaosLane]) -> str:
    """The CPU gap to plain, split into routing over three targets and the failures."""
    cpu = {r.lane.split()[0]: r.proxy_cpu_us_per_req for r in lanes}
    plain, calm, chaos = cpu.get("plain"), cpu.get("calm"), cpu.get("chaos")
    if not (plain and calm and chaos):
        return "CPU per request: not measured"
    return (f"CPU per request: calm (3 healthy targets) {calm / plain:.2f}x plain, chaos "
            f"{chaos / calm:.2f}x calm, chaos {chaos / plain:.2f}x plain")


def render_chaos(chaos: Chaos) -> list[str]:
    s = chaos.settings
    parts = [
        "",
        f"Chaos: model `chaos` on A (healthy), B (429 for {s['rate_limit_ratio']:.0%}, "
        f"Retry-After {'/'.join(map(str, s['retry_after']))} s) and C (killed after "
        f"{s['kill_at_s']:g} s of {s['rounds'] * s['round']} s); {s['rate']:g} req/s paced, at "
        f"most {s['connections']} in flight; {s['rounds']} rounds of {s['round']} s taking turns "
        "with plain (`plain`: one target on D), calm (`calm`: three targets on D) and direct "
        "(to D); added = over direct; p50/p99 over every round's answers together",
        _lanes_table(chaos.lanes),
        _cpu_split(chaos.lanes),
        "",
        _upstreams_table(chaos.upstreams),
        "",
        "Calls to a cooling upstream (B's log of calls and 429s, monotonic clock):",
        *_cooling_lines(chaos.cooling),
        "Dead upstream:",
        *_dead_lines(chaos.dead),
    ]
    if chaos.failures:
        parts += ["Chaos requests not served:", *(f"- {f}" for f in chaos.failures)]
    if chaos.gateway_log_tail:
        tail = chaos.gateway_log_tail.replace("\n", "\n    ")
        parts += ["The gateway's log ends:", f"    {tail}"]
    return parts
