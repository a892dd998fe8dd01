"""What a run found: the result rows, the verdicts against the targets, the table and the JSON."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from bench import instructions
from bench.chaos_report import Chaos, ChaosLane, render_chaos
from bench.tables import fmt as _fmt
from bench.tables import table as _table
from bench.usage_report import OFF, POSTGRES, SQLITE, Usage, render_usage

__all__ = ["Cell", "Latency", "Results", "Streams", "Verdict", "render", "verdicts", "write"]

# Issue 3's targets, as ratios against the naive baseline measured in the same run.
CPU_NON_STREAM_MAX = 0.7
CPU_STREAM_MAX = 0.9
RSS_500_STREAMS_MAX_MB = 80.0
# Issue 4's: a translated request against the same-dialect path of its caller, same run.
CPU_TRANSLATED_MAX = 2.0
# Issue 5's: the chaos run's gateway CPU per request against the plain single-target path.
CPU_CHAOS_MAX = 1.10
# Usage accounting's: records, usage metrics and request lines on, against `usage.store: none`.
CPU_USAGE_MAX = 1.10


@dataclass
class Cell:
    """One target under one workload at many connections."""

    target: str
    workload: str
    tool: str
    rounds: int  # measured in this many turns, taking turns with the other targets
    requests: int
    seconds: float
    rps: float
    p50_ms: float  # median over the rounds
    p99_ms: float  # median over the rounds
    errors: int
    proxy_cpu_us_per_req: float | None  # None when going direct: there is no proxy
    proxy_cpu_us_rounds: list[float]  # per round: the spread shows the machine's noise
    proxy_core_pct: float | None  # how busy the proxy's core was; ~100 means it was the limit
    upstream_cpu_us_per_req: float
    peak_rss_mb: float | None
    route: str = ""  # "caller->provider" for the dialect cells; "" for the core ones
    stream_events: int | None = None  # events one stream brings its caller (dialect cells)


@dataclass
class Latency:
    """Sequential requests at one connection."""

    target: str
    workload: str
    requests: int
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float  # time to first body byte: TTFT for streams
    added_p50_ms: float | None = None  # over going direct
    added_ttfb_p50_ms: float | None = None


@dataclass
class Streams:
    """N streams held open at once through a fresh proxy process."""

    target: str
    requested: int
    completed: int
    errors: int
    peak_open: int
    peak_at_s: float  # when that peak was reached: the ramp of new streams through the proxy
    ttfb_p50_ms: float  # time to first byte of the streams, opened all at once
    ttfb_max_ms: float
    seconds: float
    cpu_s: float  # the proxy's CPU over the whole check
    # Connections the kernel dropped for a full accept queue meanwhile (system-wide count):
    # each costs its caller a SYN resend, 1 s and then 2 s later.
    listen_overflows: int
    idle_rss_mb: float
    peak_rss_mb: float
    first_error: str = ""


@dataclass
class Verdict:
    metric: str
    baseline: float | None  # the reference: the naive baseline, or the same-dialect path
    sluice: float | None
    ratio: float | None
    target: str
    met: bool | None  # None: could not be measured
    # Sluice over baseline in each round, both measured back to back: the spread is the noise.
    ratio_rounds: list[float] = field(default_factory=list)
    against: str = "baseline"  # or "same-dialect": Sluice translating against Sluice forwarding


@dataclass
class Results:
    settings: dict[str, Any]
    machine: dict[str, Any]
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))
    notes: list[str] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    streams: list[Streams] = field(default_factory=list)
    chaos: Chaos | None = None
    usage: Usage | None = None
    verdicts: list[Verdict] = field(default_factory=list)


def _find(rows: list[Any], **match: str) -> Any | None:
    for row in rows:
        if all(getattr(row, k) == v for k, v in match.items()):
            return row
    return None


def _cpu_verdict(
    metric: str,
    base: Cell | ChaosLane | None,
    ours: Cell | ChaosLane | None,
    limit: float,
    against: str = "baseline",
) -> Verdict:
    b = base.proxy_cpu_us_per_req if base else None
    o = ours.proxy_cpu_us_per_req if ours else None
    target = f"<= {limit:g}x {against} (us)"
    if base is None or ours is None or b is None or o is None or b <= 0:
        return Verdict(metric, b, o, None, target, None, against=against)
    pairs = zip(base.proxy_cpu_us_rounds, ours.proxy_cpu_us_rounds, strict=False)
    per_round = [round(y / x, 3) for x, y in pairs if x > 0]
    ratio = round(o / b, 3)
    return Verdict(metric, b, o, ratio, target, ratio <= limit, per_round, against)


def _translated_verdicts(cells: list[Cell]) -> list[Verdict]:
    """Each translated route against the same-dialect route of the same caller: same bodies,
    same process, measured in the same turns."""
    out = []
    for workload in ("non-stream", "stream-20"):
        for route in ("openai->anthropic", "anthropic->openai"):
            caller = route.split("->")[0]
            ref = _find(cells, target="sluice", workload=workload, route=f"{caller}->{caller}")
            ours = _find(cells, target="sluice", workload=workload, route=route)
            if ref is None and ours is None:
                continue
            metric = f"CPU/request {workload} {route}"
            out.append(_cpu_verdict(metric, ref, ours, CPU_TRANSLATED_MAX, "same-dialect"))
    return out


def _added_verdict(metric: str, workload: str, attr: str, latency: list[Latency]) -> Verdict:
    base = _find(latency, target="baseline", workload=workload)
    ours = _find(latency, target="sluice", workload=workload)
    b = getattr(base, attr) if base else None
    s = getattr(ours, attr) if ours else None
    if b is None or s is None:
        return Verdict(metric, b, s, None, "<= baseline's (ms)", None)
    ratio = round(s / b, 3) if b > 0 else None
    return Verdict(metric, b, s, ratio, "<= baseline's (ms)", s <= b)


def _chaos_verdicts(chaos: Chaos) -> list[Verdict]:
    """Issue 5's targets, against the plain path of the same gateway in the same turns."""
    plain = next((r for r in chaos.lanes if r.lane.startswith("plain")), None)
    ours = next((r for r in chaos.lanes if r.lane.startswith("chaos (")), None)
    c = chaos.cooling
    out = []
    if ours is not None:
        out.append(
            Verdict(
                "chaos: requests served % (A healthy throughout)",
                None,
                ours.success_pct,
                None,
                "100%",
                ours.requests > 0 and ours.served == ours.requests,
                against="plain",
            )
        )
    out += [
        Verdict(
            "chaos: calls B got in a cooldown it asked for",
            None,
            c.to_cooling,
            None,
            f"0 (past {c.grace_ms:g} ms)",
            c.to_cooling == 0,
            against="plain",
        ),
        Verdict(
            "chaos: calls B got in the gateway's cooldown",
            None,
            c.to_gateway_cooling,
            None,
            f"0 (past {c.grace_ms:g} ms)",
            c.to_gateway_cooling == 0 if c.gateway_windows else None,
            against="plain",
        ),
        _cpu_verdict("chaos: CPU/request vs plain", plain, ours, CPU_CHAOS_MAX, "plain"),
    ]
    return out


