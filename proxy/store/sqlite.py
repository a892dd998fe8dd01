"""The usage store in a SQLite file, the default: nothing to run beside the gateway.

Batches are written by a child process (proxy.store.sqlite_writer), which keeps SQLite's
B-tree work off the event loop's core. sqlite3 blocks, so reads run on one dedicated worker
thread, which also owns the reading connection (sqlite3 connections belong to the thread that
made them). WAL lets readers (the admin API, another process) read while a batch is written;
synchronous=NORMAL syncs at checkpoints, not at every commit: a power cut may lose the last
batches, never corrupt the file.
"""

from __future__ import annotations

import asyncio
import marshal
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec.structs import astuple

from proxy.records import COLUMNS, UsageRecord
from proxy.store import NO_GROUP, GroupBy, StoreError, Totals, TotalsBy, UsageGroup, sqlite_writer
from proxy.store.sqlite_writer import HEADER

__all__ = ["MIGRATIONS", "WRITER_SCRIPT", "SqliteStore"]

T = TypeVar("T")
_Row = tuple[Any, ...]  # sqlite3's rows: the column types are the schema's

# How long a write waits for another process's transaction before "database is locked".
BUSY_TIMEOUT = 5.0
# How long the writer process may take to start, and to finish its last batch at close.
_WRITER_START = 30.0
_WRITER_STOP = 30.0
# A page of `records()` at most: the admin API pages further with `before`.
MAX_PAGE = 1000

# Schema version N is reached by running MIGRATIONS[N-1]; append steps, never edit one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE usage_records (
            ts REAL NOT NULL,
            request_id TEXT NOT NULL,
            key TEXT,
            dialect TEXT NOT NULL,
            operation TEXT NOT NULL,
            model TEXT,
            provider TEXT,
            credential TEXT,
            upstream_model TEXT,
            status INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            estimated INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            latency_ms REAL NOT NULL DEFAULT 0,
            ttft_ms REAL,
            overhead_ms REAL NOT NULL DEFAULT 0,
            stream INTEGER NOT NULL DEFAULT 0,
            cache_hit INTEGER NOT NULL DEFAULT 0
        )""",
        # (ts, request_id): every time range, the keyset order of `records()`, and what makes a
        # replayed record a duplicate (it keeps its ts). Unique on request_id alone would cost
        # a random B-tree insert per record; this one only appends. Each index costs ~2 µs of
        # the gateway's CPU per record, so provider reports scan the time range instead.
        "CREATE UNIQUE INDEX usage_records_ts ON usage_records (ts, request_id)",
        "CREATE INDEX usage_records_key_ts ON usage_records (key, ts)",
        "CREATE INDEX usage_records_model_ts ON usage_records (model, ts)",
    ),
)

WRITER_SCRIPT = str(Path(sqlite_writer.__file__).resolve())  # run as a script, by its path
# Isolated (-I: no PYTHON* variables, no user site) and without site-packages (-S): the
# writer needs only the standard library.
_WRITER = (sys.executable, "-I", "-S", WRITER_SCRIPT)
_COLS = ", ".join(COLUMNS)
_GROUPS: dict[str, str] = {
    "key": f"coalesce(key, '{NO_GROUP}')",
    "model": f"coalesce(model, '{NO_GROUP}')",
    "provider": f"coalesce(provider, '{NO_GROUP}')",
    "day": "strftime('%Y-%m-%d', ts, 'unixepoch')",
}
_SUMS = """count(*), sum(status >= 400), sum(input_tokens), sum(output_tokens),
    sum(cached_tokens), sum(reasoning_tokens), total(cost_usd), count(*) - count(cost_usd),
    sum(estimated)"""
_P50, _P95 = 0.5, 0.95
# The rows either side of each percentile's position, per group: percentile_cont's
# interpolation, without moving every latency into Python.
_NEAR = "CAST((n - 1) * {q} AS INTEGER)"
_PERCENTILE_ROWS = " OR ".join(
    f"i = {_NEAR.format(q=q)} OR i = {_NEAR.format(q=q)} + 1" for q in (_P50, _P95))


def _where(conds: list[tuple[str, object]]) -> tuple[str, list[object]]:
    """`WHERE a AND b` of the (clause, value) pairs whose value is not None; a tuple value
    fills as many `?` as it has items."""
    kept = [(sql, v) for sql, v in conds if v is not None]
    if not kept:
        return "", []
    args: list[object] = []
    for _, v in kept:
        if isinstance(v, tuple):
            args.extend(v)
        else:
            args.append(v)
    return "WHERE " + " AND ".join(sql for sql, _ in kept), args


def _percentile(near: dict[int, float], n: int, q: float) -> float:
    """PostgreSQL's percentile_cont: linear between the two ranks nearest (n - 1) * q."""
    pos = (n - 1) * q
    lo = int(pos)
    low = near[lo]
    if lo + 1 >= n:
        return low
    return low + (near[lo + 1] - low) * (pos - lo)


