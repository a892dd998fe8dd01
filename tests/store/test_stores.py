"""The usage stores, each on a real database: SQLite in tmp_path and the session's own
PostgreSQL server (a fresh database per test). One conformance matrix runs both stores through
the same scenarios; the outage and URL tests follow."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from msgspec.structs import astuple

from proxy.log import redact_url
from proxy.records import COLUMNS, UsageRecord
from proxy.store import (
    StoreError,
    Totals,
    UsageGroup,
    UsageStore,
    open_store,
)
from proxy.store import postgres as pg_store
from proxy.store import sqlite as sqlite_store
from proxy.store.postgres import PostgresStore
from proxy.store.sqlite import WRITER_SCRIPT, SqliteStore
from tests.harness import closed_port
from tests.services.postgres import PostgresServer

T0 = 1714521600.0  # 2024-05-01 00:00:00 UTC
DAY = 86400.0
PASSWORD = "s3cret-pw-do-not-log"
Tokens = tuple[int, int, int, int]  # input, output, cached, reasoning


def rec(rid: str, ts: float, key: str | None = "team-a", model: str | None = "gpt-4o",
        provider: str | None = "openai", status: int = 200, tokens: Tokens = (0, 0, 0, 0),
        cost: float | None = 0.0, latency: float = 100.0, estimated: bool = False
        ) -> UsageRecord:
    return UsageRecord(
        ts=ts, request_id=rid, key=key, dialect="openai", operation="chat", model=model,
        provider=provider, credential="main" if provider else None,
        upstream_model=f"{model}-2024" if model else None, status=status,
        outcome="ok" if status < 400 else "error", error=None if status < 400 else "upstream",
        attempts=1, input_tokens=tokens[0], output_tokens=tokens[1], cached_tokens=tokens[2],
        reasoning_tokens=tokens[3], estimated=estimated, cost_usd=cost, latency_ms=latency,
        ttft_ms=latency / 2 if status < 400 else None, overhead_ms=0.5, stream=status == 200,
        cache_hit=rid == "a1")


A1 = rec("a1", T0 + 10, tokens=(100, 10, 5, 0), cost=0.25, latency=100.0)
A2 = rec("a2", T0 + 20, tokens=(200, 20, 0, 3), cost=0.5, latency=200.0)
A3 = rec("a3", T0 + 30, model="claude", provider="anthropic", status=502, latency=300.0)
B1 = rec("b1", T0 + DAY + 10, key="team-b", model="claude", provider="anthropic",
         tokens=(50, 5, 0, 7), cost=None, latency=400.0, estimated=True)
N1 = rec("n1", T0 + DAY + 20, key=None, model=None, provider=None, status=401, cost=None,
         latency=1.0)
# Ten of one key: latencies 10..90 and an outlier 1000, two records per timestamp (ties for
# the keyset order), the last one rate-limited.
C = [rec(f"c{i}", T0 + 1000 + i // 2, key="team-c", model="bulk", status=429 if i == 9 else 200,
         tokens=(i + 1, 1, 0, 0), cost=0.125, latency=1000.0 if i == 9 else 10.0 * (i + 1))
     for i in range(10)]
DATA = [A1, A2, A3, B1, N1, *C]
NEWEST_FIRST = [N1, B1, *reversed(C), A3, A2, A1]


def group(name: str, requests: int, errors: int, tokens: Tokens,
          cost: float, unpriced: int, estimated: int, p50: float, p95: float) -> UsageGroup:
    return UsageGroup(name, requests, errors, *tokens, cost, unpriced, estimated, p50, p95)


NOBODY = group("-", 1, 1, (0, 0, 0, 0), 0.0, 1, 0, 1.0, 1.0)
CLAUDE = (2, 1, (50, 5, 0, 7), 0.0, 1, 1, 350.0, 395.0)  # a3 and b1, by model or provider
BULK = (10, 1, (55, 10, 0, 0), 1.25, 0, 0, 55.0, 590.5)  # the ten c's, by key or model
EXPECTED: dict[str, list[UsageGroup]] = {
    "key": [NOBODY,
            group("team-a", 3, 1, (300, 30, 5, 3), 0.75, 0, 0, 200.0, 290.0),
            group("team-b", 1, 0, (50, 5, 0, 7), 0.0, 1, 1, 400.0, 400.0),
            group("team-c", *BULK)],
    "model": [NOBODY, group("bulk", *BULK), group("claude", *CLAUDE),
              group("gpt-4o", 2, 0, (300, 30, 5, 3), 0.75, 0, 0, 150.0, 195.0)],
    "provider": [NOBODY, group("anthropic", *CLAUDE),
                 group("openai", 12, 1, (355, 40, 5, 3), 2.0, 0, 0, 65.0, 560.0)],
    "day": [group("2024-05-01", 13, 2, (355, 40, 5, 3), 2.0, 0, 0, 70.0, 580.0),
            group("2024-05-02", 2, 1, (50, 5, 0, 7), 0.0, 2, 1, 200.5, 380.05)],
}
INDEXES = {"usage_records_ts", "usage_records_key_ts", "usage_records_model_ts"}
SCHEMA_SQL = {
    "sqlite": ("SELECT name FROM pragma_table_info('usage_records') ORDER BY cid",
               "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_records'"),
    "postgres": ("SELECT column_name FROM information_schema.columns "
                 "WHERE table_name = 'usage_records' ORDER BY ordinal_position",
                 "SELECT indexname FROM pg_indexes WHERE tablename = 'usage_records'"),
}
MIGRATIONS = {"sqlite": sqlite_store.MIGRATIONS, "postgres": pg_store.MIGRATIONS}


def kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


async def raw(url: str, sql: str) -> list[tuple[Any, ...]]:
    """A query on the store's database, past the store."""
    if kind(url) == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite://"))) as db:
            return db.execute(sql).fetchall()
    con = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await con.fetch(sql)]
    finally:
        await con.close()


