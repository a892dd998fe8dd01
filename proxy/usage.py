"""One usage record per request, and the path it takes to a store without ever being dropped.

The request path only builds a `UsageRecord` and appends it to a bounded in-memory queue; a
background writer drains the queue in batches every `usage.flush_interval` into the store. When
the store is slow or down, batches spill to an append-only file and are replayed when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from proxy.log import event, redact_url, request_lines
from proxy.records import COLUMNS, UsageRecord
from proxy.store import StoreError

if TYPE_CHECKING:
    from proxy.config.settings import UsageSettings
    from proxy.ledger import Ledger
    from proxy.metrics import Metrics
    from proxy.store import UsageStore

__all__ = ["COLUMNS", "Recorder", "Spill", "UsageRecord"]

# --- the path to the store ------------------------------------------------------------------


class Spill:
    """An append-only file of records the store could not take yet, one JSON array per line.

    Replay renames the file first, so records spilled meanwhile start a new one; a line torn by a
    hard kill is skipped. Stores ignore a record whose request id they hold, so a replay cut
    short and repeated counts nothing twice.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.replaying = path.with_name(path.name + ".replaying")
        self.max_bytes = max_bytes

    def append(self, records: Sequence[UsageRecord]) -> bool:
        """False when the records could not be written (disk full, over `max_bytes`)."""
        data = b"".join(_ENCODE.encode(r) + b"\n" for r in records)
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(data) > self.max_bytes:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            return False
        return True

    def pending(self) -> bool:
        return self.path.exists() or self.replaying.exists()

    def take(self) -> Iterator[UsageRecord]:
        """The records to replay, oldest first (the file being replayed stays until `done`)."""
        if not self.replaying.exists():
            if not self.path.exists():
                return
            os.replace(self.path, self.replaying)
        with open(self.replaying, "rb") as f:
            for line in f:
                try:
                    yield _DECODE.decode(line)
                except msgspec.DecodeError:
                    continue  # the torn tail of a write cut by a hard kill

    def done(self) -> None:
        self.replaying.unlink(missing_ok=True)


def _batches(records: Iterable[UsageRecord], size: int) -> Iterator[list[UsageRecord]]:
    batch: list[UsageRecord] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Recorder:
    """The bounded queue between the request path and the store, and its background writer.

    `add` is all the request path does. Every `flush_interval` the writer takes the queue in
    batches: each record is counted in the metrics and logged once, then written; a batch the
    store refuses goes to the spill file, and the store is tried again with backoff, the spill
    replayed first once it answers. Nothing is dropped unless the queue is full *and* the spill
    cannot be written, and that is logged and counted.
    """

    def __init__(self, settings: UsageSettings, store: UsageStore | None, metrics: Metrics,
                 ledger: Ledger, log_requests: bool = True) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.ledger = ledger
        self.log_requests = log_requests
        self.queue: deque[UsageRecord] = deque()
        self.bodies: dict[str, dict[str, str]] = {}
        self.spill = Spill(settings.data_dir / "usage-spill.jsonl", settings.spill_max)
        self.dropped = 0
        self._store_up = False
        self._retry_at = 0.0
        self._backoff = _RETRY_MIN
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._flushing = asyncio.Lock()

    def add(self, rec: UsageRecord, bodies: dict[str, str] | None = None) -> None:
        """Queue a finished request's record; `bodies` go to its log line (`log.bodies`)."""
        self.ledger.add(rec)
        if bodies:
            self.bodies[rec.request_id] = bodies
        if len(self.queue) < self.settings.queue_max:
            self.queue.append(rec)
            return
        # The writer is behind by a whole queue: this record goes to disk now, not to memory.
        self._observe([rec])
        if self.spill.append([rec]):
            self.metrics.store_counts(spilled=1)
        else:
            self._drop([rec], "queue full and the spill file cannot be written")

    async def start(self) -> None:
        """Open the store (a store that is down is not fatal: records spill until it is up)."""
        if self.store is not None:
            await self._open_store()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def close(self) -> None:
        """Write everything queued (SIGTERM), then close the store. The writer is asked to
        stop, never cancelled: a batch taken from the queue must reach the store or the spill."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._retry_at = 0.0
        await self.flush()
        if self.store is not None:
            await self.store.close()

    async def _open_store(self) -> None:
        assert self.store is not None
        try:
            await self.store.open()
        except StoreError as err:
            self._store_down(err)
        else:
            self._store_up = True
            event("usage store open", store=redact_url(self.settings.store))

    async def _run(self) -> None:
        interval = self.settings.flush_interval
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            try:
                await self.flush()
            except Exception:  # never let the writer die: records would pile up unwritten
                event("usage writer error", logging.ERROR, exc_info=True)

    async def flush(self) -> None:
        """Take the whole queue now: count and log each record, then store or spill it. One
        flush at a time (the writer's, a management query's, the last one at exit)."""
        async with self._flushing:
            while self.queue:
                batch = [self.queue.popleft()
                         for _ in range(min(len(self.queue), self.settings.batch_max))]
                self._observe(batch)
                await self._write(batch)
            if self.store is not None and self.spill.pending() and await self._store_ready():
                await self._replay()

    def _observe(self, batch: list[UsageRecord]) -> None:
        self.metrics.observe_many(batch)
        if self.log_requests:
            request_lines(batch, self.bodies)
        if self.bodies:
            for rec in batch:
                self.bodies.pop(rec.request_id, None)

    async def _write(self, batch: list[UsageRecord]) -> None:
        if self.store is None:
            return
        if await self._store_ready():
            if self.spill.pending():
                await self._replay()  # oldest first, so a store catching up stays in order
            if self._store_up:
                try:
                    await self.store.write(batch)
                except StoreError as err:
                    self._store_down(err)
                else:
                    self.metrics.store_counts(written=len(batch))
                    return
        if self.spill.append(batch):
            self.metrics.store_counts(spilled=len(batch))
        else:
            self._drop(batch, "the store is down and the spill file cannot be written")

    async def _store_ready(self) -> bool:
        if self._store_up:
            return True
        if time.monotonic() < self._retry_at:
            return False
        await self._open_store()
        return self._store_up

    async def _replay(self) -> None:
        assert self.store is not None
        replayed = 0
        try:
            for batch in _batches(self.spill.take(), self.settings.batch_max):
                await self.store.write(batch)
                replayed += len(batch)
        except StoreError as err:
            self._store_down(err)
            return
        except OSError as err:
            event("usage spill unreadable", logging.ERROR, path=str(self.spill.replaying),
                  error=str(err))
            self.metrics.store_problem("spill_unreadable")
            return
        self.spill.done()
        if replayed:
            self.metrics.store_counts(replayed=replayed)
            event("usage spill replayed", records=replayed)

    def _store_down(self, err: StoreError) -> None:
        if self._store_up or self._backoff == _RETRY_MIN:
            event("usage store unavailable; records spill to disk until it is back",
                  logging.ERROR, error=str(err), spill=str(self.spill.path))
        self.metrics.store_problem("unavailable")
        self._store_up = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _RETRY_MAX)

    def _drop(self, batch: list[UsageRecord], why: str) -> None:
        self.dropped += len(batch)
        self.metrics.store_counts(dropped=len(batch))
        event("usage records dropped", logging.CRITICAL, records=len(batch), reason=why,
              first_request_id=batch[0].request_id)


_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(UsageRecord)
_RETRY_MIN = 0.5
_RETRY_MAX = 30.0
