"""What every fake provider shares: a real aiohttp server on 127.0.0.1 that records each request,
checks its headers, and answers with the status, delay, cut and error switches of `Behavior`.

A dialect's fake (`openai_provider`, `anthropic_provider`, `gemini_provider`) subclasses
`FakeProvider` and keeps only its dialect: routes, the key check, the body checks, the answers
and their framing. The hooks it fills in, in the order a request meets them:

    _max_body_bytes  the body limit, and _too_large the answer past it (default: aiohttp's 413)
    _request_fields  its own `Recorded` fields, read off the request
    _call_name       the `calls` key
    _endpoint        the endpoint a method and path name, None for an unknown route
    _unknown_route   the dialect's 404
    _refusal         the key, version and body checks: an error answer, or None to go on
    _serve           the answer, built with `_finish_plain` or `_stream`
    _headers, _dumps, _status_error   headers of every answer, JSON bodies, a status switch's body
    _status_headers  more headers on a status switch's answer (default: `Retry-After`)

See tests/fakes/README.md for what the fakes do.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypedDict, TypeVar

from aiohttp import web
from multidict import CIMultiDict, MultiDict

__all__ = [
    "HOP_BY_HOP",
    "MAX_BODY_BYTES",
    "Behavior",
    "FakeProvider",
    "Options",
    "Recorded",
    "Violation",
    "serve_until_stopped",
    "standalone_parser",
]

# Request bodies are read whole to record and validate them; this bound is well above any test
# payload and keeps a runaway client from eating the test process' memory.
MAX_BODY_BYTES = 32 * 1024 * 1024
# The fake must stop fast even with a stream in flight; nothing it serves needs a grace period.
SHUTDOWN_TIMEOUT = 0.2
# Never legitimate on a request from a gateway to any provider: hop-by-hop headers (RFC 9110
# 7.6.1) that must not be forwarded. Each dialect adds the other dialects' credential headers.
HOP_BY_HOP = ("proxy-authorization", "proxy-connection", "keep-alive", "te", "trailer", "upgrade")


@dataclass
class Behavior:
    """Switches; a test may change them at any time (each request snapshots them on arrival).
    A dialect's `Behavior` adds its own."""

    status: int | None = None  # answer this status instead of the normal reply
    body: bytes | str | dict[str, Any] | None = None  # body of the status answer; None: the API's
    times: int | None = None  # status for the next N requests only; None: for all
    retry_after: float | str | None = None  # Retry-After header on the status answers
    headers: dict[str, str] = field(default_factory=dict)  # extra headers on every answer
    first_byte_delay: float = 0.0  # seconds before the response headers (every answer)
    chunks: int | None = None  # deltas in a stream; None: one per word
    chunk_delay: float = 0.0  # seconds between stream events
    cut_after: int | None = None  # abort the TCP connection after K stream events
    error_after: int | None = None  # after K events send the API's mid-stream error instead
    usage: dict[str, Any] | None = None  # replaces the usage in answers (see the README)
    content: str | None = None  # replaces the "echo: ..." reply text
    compress: bool = False  # gzip/deflate non-streamed JSON answers when the client accepts it
    # A scripted turn: called with each request's parsed JSON body (after the checks pass), it
    # returns switches for that request alone (e.g. a tool call first, text once the tool's
    # result comes back); None or {} keeps the others.
    script: Callable[[Any], dict[str, Any] | None] | None = None


@dataclass
class Recorded:
    """One request as it arrived, and what became of it. A dialect's `Recorded` adds fields."""

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: bytes
    json: Any
    received_at: float  # time.monotonic()
    status: int | None = None  # status the fake answered (None while in flight)
    events_sent: int = 0  # stream events written (the closing and error events included)
    completed: bool = False  # the whole answer was written
    disconnected_at: float | None = None  # time.monotonic() the client was seen gone


@dataclass(frozen=True)
class Violation:
    kind: str  # "invalid_body", "unknown_route", "unauthorized", "forbidden_header", "host", ...
    detail: str
    request: Recorded

    def __str__(self) -> str:
        return f"[{self.kind}] {self.request.method} {self.request.path}: {self.detail}"


