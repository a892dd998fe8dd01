"""The usage section: what recording one usage record per request costs the gateway.

Three gateways on one fake upstream, alike but for `usage.store`: `none` (off: no records, no
usage metrics, no request log lines), the default SQLite file, and a private PostgreSQL server
(tests.services.postgres, stopped by its own close() at the end; its lane is skipped, with a
note, when the binaries are missing: the bench installs nothing). They are loaded with the core
workloads in rounds that take turns, as the core section's targets are, so the ratio of CPU per
request on/off holds on a noisy machine. Around each lane's rounds the gateway's /metrics is
read: records written, spilled and dropped over the workload, and the usage queue's depth,
sampled during the rounds. Last, each store's capacity: records written straight through
`proxy.store.open_store` from the bench process, in batches, as the gateway's writer does.

Every gateway keeps its SQLite file and spill file in a dir of its own under the run's temporary
dir (bench.targets). PostgreSQL is not pinned: its CPU is read apart, from /proc, and the
gateway's CPU per request is its own process's alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from bench import instructions
from bench.client import check
from bench.phases import Lane, Plan, load_phase
from bench.procs import child_running, cpu_seconds, private_postgres
from bench.report import Cell
from bench.targets import UPSTREAM_KEY_REF, Target, start_gateway, start_upstream
from bench.upstream import CHUNKS
from bench.usage_report import OFF, POSTGRES, SQLITE, StoreCapacity, StoreLoad, Usage
from bench.workloads import MODEL, WORKLOADS, Workload
from proxy.records import UsageRecord
from proxy.store import UsageStore, open_store
from proxy.store.sqlite import WRITER_SCRIPT, SqliteStore

if TYPE_CHECKING:
    from bench.procs import Proc
    from tests.services.postgres import PostgresServer

__all__ = ["usage_phase"]

# Reads of /metrics during a round, on every lane alike (off too), so that their cost (about a
# millisecond of the gateway's CPU each) falls on all: 2 a second is ~0.1 % of a core.
_SAMPLE_INTERVAL_S = 0.5
_SCRAPE_TIMEOUT_S = 5.0
# The writer flushes every usage.flush_interval (0.2 s by default): after this long, every
# record of the rounds is written, or spilled, and counted.
_SETTLE_S = 0.8
_CAPACITY_RECORDS = 20_000
_CAPACITY_BATCH = 500
_CAPACITY_DATABASE = "sluice_bench_capacity"
_INSTRUCTIONS_DATABASE = "usage_instructions"
_COUNTERS = ("written", "spilled", "dropped")
_QUEUE_DEPTH = "sluice_usage_queue_depth"


def _config(upstream: int, store: str | None) -> Callable[[int], str]:
    """The core section's route to the one fake upstream; `store` None: the default store."""
    usage = "" if store is None else f'usage: {{store: "{store}"}}\n'

    def text(port: int) -> str:
        return f"""server: {{host: 127.0.0.1, port: {port}}}
{usage}providers:
  oai: {{kind: openai, base_url: "http://127.0.0.1:{upstream}/v1", api_key: {UPSTREAM_KEY_REF}}}
models:
  {MODEL}:
    targets:
      - {{provider: oai, model: {MODEL}}}
"""

    return text