_ENGINE = {SQLITE: "writer process", POSTGRES: "PostgreSQL server"}


def _engine_us(usage: Usage, store: str, workload: str, cell: Cell) -> float | None:
    """The store's own process (SQLite's writer, PostgreSQL's server) per request served."""
    load = next((s for s in usage.stores if s.store == store and s.workload == workload), None)
    if load is None or load.server_cpu_us_per_record is None or not cell.requests:
        return None
    return load.server_cpu_us_per_record * load.written / cell.requests


def _shifted(cell: Cell, us: float) -> Cell:
    """`cell` with `us` added to its CPU per request, in total and in every round."""
    assert cell.proxy_cpu_us_per_req is not None
    return replace(cell, proxy_cpu_us_per_req=cell.proxy_cpu_us_per_req + us,
                   proxy_cpu_us_rounds=[r + us for r in cell.proxy_cpu_us_rounds])


def _instruction_verdicts(usage: Usage) -> list[Verdict]:
    """The usage target by instruction count: the gateway process, and (reported) the SQLite
    writer process added."""
    out = []
    counts = {(c.workload, c.lane): c for c in usage.instructions}
    for workload in ("non-stream", "stream-20"):
        off = counts.get((workload, instructions.OFF))
        if off is None or off.own <= 0:
            continue
        for lane, store in ((instructions.SQLITE, SQLITE), (instructions.POSTGRES, POSTGRES)):
            ours = counts.get((workload, lane))
            if ours is None:
                continue
            metric = f"usage: instructions/request {workload} {store}/off"
            ratio = round(ours.own / off.own, 3)
            out.append(Verdict(metric, off.own, ours.own, ratio, f"<= {CPU_USAGE_MAX:g}x off",
                               ratio <= CPU_USAGE_MAX, against="off"))
            if ours.children:
                both = ours.own + ours.children
                out.append(Verdict(f"{metric}, with the writer process", off.own, both,
                                   round(both / off.own, 3), "reported", None, against="off"))
    return out


