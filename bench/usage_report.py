"""What the usage section found: the gateway's CPU with recording off and on per store, what
each store wrote under the load (read from the gateway's /metrics), and each store's capacity
measured directly; and the tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.tables import fmt, table

if TYPE_CHECKING:  # bench.report imports this module
    from bench.instructions import Counted
    from bench.report import Cell

__all__ = ["OFF", "POSTGRES", "SQLITE", "StoreCapacity", "StoreLoad", "Usage", "render_usage"]

# The three gateways of the section, by their `usage.store`.
OFF = "off"
SQLITE = "sqlite"
POSTGRES = "postgresql"


@dataclass
class StoreLoad:
    """One store under one workload's load, from the gateway's /metrics before and after."""

    store: str
    workload: str
    requests: int  # completed in the lane's measured rounds, as the loader counted them
    seconds: float  # the lane's measured rounds, summed: the time it was under load
    written: int  # sluice_usage_records_written_total over the phase
    written_per_s: float
    spilled: int
    dropped: int  # must stay 0
    queue_depth_max: int  # the largest sluice_usage_queue_depth sampled during its rounds
    samples: int  # how many times /metrics was read during its rounds
    # CPU per record written of what writes the records: the PostgreSQL server (its own
    # process, not in the lane's CPU), or the SQLite writer process (a child of the gateway,
    # so its CPU is in the lane's figures too, which count the gateway's process tree).
    server_cpu_us_per_record: float | None = None


@dataclass
class StoreCapacity:
    """A direct write micro-bench of one store (proxy.store.open_store), in the bench process."""

    store: str
    records: int
    batch: int
    seconds: float
    records_per_s: float
    cpu_us_per_record: float  # the bench process (the SQLite writer process is under server)
    # The PostgreSQL server's, or the SQLite writer process's (not in the gateway's CPU).
    server_cpu_us_per_record: float | None = None


@dataclass
class Usage:
    cells: list[Cell] = field(default_factory=list)  # target: off | sqlite | postgresql
    stores: list[StoreLoad] = field(default_factory=list)
    capacity: list[StoreCapacity] = field(default_factory=list)
    # bench.instructions' lanes off, sluice (SQLite) and sluice, postgresql, per workload.
    instructions: list[Counted] = field(default_factory=list)
    postgres: str = ""  # the server's version, or why its lane was skipped
    settings: dict[str, object] = field(default_factory=dict)


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}" if values else "-"


def _cells_table(cells: list[Cell]) -> str:
    headers = ["workload", "usage store", "req/s", "p50 ms", "p99 ms", "errors",
               "proxy CPU us/req", "per round", "proxy core %", "peak RSS MB"]
    rows = [
        [c.workload, c.target, fmt(c.rps, 0), fmt(c.p50_ms, 2), fmt(c.p99_ms, 2), fmt(c.errors),
         fmt(c.proxy_cpu_us_per_req, 0), _spread(c.proxy_cpu_us_rounds),
         fmt(c.proxy_core_pct, 0), fmt(c.peak_rss_mb)]
        for c in cells
    ]
    return table(headers, rows)


def _stores_table(stores: list[StoreLoad]) -> str:
    headers = ["workload", "store", "requests", "written", "written/s", "spilled", "dropped",
               "max queue depth", "samples", "server CPU us/record"]
    rows = [
        [s.workload, s.store, fmt(s.requests), fmt(s.written), fmt(s.written_per_s, 0),
         fmt(s.spilled), fmt(s.dropped), fmt(s.queue_depth_max), fmt(s.samples),
         fmt(s.server_cpu_us_per_record)]
        for s in stores
    ]
    return table(headers, rows)


def _capacity_table(capacity: list[StoreCapacity]) -> str:
    headers = ["store", "", "records", "batch", "seconds", "records/s", "bench CPU us/record",
               "server CPU us/record"]
    rows = [
        [c.store, "", fmt(c.records), fmt(c.batch), fmt(c.seconds, 2), fmt(c.records_per_s, 0),
         fmt(c.cpu_us_per_record), fmt(c.server_cpu_us_per_record)]
        for c in capacity
    ]
    return table(headers, rows)


def _instructions_table(counted: list[Counted]) -> str:
    headers = ["workload", "lane", "gateway process", "its writer process"]
    rows = [[c.workload, c.lane, fmt(c.own, 0), fmt(c.children, 0)] for c in counted]
    return table(headers, rows)


def render_usage(usage: Usage) -> list[str]:
    s = usage.settings
    parts = [
        "",
        "Usage recording (one gateway per usage.store on one fake upstream, taking turns; "
        "off: store none, no records, metrics or request lines; "
        f"postgresql: {usage.postgres or '-'})",
        _cells_table(usage.cells),
    ]
    if usage.stores:
        parts += [
            "",
            f"Usage records under that load (the gateway's /metrics before and after each "
            f"workload, and every {s.get('sample_interval_s', '?')} s during its rounds; "
            "written/s over the lane's time under load)",
            _stores_table(usage.stores),
        ]
    if usage.instructions:
        parts += [
            "",
            "Instructions per request (callgrind, user space, sequential requests: "
            "bench.instructions; what decides the usage target, its rounds repeating to 0.3%)",
            _instructions_table(usage.instructions),
        ]
    if usage.capacity:
        parts += [
            "",
            "Store capacity (open_store, written directly from the bench process, one batch "
            "after another)",
            _capacity_table(usage.capacity),
        ]
    return parts