def _scrape(port: int) -> dict[str, float]:
    """The unlabelled samples of the gateway's /metrics, by name."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=_SCRAPE_TIMEOUT_S) as answer:
        body = answer.read().decode()
    out = {}
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _counters(port: int) -> dict[str, float]:
    sample = _scrape(port)
    return {k: sample.get(f"sluice_usage_records_{k}_total", 0.0) for k in _COUNTERS}


@dataclass
class _Watch:
    """One gateway's /metrics over a workload's rounds; `server` is the PID of what writes its
    records, when its CPU is to be read too: the PostgreSQL server, or the gateway's SQLite
    writer process (found at the first round: it starts with the warm-up's first write)."""

    target: Target
    server: int | None = None
    before: dict[str, float] | None = None
    server_cpu: float = 0.0
    depth_max: int = 0
    samples: int = 0
    failed: int = 0

    @contextlib.contextmanager
    def round(self) -> Iterator[None]:
        """Entered before the round's CPU readings and left after them: the first entry reads
        the counters (the warm-up's records are written by then); a thread samples the queue."""
        if self.before is None:
            if self.target.name == SQLITE and self.target.proc is not None:
                self.server = child_running(self.target.proc.pid, WRITER_SCRIPT)
            self.before = _counters(self.target.port)
            self.server_cpu = cpu_seconds(self.server) if self.server else 0.0
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(stop,), daemon=True)
        sampler.start()
        try:
            yield
        finally:
            stop.set()
            sampler.join()

    def _sample(self, stop: threading.Event) -> None:
        while not stop.wait(_SAMPLE_INTERVAL_S):
            try:
                depth = _scrape(self.target.port).get(_QUEUE_DEPTH, 0.0)
            except OSError:
                self.failed += 1
                continue
            self.samples += 1
            self.depth_max = max(self.depth_max, int(depth))

    def result(self, cell: Cell) -> StoreLoad:
        """Read after the rounds and `_SETTLE_S`."""
        assert self.before is not None
        after = _counters(self.target.port)
        delta = {k: int(after[k] - self.before[k]) for k in _COUNTERS}
        server_us = None
        if self.server:
            cpu = cpu_seconds(self.server) - self.server_cpu
            server_us = round(1e6 * cpu / delta["written"], 1) if delta["written"] else None
        return StoreLoad(
            store=self.target.name,
            workload=cell.workload,
            requests=cell.requests,
            seconds=cell.seconds,
            written=delta["written"],
            written_per_s=round(delta["written"] / cell.seconds, 1) if cell.seconds else 0.0,
            spilled=delta["spilled"],
            dropped=delta["dropped"],
            queue_depth_max=self.depth_max,
            samples=self.samples,
            server_cpu_us_per_record=server_us,
        )


def _gateways(
    stack: ExitStack, plan: Plan, upstream: int, pg_url: str | None, notes: list[str]
) -> list[Target]:
    """The gateways that answer both workloads rightly; the others are left out, with a note."""
    stores: list[tuple[str, str | None]] = [(OFF, "none"), (SQLITE, None)]
    if pg_url is not None:
        stores.append((POSTGRES, pg_url))
    live = []
    for name, store in stores:
        target = start_gateway(stack, plan.tmp, f"sluice-usage-{name}", _config(upstream, store))
        target.name = name
        for workload in WORKLOADS if not target.skipped else ():
            error, events = uvloop.run(check(target.port, workload))
            if error is not None:
                target.skipped = f"{workload.name} answers wrongly: {error}"
            elif events is not None and events != CHUNKS:
                notes.append(f"usage {name}: {events} events before [DONE], not {CHUNKS}")
        if target.skipped:
            notes.append(f"usage {name} lane not measured: {target.skipped}")
        else:
            live.append(target)
    return live


def _records(tag: str, n: int) -> list[UsageRecord]:
    """Records as the bench load leaves them: one model and provider, streams every other."""
    now = time.time()
    return [
        UsageRecord(
            ts=now + i * 1e-4, request_id=f"bench-{tag}-{i}", key=None, dialect="openai",
            operation="chat", model=MODEL, provider="oai", credential="oai",
            upstream_model=MODEL, status=200, outcome="ok", error=None, attempts=1,
            input_tokens=24, output_tokens=60, latency_ms=2.5, ttft_ms=1.0 if i % 2 else None,
            overhead_ms=0.3, stream=bool(i % 2),
        )
        for i in range(n)
    ]


async def _write_all(store: UsageStore, records: list[UsageRecord], server: int | None
                     ) -> tuple[float, float, float]:
    """Wall seconds, the bench process's CPU seconds, and the server's, of the writes alone
    (a SQLite store's server is its writer process, started by a first, untimed write)."""
    await store.open()
    try:
        if isinstance(store, SqliteStore):
            await store.write(_records("warm-up", 1))
            server = store.writer_pid
        server0 = cpu_seconds(server) if server else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(records), _CAPACITY_BATCH):
            await store.write(records[i : i + _CAPACITY_BATCH])
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return wall, cpu, (cpu_seconds(server) - server0) if server else 0.0
    finally:
        await store.close()