class Options(TypedDict, total=False):
    """Constructor arguments every fake takes, with the defaults of `FakeProvider.__init__`."""

    host: str
    port: int  # 0: a free port
    forbidden_values: Iterable[str]  # header values must not contain these (the gateway's key)
    forbid_extra_fields: bool  # refuse unknown body fields, as the APIs do
    check_host: bool  # the Host header must name this server


B = TypeVar("B", bound=Behavior)
R = TypeVar("R", bound=Recorded)


class FakeProvider(Generic[B, R]):
    dialect: str  # names the fake in messages: "fake OpenAI saw 2 bad request(s)"
    behavior_class: type[B]
    recorded_class: type[R]

    def __init__(
        self,
        *,
        api_key: str | None,
        models: Sequence[str],
        forbidden_headers: Iterable[str],
        host: str = "127.0.0.1",
        port: int = 0,
        forbidden_values: Iterable[str] = (),
        forbid_extra_fields: bool = True,
        check_host: bool = True,
        base_path: str = "",
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.models = list(models)
        self.forbidden_headers = {h.lower() for h in forbidden_headers}
        self.forbidden_values = list(forbidden_values)
        self.forbid_extra_fields = forbid_extra_fields
        self.check_host = check_host
        self.base_url = ""
        self._base_path = base_path
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._changed = asyncio.Event()  # replaced by a fresh one each time it is set
        self.active_streams = 0  # a live gauge, so reset() leaves it alone
        self.reset()

    def reset(self) -> None:
        """Default switches, and forget every request, violation and counter."""
        self.behavior: B = self.behavior_class()
        self.requests: list[R] = []
        self.invalid: list[Violation] = []
        self.unauthorized: list[Violation] = []
        self.forbidden: list[Violation] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.disconnects = 0
        self.completed_streams = 0
        self._seq = 0

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.base_url or 'stopped'} requests={len(self.requests)} "
            f"invalid={len(self.invalid)} unauthorized={len(self.unauthorized)} "
            f"forbidden={len(self.forbidden)} disconnects={self.disconnects}>"
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=self._max_body_bytes())
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels the handler at once, which is how
        # `disconnects` sees it even while the fake sleeps between events.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}{self._base_path}"
        self._stopping = False
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            self._stopping = True
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _max_body_bytes(self) -> int:
        return MAX_BODY_BYTES

    # --- assertions and waits ------------------------------------------------------------------

    @property
    def violations(self) -> list[Violation]:
        return [*self.invalid, *self.unauthorized, *self.forbidden]

    def assert_clean(self) -> None:
        """Raise AssertionError listing every invalid, unauthorized or header-violating request."""
        if self.violations:
            lines = "\n".join(f"  {v}" for v in self.violations)
            raise AssertionError(
                f"fake {self.dialect} saw {len(self.violations)} bad request(s):\n{lines}"
            )

    # The waits take `timeout` (ASYNC109) on purpose: it is the test's failure bound, and
    # `await fake.wait_disconnect(1.0)` reads better in a test than an `asyncio.timeout` block.
    async def wait_for(self, predicate: Callable[[Self], bool], timeout: float) -> None:  # noqa: ASYNC109
        """Wait until `predicate(fake)` holds; re-checked on every request and stream event."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def wait_disconnect(self, timeout: float = 5.0, count: int = 1) -> int:  # noqa: ASYNC109
        """Wait until `count` clients went away mid-answer; returns `disconnects`."""
        await self.wait_for(lambda f: f.disconnects >= count, timeout)
        return self.disconnects

    async def wait_requests(self, count: int = 1, timeout: float = 5.0) -> list[R]:  # noqa: ASYNC109
        await self.wait_for(lambda f: len(f.requests) >= count, timeout)
        return self.requests

    def _poke(self) -> None:
        """Wake every `wait_for`; sync, so that `finally` blocks and sync code can call it."""
        self._changed.set()
        self._changed = asyncio.Event()

    # --- request handling ----------------------------------------------------------------------

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        oversized: web.Response | None = None
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # A dialect whose API documents its answer gives it; the others let aiohttp answer.
            if (oversized := self._too_large()) is None:
                raise
            raw = b""
        rec = self.recorded_class(
            method=request.method,
            path=request.path,
            query=MultiDict(request.query),
            headers=CIMultiDict(request.headers),
            body=raw,
            json=None,
            received_at=time.monotonic(),
            **self._request_fields(request),
        )
        self.requests.append(rec)
        self.calls[self._call_name(rec)] += 1
        self._check_headers(rec)
        self._poke()
        try:
            resp = oversized if oversized is not None else await self._answer(request, rec)
        except asyncio.CancelledError:
            if not self._stopping and not rec.completed:
                self._note_disconnect(rec)
            raise
        finally:
            self._poke()
        rec.status = resp.status
        if isinstance(resp, web.Response):  # whole body in hand; aiohttp writes it on return
            rec.completed = True
        return resp

    def _check_headers(self, rec: R) -> None:
        for name, value in rec.headers.items():
            if name.lower() in self.forbidden_headers:
                self.forbidden.append(Violation("forbidden_header", f"{name}: {value}", rec))
            for bad in self.forbidden_values:
                if bad and bad in value:
                    self.forbidden.append(
                        Violation("forbidden_header", f"{name} carries {bad!r}", rec)
                    )
        host = rec.headers.get("Host")
        wanted = {f"{self.host}:{self.port}", f"localhost:{self.port}"}
        if self.check_host and host not in wanted:
            self.forbidden.append(Violation("host", f"Host: {host!r}, expected {wanted}", rec))

    async def _answer(self, request: web.Request, rec: R) -> web.StreamResponse:
        endpoint = self._endpoint(rec)
        if endpoint is None:
            self.invalid.append(Violation("unknown_route", "no such endpoint", rec))
            return self._unknown_route(request)
        if (refused := self._refusal(request, rec, endpoint)) is not None:
            return refused
        b = dataclasses.replace(self.behavior, headers=dict(self.behavior.headers))
        if b.script is not None and rec.json is not None:
            b = dataclasses.replace(b, **(b.script(rec.json) or {}))
        status = self._take_status()
        if b.first_byte_delay:
            await asyncio.sleep(b.first_byte_delay)
        if status is not None:
            return self._status_answer(status, b, rec)
        return await self._serve(request, rec, endpoint, b)

    @staticmethod
    def _content_type_error(request: web.Request) -> str | None:
        """Every SDK sends `application/json`; the wording is the fake's own."""
        if request.content_type == "application/json":
            return None
        return f"Invalid Content-Type header ({request.content_type}), expected application/json"

    def _take_status(self) -> int | None:
        b = self.behavior
        if b.status is None or (b.times is not None and b.times <= 0):
            return None
        if b.times is not None:
            b.times -= 1
        return b.status

    # --- answers -------------------------------------------------------------------------------

    json_charset: str | None = None  # the charset parameter of `application/json` answers

    def _json(
        self, status: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            status=status,
            body=self._dumps(body),
            content_type="application/json",
            charset=self.json_charset,
            headers=headers,
        )

    def _status_headers(self, status: int, b: B) -> dict[str, str]:
        headers = self._headers(b)
        if b.retry_after is not None:
            headers["Retry-After"] = _retry_after(b.retry_after)
        return headers

    def _status_answer(self, status: int, b: B, rec: R) -> web.Response:
        headers = self._status_headers(status, b)
        match b.body:
            case None:
                return self._status_error(status, b, headers, rec)
            case dict():
                return self._json(status, b.body, headers)
            case str() | bytes():
                raw = b.body.encode() if isinstance(b.body, str) else b.body
                return web.Response(status=status, body=raw, headers=headers)
        raise TypeError(f"Behavior.body must be bytes, str, dict or None, not {type(b.body)}")

    async def _finish_plain(
        self, request: web.Request, b: B, body: Any, status: int = 200
    ) -> web.StreamResponse:
        """A whole JSON answer, or with `cut_after`: full headers, half the body, a TCP abort."""
        if b.cut_after is None:
            whole = self._json(status, body, self._headers(b))
            if b.compress:
                whole.enable_compression()  # picks gzip or deflate from Accept-Encoding
            return whole
        raw = self._dumps(body)
        resp = web.StreamResponse(status=status, headers=self._headers(b))
        resp.content_type = "application/json"
        if self.json_charset is not None:
            resp.charset = self.json_charset
        resp.content_length = len(raw)
        await resp.prepare(request)
        await resp.write(raw[: len(raw) // 2])
        self._abort(request)
        return resp

    async def _stream(
        self,
        request: web.Request,
        rec: R,
        b: B,
        events: Sequence[bytes],
        *,
        error: Callable[[int], bytes],
        end: bytes | None = None,
        content_type: str = "text/event-stream",
        charset: str | None = "utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Write `events` one by one, with the `chunk_delay`, `cut_after` and `error_after`
        switches. `error(i)`: the API's mid-stream error in place of event i, after which the
        body ends. `end`: what closes the body after the last event without being an event (a
        JSON array's `]`); a stream with one is cut at its end too when `cut_after` is the number
        of events, as nothing before it says the stream is over."""
        resp = web.StreamResponse(status=200, headers={**self._headers(b), **(headers or {})})
        resp.content_type = content_type
        if charset is not None:
            resp.charset = charset
        self.active_streams += 1
        self._poke()
        try:
            await resp.prepare(request)
            for i, event in enumerate(events):
                if b.cut_after is not None and i >= b.cut_after:
                    self._abort(request)  # at once, not after another chunk_delay
                    return resp
                if i and b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
                if b.error_after is not None and i == b.error_after:
                    await resp.write(error(i))
                    rec.events_sent += 1
                    break
                await resp.write(event)
                rec.events_sent += 1
                self._poke()
            else:
                if end is not None and b.cut_after is not None and len(events) >= b.cut_after:
                    self._abort(request)
                    return resp
                if end:
                    await resp.write(end)
            await resp.write_eof()
            rec.completed = True
            self.completed_streams += 1
        except ConnectionResetError:
            # Client gone while writing (handler cancellation usually sees it first, in a sleep).
            self._note_disconnect(rec)
        finally:
            self.active_streams -= 1
            rec.status = resp.status
            self._poke()
        return resp

    def _abort(self, request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    def _note_disconnect(self, rec: R) -> None:
        if rec.disconnected_at is None:
            rec.disconnected_at = time.monotonic()
            self.disconnects += 1
            self._poke()

    # --- the dialect's part --------------------------------------------------------------------

    def _request_fields(self, request: web.Request) -> dict[str, Any]:
        """The dialect's own `Recorded` fields, read off the request before any check."""
        return {}

    def _call_name(self, rec: R) -> str:
        return rec.path

    def _too_large(self) -> web.Response | None:
        """The answer to a body over the limit; None: aiohttp's own 413, not recorded."""
        return None

    def _endpoint(self, rec: R) -> str | None:
        raise NotImplementedError

    def _unknown_route(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    def _refusal(self, request: web.Request, rec: R, endpoint: str) -> web.Response | None:
        raise NotImplementedError

    async def _serve(
        self, request: web.Request, rec: R, endpoint: str, b: B
    ) -> web.StreamResponse:
        raise NotImplementedError

    def _headers(self, b: B) -> dict[str, str]:
        raise NotImplementedError

    def _dumps(self, body: Any) -> bytes:
        raise NotImplementedError

    def _status_error(self, status: int, b: B, headers: dict[str, str], rec: R) -> web.Response:
        raise NotImplementedError


def _retry_after(value: float | str) -> str:
    """`Retry-After` in whole seconds when it is one, else as given (an HTTP date, `1.5`)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def standalone_parser(description: str, *, port: int, key_help: str) -> argparse.ArgumentParser:
    """The standalone command line every fake takes; a dialect may add its own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--api-key", default=None, help=key_help)
    return parser


async def serve_until_stopped(fake: FakeProvider[Any, Any], key: str) -> None:
    """Serve until Ctrl-C or SIGTERM, for manual checks."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake {fake.dialect} on {fake.base_url} (key: {key})", flush=True)
        await stop.wait()