def _usage_verdicts(usage: Usage) -> list[Verdict]:
    """Each store's gateway against the one with recording off, same turns; no record lost.

    The target is the gateway process's cost: by instruction count when valgrind was there (CPU
    time then reported beside), else by CPU time. The lanes' CPU counts the gateway's process
    tree, so the SQLite lane's holds its writer process: taken out, by its CPU per record over
    the phase. The store's own process (the writer, the PostgreSQL server) is then added back
    for each store in a row of its own, reported without a target."""
    out = _instruction_verdicts(usage)
    counted = bool(out)
    for workload in ("non-stream", "stream-20"):
        off = _find(usage.cells, target=OFF, workload=workload)
        for store in (SQLITE, POSTGRES):
            ours = _find(usage.cells, target=store, workload=workload)
            if off is None and ours is None:
                continue
            engine = None
            if ours is not None and ours.proxy_cpu_us_per_req is not None:
                engine = _engine_us(usage, store, workload, ours)
            gateway = ours
            if ours is not None and engine is not None and store == SQLITE:
                gateway = _shifted(ours, -engine)
            metric = f"usage: CPU/request {workload} {store}/off"
            verdict = _cpu_verdict(metric, off, gateway, CPU_USAGE_MAX, "off")
            # With instruction counts, CPU time is reported beside them: its rounds spread
            # wider here than the 10% it would judge.
            out.append(replace(verdict, target="reported", met=None) if counted else verdict)
            if gateway is not None and engine is not None:
                both = _cpu_verdict(f"{metric}, with the {_ENGINE[store]}", off,
                                    _shifted(gateway, engine), CPU_USAGE_MAX, "off")
                out.append(replace(both, target="reported", met=None))
    for store in (SQLITE, POSTGRES):
        rows = [s for s in usage.stores if s.store == store]
        if rows:
            dropped = sum(s.dropped for s in rows)
            out.append(Verdict(f"usage: records dropped {store}", None, dropped, None, "0",
                               dropped == 0, against="off"))
    return out


def verdicts(results: Results) -> list[Verdict]:
    """Issue 3's targets when the core cells ran, issue 4's when the dialect cells did, issue
    5's when the chaos run did, usage accounting's when the usage section did."""
    later = _chaos_verdicts(results.chaos) if results.chaos is not None else []
    later += _usage_verdicts(results.usage) if results.usage is not None else []
    if not any(c.route == "" for c in results.cells):
        return _translated_verdicts(results.cells) + later
    out = []
    for workload, limit in (("non-stream", CPU_NON_STREAM_MAX), ("stream-20", CPU_STREAM_MAX)):
        base = _find(results.cells, target="baseline", workload=workload, route="")
        ours = _find(results.cells, target="sluice", workload=workload, route="")
        out.append(_cpu_verdict(f"CPU/request {workload}", base, ours, limit))
    out.append(
        _added_verdict(
            "added p50 @1 conn non-stream", "non-stream", "added_p50_ms", results.latency
        )
    )
    out.append(
        _added_verdict("added p50 @1 conn stream-20", "stream-20", "added_p50_ms", results.latency)
    )
    out.append(
        _added_verdict(
            "added TTFT p50 @1 conn stream", "stream-20", "added_ttfb_p50_ms", results.latency
        )
    )
    base_s = _find(results.streams, target="baseline")
    ours_s = _find(results.streams, target="sluice")
    n = results.settings.get("streams", 500)
    b_rss = base_s.peak_rss_mb if base_s else None
    s_rss = ours_s.peak_rss_mb if ours_s else None
    held = ours_s is not None and ours_s.peak_open >= n and ours_s.errors == 0
    out.append(
        Verdict(
            f"peak RSS @{n} streams",
            b_rss,
            s_rss,
            round(s_rss / b_rss, 3) if (s_rss and b_rss) else None,
            f"<= {RSS_500_STREAMS_MAX_MB:g} MB, all {n} open",
            None if s_rss is None else (s_rss <= RSS_500_STREAMS_MAX_MB and held),
        )
    )
    return out + _translated_verdicts(results.cells) + later


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}" if values else "-"


