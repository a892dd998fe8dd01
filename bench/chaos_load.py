"""The chaos run's load: paced non-stream requests whose every answer is kept (status, latency,
the gateway's `x-sluice-attempts` and `x-sluice-provider`), timed actions (killing an upstream)
at set moments, and a poller of the gateway's operations API alongside.

wrk cannot report per-answer headers, hence this client. It paces requests at a fixed rate with
at most `connections` in flight, instead of sending back to back: a gateway is not run at 100% of
a core, and at a moderate load the latency it adds is its own work (and its retries), not the
queue in front of a saturated core.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httptools
import orjson

from bench.client import Conn

__all__ = ["RoundLoad", "Sample", "Snapshot", "load_round"]

_START_S = 0.05  # connections are opened before the first slot; the schedule starts after this
# A round may run late when the target falls behind the rate; past this it is cut, and what is
# still unanswered counts as failed.
_OVERRUN_FACTOR = 1.5
_OVERRUN_SLACK_S = 2.0
_DETAIL_MAX = 300  # bytes of an error body kept for the report


class Sample(NamedTuple):
    """One request and its answer."""

    sent: float  # monotonic seconds (the system clock the fakes log with), when it was written
    seconds: float  # until the whole answer was in
    status: int  # 0: no HTTP answer (connection error, time limit)
    attempts: int  # x-sluice-attempts; 0 when absent (direct, or no answer)
    provider: str  # x-sluice-provider; "" when absent
    detail: str  # "" on 200; otherwise the answer's head or the exception


class Snapshot(NamedTuple):
    at: float  # monotonic seconds
    wall_offset: float  # time.time() - time.monotonic() then: turns the API's Unix times into ours
    body: dict[str, Any]


@dataclass
class RoundLoad:
    samples: list[Sample] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    poll_error: str = ""
    actions_at: list[float] = field(default_factory=list)  # monotonic, when each action ran
    started: float = 0.0  # monotonic, the first slot
    seconds: float = 0.0  # from the first slot to the last answer


class _TracedConn(Conn):
    """A connection that also keeps the gateway's two trace headers of the last answer."""

    def __init__(self) -> None:
        super().__init__(keep_body=True)
        self.attempts = 0
        self.provider = ""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.attempts = 0
        self.provider = ""

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"x-sluice-attempts":
            self.attempts = int(value) if value.isdigit() else -1
        elif name == b"x-sluice-provider":
            self.provider = value.decode(errors="replace")


async def _connect(port: int) -> _TracedConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_TracedConn, "127.0.0.1", port)
    return conn


_FAILURES = (OSError, TimeoutError, httptools.HttpParserError)


class _Paced:
    """`count` requests at `rate` per second from at most `connections` connections."""

    def __init__(self, port: int, raw: bytes, rate: float, count: int) -> None:
        self.port = port
        self.raw = raw
        self.rate = rate
        self.count = count
        self.next_slot = 0
        self.t0 = time.monotonic() + _START_S
        self.samples: list[Sample] = []

    async def worker(self) -> None:
        conn: _TracedConn | None = None
        try:
            while self.next_slot < self.count:
                due = self.t0 + self.next_slot / self.rate
                self.next_slot += 1
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                if conn is None or not conn.is_open:
                    conn = await self._one_connect()
                    if conn is None:
                        continue
                await self._one(conn)
        finally:
            if conn is not None:
                conn.close()

    async def _one_connect(self) -> _TracedConn | None:
        try:
            return await _connect(self.port)
        except OSError as e:
            self.samples.append(Sample(time.monotonic(), 0.0, 0, 0, "", f"connect: {e}"))
            return None

    async def _one(self, conn: _TracedConn) -> None:
        sent = time.monotonic()
        try:
            answer = await conn.send(self.raw)
        except _FAILURES as e:
            self.samples.append(
                Sample(sent, time.monotonic() - sent, 0, 0, "", f"{type(e).__name__}: {e}")
            )
            conn.close()
            return
        except asyncio.CancelledError:
            self.samples.append(
                Sample(sent, time.monotonic() - sent, 0, 0, "", "no answer by the round's limit")
            )
            raise
        detail = ""
        if answer.status != 200:
            detail = answer.body[:_DETAIL_MAX].decode(errors="replace")
        self.samples.append(
            Sample(sent, answer.total, answer.status, conn.attempts, conn.provider, detail)
        )


async def _poll(
    port: int, admin_key: str, interval: float, out: RoundLoad, stop: asyncio.Event
) -> None:
    """GET /v0/operations/providers/status every `interval` until `stop` is set."""
    raw = (
        b"GET /v0/operations/providers/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + admin_key.encode() + b"\r\n\r\n"
    )
    conn: Conn | None = None
    try:
        while not stop.is_set():
            if conn is None or not conn.is_open:
                _, conn = await asyncio.get_running_loop().create_connection(
                    lambda: Conn(keep_body=True), "127.0.0.1", port
                )
            answer = await conn.send(raw)
            if answer.status != 200:
                out.poll_error = f"status {answer.status}: {answer.body[:_DETAIL_MAX]!r}"
                return
            offset = time.time() - time.monotonic()
            out.snapshots.append(Snapshot(time.monotonic(), offset, orjson.loads(answer.body)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    except (*_FAILURES, orjson.JSONDecodeError) as e:
        out.poll_error = f"{type(e).__name__}: {e}"
    finally:
        if conn is not None:
            conn.close()


async def load_round(
    port: int,
    raw: bytes,
    rate: float,
    connections: int,
    seconds: float,
    actions: list[tuple[float, Callable[[], None]]] | None = None,
    poll: tuple[str, float] | None = None,
) -> RoundLoad:
    """One round: `rate * seconds` requests (bounded also in time), `actions` run at their
    offsets (seconds into the round), and with `poll` = (admin key, interval) the operations
    API read alongside."""
    out = RoundLoad()
    paced = _Paced(port, raw, rate, max(1, round(rate * seconds)))
    out.started = paced.t0
    loop = asyncio.get_running_loop()
    pending = dict(enumerate(actions or []))

    def run(i: int) -> None:
        _, action = pending.pop(i)
        out.actions_at.append(time.monotonic())
        action()

    timers = [
        loop.call_later(max(0.0, paced.t0 + at - time.monotonic()), run, i)
        for i, (at, _) in pending.items()
    ]
    stop = asyncio.Event()
    poller = asyncio.ensure_future(_poll(port, *poll, out, stop)) if poll else None
    workers = [asyncio.ensure_future(paced.worker()) for _ in range(connections)]
    done, late = await asyncio.wait(
        workers, timeout=seconds * _OVERRUN_FACTOR + _OVERRUN_SLACK_S
    )
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    out.seconds = time.monotonic() - paced.t0
    stop.set()
    if poller is not None:
        await poller
    for timer in timers:
        timer.cancel()
    for i in list(pending):  # the round ended before its time came: an action still happens
        run(i)
    for task in done:
        task.result()  # a bug in the client surfaces here rather than as a silent short round
    out.samples = sorted(paced.samples)
    return out