def assert_groups(got: list[UsageGroup], want: list[UsageGroup]) -> None:
    """Same groups in the same order, ints exact and of type int, floats to rounding."""
    assert [g.group for g in got] == [w.group for w in want]
    for g, w in zip(got, want, strict=True):
        assert [type(v) for v in astuple(g)] == [type(v) for v in astuple(w)], g
        assert astuple(g) == pytest.approx(astuple(w)), g.group


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/usage.sqlite3"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"store_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    yield url
    server.drop_database(name)


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[UsageStore]:
    s = open_store(store_url, tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def filled(store: UsageStore) -> UsageStore:
    await store.write(DATA)
    return store


# --- the matrix: every store ---------------------------------------------------------------


async def test_schema_is_created_then_reopened_at_the_latest_version(store_url: str,
                                                                     tmp_path: Path) -> None:
    first = open_store(store_url, tmp_path)
    await first.open()
    await first.write([A1])
    await first.close()
    again = open_store(store_url, tmp_path)
    await again.open()
    await again.open()  # the usage writer opens again after an outage
    assert await again.count() == 1
    await again.close()

    columns_sql, indexes_sql = SCHEMA_SQL[kind(store_url)]
    assert await raw(store_url, "SELECT version FROM sluice_schema") == [
        (len(MIGRATIONS[kind(store_url)]),)]
    assert [c for (c,) in await raw(store_url, columns_sql)] == list(COLUMNS)
    assert {i for (i,) in await raw(store_url, indexes_sql)} >= INDEXES


async def test_rewriting_stored_records_counts_nothing_twice(store: UsageStore) -> None:
    await store.write(DATA)
    assert await store.count() == len(DATA)
    await store.write(DATA)  # a spill replayed after a crash that followed the write
    assert await store.count() == len(DATA)
    late = rec("late", T0 + 5)
    await store.write([A1, late, late])  # one new, one stored, one twice in the batch
    assert await store.count() == len(DATA) + 1
    await store.write([])
    assert await store.count() == len(DATA) + 1


async def test_large_batches_store_every_record_once_field_for_field(store: UsageStore) -> None:
    # SQLite inserts 40 rows a statement and the rest one by one: 97 is two whole statements
    # and a remainder; the rewrite repeats records inside and across statements.
    many = [rec(f"r{i:03}", T0 + i, estimated=i % 2 == 0, cost=None if i % 3 else 0.5,
                status=200 if i % 5 else 502) for i in range(97)]
    await store.write(many)
    await store.write([*many[30:50], rec("new", T0 + 500), *many[30:50], *many[:45]])
    assert await store.count() == 98
    got = await store.records(None, None, limit=200)
    want = sorted([*many, rec("new", T0 + 500)], key=lambda r: r.ts, reverse=True)
    assert got == want
    assert [[type(v) for v in astuple(r)] for r in got] == \
        [[type(v) for v in astuple(r)] for r in want]


async def test_records_come_back_field_for_field(filled: UsageStore) -> None:
    got = await filled.records(None, None)
    assert got == NEWEST_FIRST
    # Equal is not enough: SQLite stores booleans as 0/1, which compare equal to them.
    assert [[type(v) for v in astuple(r)] for r in got] == \
        [[type(v) for v in astuple(r)] for r in NEWEST_FIRST]


@pytest.mark.parametrize("group_by", ["key", "model", "provider", "day"])
async def test_summary_sums_and_percentiles_by(filled: UsageStore, group_by: Any) -> None:
    assert_groups(await filled.summary(T0, T0 + 2 * DAY, group_by), EXPECTED[group_by])


async def test_summary_window_is_half_open_and_filters_combine(filled: UsageStore) -> None:
    a3_alone = (1, 1, (0, 0, 0, 0), 0.0, 0, 0, 300.0, 300.0)
    assert_groups(await filled.summary(T0, T0 + DAY, "provider"), [
        group("anthropic", *a3_alone),
        group("openai", 12, 1, (355, 40, 5, 3), 2.0, 0, 0, 65.0, 560.0)])
    assert_groups(await filled.summary(T0, T0 + 2 * DAY, "model", key="team-a"), [
        group("claude", *a3_alone), EXPECTED["model"][-1]])
    assert_groups(await filled.summary(T0, T0 + 2 * DAY, "day", model="claude",
                                       provider="anthropic"), [
        group("2024-05-01", *a3_alone),
        group("2024-05-02", 1, 0, (50, 5, 0, 7), 0.0, 1, 1, 400.0, 400.0)])
    assert_groups(await filled.summary(T0, A2.ts, "key"), [
        group("team-a", 1, 0, (100, 10, 5, 0), 0.25, 0, 0, 100.0, 100.0)])
    assert await filled.summary(T0 + 3 * DAY, T0 + 4 * DAY, "key") == []


async def test_unknown_cost_is_unpriced_never_zero(store: UsageStore) -> None:
    await store.write([rec("p", T0, cost=0.0), rec("u", T0 + 1, cost=None),
                       rec("k", T0 + 2, cost=0.5)])
    [g] = await store.summary(T0, T0 + DAY, "key")
    assert (g.requests, g.cost_usd, g.unpriced) == (3, 0.5, 1)
    assert (await store.totals(T0, "key"))["team-a"].cost_usd == 0.5


async def test_records_page_newest_first_through_equal_timestamps(filled: UsageStore) -> None:
    pages: list[list[UsageRecord]] = []
    before: tuple[float, str] | None = None
    while page := await filled.records(None, None, limit=3, before=before):
        pages.append(page)
        before = (page[-1].ts, page[-1].request_id)
    assert [len(p) for p in pages] == [3, 3, 3, 3, 3]
    assert [r for p in pages for r in p] == NEWEST_FIRST
    assert await filled.records(None, None, limit=0) == []
    assert await filled.records(None, None, limit=-5) == []


async def test_records_filters(filled: UsageStore) -> None:
    async def ids(**kw: Any) -> list[str]:
        start, end = kw.pop("start", None), kw.pop("end", None)
        return [r.request_id for r in await filled.records(start, end, **kw)]

    assert await ids(key="team-a") == ["a3", "a2", "a1"]
    assert await ids(status=429) == ["c9"]
    assert await ids(model="claude", provider="anthropic") == ["b1", "a3"]
    assert await ids(start=T0 + DAY) == ["n1", "b1"]
    assert await ids(end=C[0].ts) == ["a3", "a2", "a1"]  # the end is excluded
    assert await ids(key="team-c", limit=2, before=(C[5].ts, "c5")) == ["c4", "c3"]
    assert await ids(key="nobody") == []


async def test_totals_since_by_key_and_provider(filled: UsageStore) -> None:
    assert await filled.totals(A3.ts, "key") == {
        "team-a": Totals(1, 0, 0, 0.0),
        "team-b": Totals(1, 50, 5, 0.0),  # its one record has no known cost: 0 here
        "team-c": Totals(10, 55, 10, 1.25),
        "-": Totals(1, 0, 0, 0.0),
    }
    # a1 was a cache hit: it spent nothing at the provider, so totals leave it out.
    assert await filled.totals(T0, "provider") == {
        "openai": Totals(11, 255, 30, 1.75),
        "anthropic": Totals(2, 50, 5, 0.0),
        "-": Totals(1, 0, 0, 0.0),
    }
    assert await filled.totals(T0 + 3 * DAY, "key") == {}


async def test_a_closed_store_raises_store_error(store_url: str, tmp_path: Path) -> None:
    s = open_store(store_url, tmp_path)
    await s.open()
    await s.close()
    assert "closed" in repr(s)
    with pytest.raises(StoreError):
        await s.write([A1])


# --- outages --------------------------------------------------------------------------------


async def test_postgres_down_raises_store_error_and_works_again_once_up(
        postgres: PostgresServer) -> None:
    name = f"outage_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(postgres.create_database(name))
    await store.open()
    try:
        await store.write([A1])
        postgres.stop()
        try:
            with pytest.raises(StoreError, match=r"PostgreSQL postgresql://postgres@127\.0\.0\.1"):
                await store.write([A2])
            with pytest.raises(StoreError):
                await store.open()
            with pytest.raises(StoreError):
                await store.summary(T0, T0 + DAY, "key")
        finally:
            postgres.start()
        await store.write([A2])  # the pool reconnects by itself
        await store.open()  # and the usage writer's reopen finds the schema in place
        await store.write([A3])
        assert [r.request_id for r in await store.records(None, None)] == ["a3", "a2", "a1"]
    finally:
        await store.close()
        postgres.drop_database(name)


async def test_store_errors_never_show_the_password(postgres: PostgresServer) -> None:
    refused = PostgresStore(f"postgresql://sluice:{PASSWORD}@127.0.0.1:{closed_port()}/usage")
    missing_db = PostgresStore(
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:{postgres.port}/no_such_database")
    for store, why in ((refused, "Connect"), (missing_db, "does not exist")):
        with pytest.raises(StoreError) as caught:
            await store.open()
        err = caught.value
        assert why in str(err)
        assert "sluice:***@" in str(err) or "postgres:***@" in str(err)
        assert PASSWORD not in str(err) and PASSWORD not in repr(err) and PASSWORD not in \
            repr(store)
        assert err.__cause__ is None and err.__suppress_context__  # the driver's not logged


async def test_sqlite_on_an_unusable_path_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-dir.sqlite3").mkdir()
    # Root may write anywhere, so paths no one can use, rather than permission bits.
    for path in (tmp_path / "a-file" / "usage.sqlite3", tmp_path / "a-dir.sqlite3"):
        store = open_store(str(path), tmp_path)
        with pytest.raises(StoreError, match=f"SQLite {path}"):
            await store.open()
        await store.close()


async def test_sqlite_locked_raises_store_error_and_works_once_released(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    store = SqliteStore(path, busy_timeout=0.05)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another process mid-write
        with pytest.raises(StoreError, match="database is locked"):
            await store.write([A1])
        other.execute("COMMIT")
        await store.write([A1])
        assert await store.count() == 1
        assert repr(store) == f"<SqliteStore {path} open>"
    finally:
        other.close()
        await store.close()


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "path"), [
    ("", "{data}/usage.sqlite3"),
    ("sqlite", "{data}/usage.sqlite3"),
    ("sqlite:///var/lib/sluice/u.sqlite3", "/var/lib/sluice/u.sqlite3"),
    ("usage.db", "{data}/usage.db"),
    ("/srv/usage.sqlite3", "/srv/usage.sqlite3"),
])
def test_sqlite_urls(url: str, path: str, tmp_path: Path) -> None:
    store = open_store(url, tmp_path)
    assert isinstance(store, SqliteStore)
    assert store.path == Path(path.format(data=tmp_path))


@pytest.mark.parametrize("url", ["postgresql://u:pw@db.internal:5432/usage", "postgres://db/usage"])
def test_postgres_urls(url: str, tmp_path: Path) -> None:
    store = open_store(url, tmp_path)
    assert isinstance(store, PostgresStore)
    assert store.url == url
    assert ":pw@" not in repr(store)


@pytest.mark.parametrize("url", ["mysql://u:pw@h/usage", "usage.txt", "sqlite://relative.db"])
def test_unknown_urls_are_refused_without_their_password(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="usage store") as caught:
        open_store(url, tmp_path)
    assert ":pw@" not in str(caught.value)


@pytest.mark.parametrize(("url", "redacted"), [
    ("postgresql://sluice:p%40ss:w@db:5432/usage", "postgresql://sluice:***@db:5432/usage"),
    ("postgresql://sluice@db/usage", "postgresql://sluice@db/usage"),
    ("postgresql://db/usage?user=x&password=hunter2&sslmode=require",
     "postgresql://db/usage?user=x&password=***&sslmode=require"),
    ("sqlite", "sqlite"),
])
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


# --- the SQLite writer process ----------------------------------------------------------------


def _cmdline(pid: int) -> list[bytes]:
    """The process's arguments; [] once it has exited and been reaped."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return []


async def test_sqlite_writer_starts_at_the_first_write_and_stops_at_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "usage.sqlite3")
    await store.open()
    try:
        assert await store.count() == 0 and store.writer_pid is None  # readers start none
        await store.write([A1])
        pid = store.writer_pid
        assert pid is not None
        assert _cmdline(pid)[1:4] == [b"-I", b"-S", WRITER_SCRIPT.encode()]
    finally:
        await store.close()
    assert store.writer_pid is None and not _cmdline(pid)


@pytest.fixture
async def writing(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, int]]:
    """A SQLite store that has written A1, and its writer's PID."""
    store = SqliteStore(tmp_path / "usage.sqlite3")
    await store.open()
    try:
        await store.write([A1])
        pid = store.writer_pid
        assert pid is not None
        yield store, pid
    finally:
        await store.close()


async def test_sqlite_writer_gone_between_batches_is_replaced(
        writing: tuple[SqliteStore, int]) -> None:
    store, pid = writing
    os.kill(pid, signal.SIGKILL)
    for _ in range(500):  # until the loop has seen it exit
        if store.writer_pid is None:
            break
        await asyncio.sleep(0.01)
    await store.write([rec("late", T0 + 5)])
    assert store.writer_pid not in (None, pid)
    assert await store.count() == 2


async def test_sqlite_writer_killed_mid_batch_fails_the_batch(
        writing: tuple[SqliteStore, int]) -> None:
    store, pid = writing
    os.kill(pid, signal.SIGSTOP)  # the next batch is sent, never answered...
    late = rec("late", T0 + 5)
    write = asyncio.ensure_future(store.write([late]))
    await asyncio.sleep(0.2)
    assert not write.done()
    os.kill(pid, signal.SIGKILL)  # ...and the writer dies with it
    with pytest.raises(StoreError, match="the writer process stopped"):
        await write
    await store.write([late, A1])  # the spill's replay: A1 is already stored
    assert store.writer_pid not in (None, pid)
    assert await store.count() == 2


async def test_sqlite_writer_ignores_sigterm_until_its_input_closes(
        writing: tuple[SqliteStore, int]) -> None:
    # systemd and a terminal's Ctrl-C signal the whole process group: the gateway's last
    # flush, after the signal, must still find its writer.
    store, pid = writing
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    await store.write([rec("after", T0 + 6)])
    assert store.writer_pid == pid and await store.count() == 2