class SqliteStore:
    """The usage store in one SQLite file."""

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._absolute = os.path.abspath(path)  # for the writer, whatever its cwd
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # reads: the worker thread
        self._writer: asyncio.subprocess.Process | None = None  # writes: sqlite_writer.py
        self._writing = asyncio.Lock()  # one frame at a time on the writer's pipes

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path} {'open' if self._db is not None else 'closed'}>"

    @property
    def writer_pid(self) -> int | None:
        """The writer process's PID while it runs (None before the first write)."""
        writer = self._writer
        return writer.pid if writer is not None and writer.returncode is None else None

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        await self._run(self._open)  # the schema is migrated here, before a writer starts

    async def close(self) -> None:
        async with self._writing:  # a batch being written is finished first
            await self._stop_writer()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            executor.shutdown(wait=False)

    async def write(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        async with self._writing:
            if self._executor is None:
                raise StoreError(f"SQLite {self.path}: the store is closed")
            writer = self._writer
            if writer is None or writer.returncode is not None:
                # Started at the first write, so that readers (the CLI, the admin API) never
                # start one; restarted when it has gone between two batches (it answered the
                # last one, so that one is stored).
                writer = await self._start_writer()
            payload = marshal.dumps(list(map(astuple, records)))
            assert writer.stdin is not None
            try:
                writer.stdin.write(HEADER.pack(len(payload)))
                writer.stdin.write(payload)
                await writer.stdin.drain()
                error = await self._answer(writer)
            except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
                # It went with this batch (uvloop raises RuntimeError on a closed pipe). The
                # batch may be committed or not: it spills and is replayed, and the store skips
                # what it holds.
                await self._stop_writer()
                raise StoreError(f"SQLite {self.path}: the writer process stopped ({exc!r})"
                                 ) from None
        if error:
            raise StoreError(f"SQLite {self.path}: {error}")

    async def _start_writer(self) -> asyncio.subprocess.Process:
        writer = await asyncio.create_subprocess_exec(
            *_WRITER, self._absolute, str(self.busy_timeout), ",".join(COLUMNS),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            error = await asyncio.wait_for(self._answer(writer), _WRITER_START)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            error = f"the writer process did not start ({exc!r})"
        if error:
            await _stop(writer)
            raise StoreError(f"SQLite {self.path}: {error}")
        self._writer = writer
        return writer

    async def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await _stop(writer)

    @staticmethod
    async def _answer(writer: asyncio.subprocess.Process) -> str:
        """The writer's answer to the last frame: "" when done, else the error's text."""
        assert writer.stdout is not None
        (size,) = HEADER.unpack(await writer.stdout.readexactly(HEADER.size))
        return (await writer.stdout.readexactly(size)).decode(errors="replace") if size else ""

    async def summary(self, start: float, end: float, group_by: GroupBy,
                      key: str | None = None, model: str | None = None,
                      provider: str | None = None) -> list[UsageGroup]:
        group = _GROUPS[group_by]
        where, args = _where([("ts >= ?", start), ("ts < ?", end), ("key = ?", key),
                              ("model = ?", model), ("provider = ?", provider)])
        sums = f"SELECT {group} AS g, {_SUMS} FROM usage_records {where} GROUP BY g"
        near = f"""SELECT g, n, i, l FROM (
            SELECT {group} AS g, latency_ms AS l,
                   row_number() OVER (PARTITION BY {group} ORDER BY latency_ms) - 1 AS i,
                   count(*) OVER (PARTITION BY {group}) AS n
            FROM usage_records {where}) WHERE {_PERCENTILE_ROWS}"""
        sum_rows, near_rows = await self._run(partial(self._read_pair, sums, near, args))
        latencies: dict[str, dict[int, float]] = {}
        for g, _, i, latency in near_rows:
            latencies.setdefault(g, {})[i] = latency
        groups = []
        for row in sum_rows:
            near_g, n = latencies[row[0]], row[1]
            values = (*row, _percentile(near_g, n, _P50), _percentile(near_g, n, _P95))
            groups.append(UsageGroup(*values))
        return sorted(groups, key=lambda u: u.group)

    async def records(self, start: float | None, end: float | None, *, key: str | None = None,
                      model: str | None = None, provider: str | None = None,
                      status: int | None = None, limit: int = 100,
                      before: tuple[float, str] | None = None) -> list[UsageRecord]:
        where, args = _where([("ts >= ?", start), ("ts < ?", end), ("key = ?", key),
                              ("model = ?", model), ("provider = ?", provider),
                              ("status = ?", status), ("(ts, request_id) < (?, ?)", before)])
        sql = (f"SELECT {_COLS} FROM usage_records {where} "
               "ORDER BY ts DESC, request_id DESC LIMIT ?")
        rows = await self._run(partial(self._read, sql, [*args, max(0, min(limit, MAX_PAGE))]))
        # Lax: SQLite hands booleans back as 0 and 1.
        return msgspec.convert([dict(zip(COLUMNS, row, strict=True)) for row in rows],
                               list[UsageRecord], strict=False)

    async def totals(self, since: float, by: TotalsBy) -> dict[str, Totals]:
        group = _GROUPS[by]
        sql = (f"SELECT {group} AS g, count(*), sum(input_tokens), sum(output_tokens), "
               "total(cost_usd) FROM usage_records WHERE ts >= ? AND cache_hit = 0 GROUP BY g")
        rows = await self._run(partial(self._read, sql, [since]))
        return {g: Totals(*rest) for g, *rest in rows}

    async def count(self) -> int:
        rows = await self._run(partial(self._read, "SELECT count(*) FROM usage_records", []))
        count: int = rows[0][0]
        return count

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError(f"SQLite {self.path}: the store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"SQLite {self.path}: {exc}") from exc

    # --- on the worker thread -------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"SQLite {self.path}: the store is not open")
        return self._db

    def _open(self) -> None:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are the explicit BEGIN/COMMIT below.
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                _migrate(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        else:
            _migrate(self._db)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _read(self, sql: str, args: list[object]) -> list[_Row]:
        rows: list[_Row] = self._conn().execute(sql, args).fetchall()
        return rows

    def _read_pair(self, first: str, second: str, args: list[object]
                   ) -> tuple[list[_Row], list[_Row]]:
        """Two reads from one snapshot, so they agree though writers go on."""
        db = self._conn()
        db.execute("BEGIN")
        try:
            return db.execute(first, args).fetchall(), db.execute(second, args).fetchall()
        finally:
            db.execute("COMMIT")


async def _stop(writer: asyncio.subprocess.Process) -> None:
    """Close the writer's stdin, its signal to finish and exit; kill it if it does not."""
    if writer.returncode is None:
        assert writer.stdin is not None
        writer.stdin.close()
        try:
            await asyncio.wait_for(writer.wait(), _WRITER_STOP)
        except TimeoutError:
            writer.kill()
            await writer.wait()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema to version len(MIGRATIONS), in one transaction."""
    # BEGIN IMMEDIATE takes the write lock first, so two processes opening a new file at
    # once migrate one after the other, the second finding the work done.
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS sluice_schema (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM sluice_schema").fetchone()
        version = row[0] or 0
        # A newer gateway may have migrated further: its added columns have defaults, so this
        # one still writes; nothing to do.
        for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
            for sql in steps:
                db.execute(sql)
            db.execute("DELETE FROM sluice_schema")
            db.execute("INSERT INTO sluice_schema (version) VALUES (?)", (number,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