def _cells_table(cells: list[Cell]) -> str:
    headers = [
        "workload",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "proxy CPU us/req",
        "per round",
        "proxy core %",
        "upstream us/req",
        "peak RSS MB",
    ]
    rows = [
        [
            c.workload,
            c.target,
            _fmt(c.rps, 0),
            _fmt(c.p50_ms, 2),
            _fmt(c.p99_ms, 2),
            _fmt(c.errors),
            _fmt(c.proxy_cpu_us_per_req, 0),
            _spread(c.proxy_cpu_us_rounds),
            _fmt(c.proxy_core_pct, 0),
            _fmt(c.upstream_cpu_us_per_req, 0),
            _fmt(c.peak_rss_mb),
        ]
        for c in cells
    ]
    return _table(headers, rows)


def _translated(route: str) -> bool:
    caller, _, provider = route.partition("->")
    return caller != provider


def _dialects_table(cells: list[Cell]) -> str:
    headers = [
        "workload",
        "caller->provider",
        "path",
        "events out",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "proxy CPU us/req",
        "per round",
        "proxy core %",
        "upstream us/req",
    ]
    rows = [
        [
            c.workload,
            c.route,
            "translated" if _translated(c.route) else "same-dialect",
            _fmt(c.stream_events),
            _fmt(c.rps, 0),
            _fmt(c.p50_ms, 2),
            _fmt(c.p99_ms, 2),
            _fmt(c.errors),
            _fmt(c.proxy_cpu_us_per_req, 0),
            _spread(c.proxy_cpu_us_rounds),
            _fmt(c.proxy_core_pct, 0),
            _fmt(c.upstream_cpu_us_per_req, 0),
        ]
        for c in cells
    ]
    return _table(headers, rows)


def _latency_table(latency: list[Latency]) -> str:
    headers = [
        "workload",
        "target",
        "requests",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "TTFB p50 ms",
        "added TTFB ms",
    ]
    rows = [
        [
            r.workload,
            r.target,
            _fmt(r.requests),
            _fmt(r.p50_ms, 3),
            _fmt(r.p99_ms, 3),
            _fmt(r.added_p50_ms, 3),
            _fmt(r.ttfb_p50_ms, 3),
            _fmt(r.added_ttfb_p50_ms, 3),
        ]
        for r in latency
    ]
    return _table(headers, rows)


def _streams_table(streams: list[Streams]) -> str:
    headers = [
        "target",
        "",
        "requested",
        "peak open",
        "completed",
        "errors",
        "peak at s",
        "TTFB p50 ms",
        "TTFB max ms",
        "seconds",
        "proxy CPU s",
        "listen overflows",
        "idle RSS MB",
        "peak RSS MB",
    ]
    rows = [
        [
            s.target,
            "",
            _fmt(s.requested),
            _fmt(s.peak_open),
            _fmt(s.completed),
            _fmt(s.errors),
            _fmt(s.peak_at_s, 2),
            _fmt(s.ttfb_p50_ms),
            _fmt(s.ttfb_max_ms),
            _fmt(s.seconds),
            _fmt(s.cpu_s, 2),
            _fmt(s.listen_overflows),
            _fmt(s.idle_rss_mb),
            _fmt(s.peak_rss_mb),
        ]
        for s in streams
    ]
    return _table(headers, rows)


def _verdicts_table(rows_in: list[Verdict], reference: str, measured: str) -> str:
    headers = ["metric", "target", reference, measured, "ratio", "per round", "verdict"]
    word = {True: "MET", False: "MISSED", None: "n/a"}
    # Sub-millisecond latencies, and success rates where 99.95 must not read as 100.0.
    fine = ("p50", "TTFT", "%")
    rows = [
        [
            v.metric,
            v.target,
            _fmt(v.baseline, 3 if any(f in v.metric for f in fine) else 1),
            _fmt(v.sluice, 3 if any(f in v.metric for f in fine) else 1),
            "-" if v.ratio is None else f"{v.ratio:.2f}x",
            f"{min(v.ratio_rounds):.2f}-{max(v.ratio_rounds):.2f}x" if v.ratio_rounds else "-",
            word[v.met],
        ]
        for v in rows_in
    ]
    return _table(headers, rows)


