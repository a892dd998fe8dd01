"""Where usage records are kept: a SQLite file by default, or a PostgreSQL database.

`open_store(url, data_dir)` picks the backend from the URL; every backend has the surface of
`UsageStore`. Any failure of the store itself (down, locked, disk full, refused) is a
`StoreError`, whose message names the store by its redacted URL, never with a password: the
usage writer spills its batch to disk on one and tries again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from proxy.log import redact_url
from proxy.records import UsageRecord

__all__ = [
    "GroupBy",
    "StoreError",
    "Totals",
    "TotalsBy",
    "UsageGroup",
    "UsageStore",
    "open_store",
]

GroupBy = Literal["key", "model", "provider", "day"]
TotalsBy = Literal["key", "provider"]
# The group of records whose group column is NULL (no key: unauthenticated; no model or
# provider: refused before routing).
NO_GROUP = "-"
SQLITE_SUFFIXES = (".sqlite3", ".sqlite", ".db")
DEFAULT_SQLITE = "usage.sqlite3"


class StoreError(Exception):
    """The store could not do it (down, locked, full, refused); nothing of a write was kept."""


class UsageGroup(msgspec.Struct):
    """One row of a usage summary. `cost_usd` sums the known costs only; `unpriced` counts the
    records with no known cost, so a partial sum is never mistaken for a whole one."""

    group: str  # the key, model or provider name, or the UTC day as YYYY-MM-DD; "-" for none
    requests: int
    errors: int  # status >= 400
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float
    unpriced: int
    estimated: int
    p50_latency_ms: float
    p95_latency_ms: float


class Totals(msgspec.Struct):
    """What a key or provider used since a time; unknown costs count 0 here (budgets)."""

    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UsageStore(Protocol):
    """A usage store. `open()` may be called again after a `StoreError` to reconnect."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    async def write(self, records: Sequence[UsageRecord]) -> None:
        """Store a batch in one transaction; a request id already stored is skipped, so a
        replayed batch counts nothing twice."""

    async def summary(self, start: float, end: float, group_by: GroupBy,
                      key: str | None = None, model: str | None = None,
                      provider: str | None = None) -> list[UsageGroup]:
        """Records with `start <= ts < end`, grouped and sorted by group."""

    async def records(self, start: float | None, end: float | None, *, key: str | None = None,
                      model: str | None = None, provider: str | None = None,
                      status: int | None = None, limit: int = 100,
                      before: tuple[float, str] | None = None) -> list[UsageRecord]:
        """Newest first; the next page is `before=(last.ts, last.request_id)`."""

    async def totals(self, since: float, by: TotalsBy) -> dict[str, Totals]:
        """Totals per key or provider name of the records with `ts >= since`, cache hits left
        out (they spent nothing at a provider): what budgets and quotas are rebuilt from."""

    async def count(self) -> int:
        """How many records are stored."""

    async def close(self) -> None: ...


def open_store(url: str, data_dir: Path) -> UsageStore:
    """The store a `usage.store` URL names, not yet opened.

    `""` or `"sqlite"`: `data_dir/usage.sqlite3`; `sqlite:///abs/path`, or a path ending in
    .sqlite3/.sqlite/.db (relative to `data_dir`): that SQLite file; `postgresql://...` or
    `postgres://...`: that PostgreSQL database.
    """
    # Backends are imported here so that a SQLite deployment never imports asyncpg.
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        from proxy.store.postgres import PostgresStore
        return PostgresStore(url)
    from proxy.store.sqlite import SqliteStore
    if url in ("", "sqlite"):
        return SqliteStore(data_dir / DEFAULT_SQLITE)
    if scheme == "sqlite" and url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite://")))
    if not scheme and url.endswith(SQLITE_SUFFIXES):
        return SqliteStore(data_dir / Path(url).expanduser())
    raise ValueError(f"usage store {redact_url(url)!r}: expected sqlite, sqlite:///path, "
                     "a path ending in .sqlite3 or .db, or a postgresql:// URL")