def _capacity(name: str, url: str, data_dir: Path, server: int | None) -> StoreCapacity:
    records = _records(name, _CAPACITY_RECORDS)
    wall, cpu, server_cpu = uvloop.run(_write_all(open_store(url, data_dir), records, server))
    n = len(records)
    return StoreCapacity(
        store=name,
        records=n,
        batch=_CAPACITY_BATCH,
        seconds=round(wall, 3),
        records_per_s=round(n / wall, 0) if wall else 0.0,
        cpu_us_per_record=round(1e6 * cpu / n, 2),
        server_cpu_us_per_record=round(1e6 * server_cpu / n, 2) if server_cpu else None,
    )


def _pg_pid(server: PostgresServer | None) -> int | None:
    return server.proc.pid if server is not None and server.proc is not None else None


def _workload(
    plan: Plan,
    live: list[Target],
    workload: Workload,
    upstream: Proc,
    pg_pid: int | None,
    log: Callable[[str], None],
) -> tuple[list[Cell], list[StoreLoad], list[str]]:
    """The gateways' rounds under one workload, and what their stores did meanwhile."""
    watches = {t.name: _Watch(t, pg_pid if t.name == POSTGRES else None) for t in live}

    def around(lane: Lane) -> contextlib.AbstractContextManager[None]:
        return watches[lane.target.name].round()

    lanes = [Lane(t, workload) for t in live]
    cells = load_phase(plan, lanes, upstream, f"usage {workload.name}", log, around)
    time.sleep(_SETTLE_S)
    stores = [watches[c.target].result(c) for c in cells if c.target != OFF]
    notes = [f"usage {w.target.name}: {w.failed} reads of /metrics failed"
             for w in watches.values() if w.failed]
    return cells, stores, notes


def usage_phase(plan: Plan, log: Callable[[str], None]) -> tuple[Usage, list[str]]:
    """The section's findings, and notes."""
    notes: list[str] = []
    usage = Usage(settings={"sample_interval_s": _SAMPLE_INTERVAL_S, "settle_s": _SETTLE_S,
                            "capacity_records": _CAPACITY_RECORDS,
                            "capacity_batch": _CAPACITY_BATCH})
    with ExitStack() as stack:
        log("usage: starting PostgreSQL")
        pg, usage.postgres = private_postgres(stack)
        if pg is None:
            notes.append(f"usage: the postgresql lane is {usage.postgres}")
        direct, upstream = start_upstream(stack, plan.tmp, "usage-upstream")
        live = _gateways(stack, plan, direct.port, pg.url if pg else None, notes)
        for workload in WORKLOADS if live else ():
            cells, stores, more = _workload(plan, live, workload, upstream, _pg_pid(pg), log)
            usage.cells += cells
            usage.stores += stores
            notes += more
        sqlite_file = plan.tmp / f"sluice-usage-{SQLITE}.data" / "usage.sqlite3"
        if any(t.name == SQLITE for t in live) and not sqlite_file.exists():
            notes.append(f"usage sqlite: no store file at {sqlite_file}")
        log("usage: store capacity")
        usage.capacity.append(_capacity(SQLITE, "sqlite", plan.tmp / "usage-capacity", None))
        if pg is not None:
            url = pg.create_database(_CAPACITY_DATABASE)
            usage.capacity.append(_capacity(POSTGRES, url, plan.tmp, _pg_pid(pg)))
        if instructions.available():
            url = pg.create_database(_INSTRUCTIONS_DATABASE) if pg is not None else None
            for workload in WORKLOADS:
                log(f"usage: instructions per {workload.name} request (callgrind)")
                usage.instructions += instructions.count(workload.name, url, lanes=(
                    instructions.OFF, instructions.SQLITE, instructions.POSTGRES))
        else:
            notes.append("usage: valgrind is not installed, so no instruction counts")
    return usage, notes