def _loadavg(machine: dict[str, Any], key: str) -> str:
    values = machine.get(key)
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


def _core_parts(results: Results) -> list[str]:
    s = results.settings
    core = [c for c in results.cells if not c.route]
    verdicts_ = [v for v in results.verdicts if v.against == "baseline"]
    parts = []
    if core:
        parts += [
            "",
            "Throughput and CPU (many connections; p50/p99: median over rounds)",
            _cells_table(core),
        ]
    if results.latency:
        parts += [
            "",
            f"Latency at one connection ({s['latency_requests']} sequential requests per target, "
            "interleaved; added = over direct)",
            _latency_table(results.latency),
        ]
    if results.streams:
        parts += [
            "",
            f"{s['streams']} concurrent streams (fresh proxy processes, upstream paced "
            f"{s['stream_chunk_delay']} s per chunk)",
            _streams_table(results.streams),
        ]
    if verdicts_:
        parts += [
            "",
            "Targets (Sluice against the baseline, same run)",
            _verdicts_table(verdicts_, "baseline", "sluice"),
        ]
    return parts


def _dialect_parts(results: Results) -> list[str]:
    dialects = [c for c in results.cells if c.route]
    verdicts_ = [v for v in results.verdicts if v.against == "same-dialect"]
    parts = []
    if dialects:
        parts += [
            "",
            "Dialects through Sluice (caller endpoint -> provider kind on the same fake upstream; "
            "the routes of a workload take turns; events out: per stream, to the caller)",
            _dialects_table(dialects),
        ]
    if verdicts_:
        parts += [
            "",
            "Targets (translated against the same caller's same-dialect path, same run)",
            _verdicts_table(verdicts_, "same-dialect", "translated"),
        ]
    return parts


def _chaos_parts(results: Results) -> list[str]:
    if results.chaos is None:
        return []
    parts = render_chaos(results.chaos)
    verdicts_ = [v for v in results.verdicts if v.against == "plain"]
    if verdicts_:
        parts += [
            "",
            "Targets (chaos against the plain path: same gateway process, same turns)",
            _verdicts_table(verdicts_, "plain", "chaos"),
        ]
    return parts


def _usage_parts(results: Results) -> list[str]:
    if results.usage is None:
        return []
    parts = render_usage(results.usage)
    verdicts_ = [v for v in results.verdicts if v.against == "off"]
    if verdicts_:
        parts += [
            "",
            "Targets (usage recorded against usage.store none: same upstream, same turns)",
            _verdicts_table(verdicts_, "off", "on"),
        ]
    return parts


def render(results: Results) -> str:
    s = results.settings
    cells = (
        f"{s['connections']} connections; per cell {s['rounds']} rounds of {s['round']} s "
        f"taking turns, after {s['warmup']} s warm-up; loader {s['loader']}; "
        if s.get("only") != "chaos"
        else ""
    )
    parts = [
        f"Sluice bench {results.timestamp} ({s.get('only', 'all')}): {cells}"
        f"proxy on core {s['proxy_core']}, upstream and load on core {s['load_core']}",
        f"machine load average {_loadavg(results.machine, 'loadavg_start')} at start, "
        f"{_loadavg(results.machine, 'loadavg_end')} at end (other work on the machine "
        "is noise; the ratios, measured in turns, are what hold)",
        *_core_parts(results),
        *_dialect_parts(results),
        *_chaos_parts(results),
        *_usage_parts(results),
    ]
    if results.notes:
        parts += ["", "Notes:", *(f"- {n}" for n in results.notes)]
    return "\n".join(parts)


def write(results: Results, directory: Path) -> Path:
    """`<timestamp>.json` and `latest.json` under `directory`; returns the former."""
    directory.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(dataclasses.asdict(results), option=orjson.OPT_INDENT_2)
    path = directory / f"{results.timestamp}.json"
    path.write_bytes(data)
    (directory / "latest.json").write_bytes(data)
    return path
