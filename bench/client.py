"""A small asyncio HTTP/1.1 client for what wrk cannot see: time to first byte, latency at one
connection, and hundreds of streams held open at once. Raw Protocol + httptools, so its own cost
is small and the same for every target."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import httptools

from bench.workloads import Workload, raw_request

__all__ = [
    "Answer",
    "Checked",
    "Conn",
    "StreamsResult",
    "check",
    "connect",
    "hold_streams",
    "latency_1conn",
]

_REQUEST_TIMEOUT_S = 30.0  # one answer; a stuck target fails the phase instead of hanging it


class Answer(NamedTuple):
    status: int
    ttfb: float  # seconds from the request's write to its first body byte
    total: float  # seconds from the request's write to the end of its body
    body: bytes


class Conn(asyncio.Protocol):
    """One keep-alive connection running one request at a time."""

    def __init__(self, keep_body: bool, on_first_byte: Callable[[], None] | None = None) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._keep_body = keep_body
        self._on_first_byte = on_first_byte
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._t0 = 0.0
        self._first = 0.0
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(ConnectionError(f"connection lost: {exc or 'closed by peer'}"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(e)
            self.close()

    def on_message_begin(self) -> None:
        self._first = 0.0
        self._body = []

    def on_body(self, body: bytes) -> None:
        if not self._first:
            self._first = time.perf_counter()
            if self._on_first_byte is not None:
                self._on_first_byte()
        if self._keep_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        end = time.perf_counter()
        first = self._first or end
        answer = Answer(
            self._parser.get_status_code(), first - self._t0, end - self._t0, b"".join(self._body)
        )
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def send(self, raw: bytes) -> Answer:
        if self._transport is None:
            raise ConnectionError("not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self._t0 = time.perf_counter()
        self._transport.write(raw)
        return await asyncio.wait_for(self._waiter, _REQUEST_TIMEOUT_S)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def is_open(self) -> bool:
        """False once the peer closed the connection (e.g. after an error answer)."""
        return self._transport is not None


async def connect(
    port: int, keep_body: bool = False, on_first_byte: Callable[[], None] | None = None
) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: Conn(keep_body, on_first_byte), "127.0.0.1", port
    )
    return conn


class Checked(NamedTuple):
    error: str | None  # set: the target cannot be measured with this workload
    stream_events: int | None  # events one stream brought its caller; None when not a stream


# How each caller dialect's answer is recognised: a non-streamed body holds the marker; a stream
# ends with the end marker, and its events are counted by the event marker.
_SHAPES = {
    "openai": (b'"chat.completion"', b"data: [DONE]\n\n", b"data: "),
    "anthropic": (b'"type":"message"', b'data: {"type":"message_stop"}\n\n', b"event: "),
}


async def check(port: int, workload: Workload) -> Checked:
    """One request, and whether the answer has the shape the caller's SDK expects."""
    try:
        conn = await connect(port, keep_body=True)
        try:
            answer = await conn.send(raw_request(workload, port))
        finally:
            conn.close()
    except (OSError, TimeoutError, httptools.HttpParserError) as e:
        return Checked(f"{workload.label}: {type(e).__name__}: {e}", None)
    head = answer.body[:300].decode(errors="replace")
    if answer.status != 200:
        return Checked(f"{workload.label}: status {answer.status}: {head}", None)
    marker, end, event = _SHAPES[workload.caller]
    if not workload.stream:
        ok = marker in answer.body
        return Checked(None if ok else f"{workload.label}: not {marker.decode()}: {head}", None)
    if not answer.body.endswith(end):
        return Checked(f"{workload.label}: stream does not end with {end!r}", None)
    # OpenAI's [DONE] is not an event of the answer.
    return Checked(None, answer.body.count(event) - (workload.caller == "openai"))


async def latency_1conn(
    ports: dict[str, int], workload: Workload, count: int, warmup: int, time_limit: float
) -> tuple[dict[str, list[Answer]], dict[str, str]]:
    """Sequential requests, one connection per target, interleaved request by request so that
    noise from other work on the machine falls on every target alike. Returns the samples and,
    for a target that failed mid-way (and was dropped from the turns), why."""
    conns: dict[str, Conn] = {}
    failed: dict[str, str] = {}
    samples: dict[str, list[Answer]] = {name: [] for name in ports}
    deadline = time.monotonic() + time_limit
    try:
        for name, port in ports.items():
            try:
                conns[name] = await connect(port)
            except OSError as e:
                failed[name] = f"connect: {e}"
        raws = {name: raw_request(workload, port) for name, port in ports.items()}
        for i in range(warmup + count):
            if time.monotonic() > deadline or not conns:
                break
            turn = list(conns.items())
            # Forward, then backward: each target goes as often before as after each other one.
            for name, conn in turn if i % 2 == 0 else reversed(turn):
                try:
                    answer = await conn.send(raws[name])
                except (OSError, TimeoutError, httptools.HttpParserError) as e:
                    answer = Answer(0, 0.0, 0.0, f"{type(e).__name__}: {e}".encode())
                if answer.status != 200:
                    failed[name] = f"status {answer.status} {answer.body[:200]!r}"
                    conns.pop(name).close()
                elif i >= warmup:
                    samples[name].append(answer)
    finally:
        for conn in conns.values():
            conn.close()
    return samples, failed


@dataclass
class StreamsResult:
    requested: int
    completed: int = 0
    errors: int = 0
    open_now: int = 0
    peak_open: int = 0  # streams that had their first byte and had not yet ended, at most
    peak_at: float = 0.0  # seconds from the start until that peak was first reached
    ttfbs: list[float] = field(default_factory=list)  # per completed stream, seconds
    seconds: float = 0.0
    first_error: str = ""


async def hold_streams(
    port: int, workload: Workload, n: int, connect_parallel: int, time_limit: float
) -> StreamsResult:
    """Open `n` streams at once (the upstream paces them slowly) and count how many were open
    together; the proxy's VmHWM is read afterwards by the caller."""
    result = StreamsResult(requested=n)
    t0 = time.monotonic()
    gate = asyncio.Semaphore(connect_parallel)  # don't overflow the listen backlog with SYNs
    raw = raw_request(workload, port, keep_alive=False)

    async def one() -> None:
        conn: Conn | None = None
        first = False

        def opened() -> None:
            nonlocal first
            first = True
            result.open_now += 1
            if result.open_now > result.peak_open:
                result.peak_open = result.open_now
                result.peak_at = time.monotonic() - t0

        try:
            async with gate:
                conn = await connect(port, on_first_byte=opened)
                sending = asyncio.ensure_future(conn.send(raw))
            answer = await sending
            result.ttfbs.append(answer.ttfb)
            result.completed += answer.status == 200
            result.errors += answer.status != 200
        except (OSError, TimeoutError, httptools.HttpParserError) as e:
            result.errors += 1
            result.first_error = result.first_error or f"{type(e).__name__}: {e}"
        finally:
            if first:
                result.open_now -= 1
            if conn is not None:
                conn.close()

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=time_limit)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    result.errors += len(pending)
    result.seconds = time.monotonic() - t0
    return result
