"""A fake Gemini API provider: a real aiohttp server on 127.0.0.1 for e2e tests.

It answers in the Gemini API's wire format (generativelanguage `v1beta` and `v1`), validates
every request body against the official `google-genai` SDK's own types plus the API's own rules
(see `gemini_wire`), checks the `x-goog-api-key` header or `?key=`, records every request, and
has switches for the ways real providers misbehave (`Behavior`). See tests/fakes/README.md.

    async with FakeGemini(api_key="gemini-up-test") as fake:
        fake.behavior.status, fake.behavior.times = 429, 1
        ...                      # point the gateway at fake.base_url (no version in it)
        fake.assert_clean()

Standalone: python -m tests.fakes.gemini_provider --port 9103
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import re
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from tests.fakes import gemini_wire as wire

__all__ = ["Behavior", "FakeGemini", "Recorded", "Violation"]

# Request bodies are read whole to record and validate them; this bound is well above any test
# payload and keeps a runaway client from eating the test process' memory.
MAX_BODY_BYTES = 32 * 1024 * 1024
# The fake must stop fast even with a stream in flight; nothing it serves needs a grace period.
SHUTDOWN_TIMEOUT = 0.2

DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")
# Never legitimate on a request from a gateway to Gemini: hop-by-hop headers (RFC 9110 7.6.1)
# that must not be forwarded, and the other dialects' credential headers of the caller.
DEFAULT_FORBIDDEN_HEADERS = (
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "x-api-key",
)
# Headers the API's front end puts on every answer.
GOOGLE_HEADERS = {
    "Vary": "Origin, X-Origin, Referer",
    "Server": "scaffolding on HTTPServer2",
    "X-XSS-Protection": "0",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
}
_RPC = re.compile(r"/(v1beta|v1)/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)")
_MODEL = re.compile(r"/(v1beta|v1)/models/([^/:]+)")
_LIST = re.compile(r"/(v1beta|v1)/models/?")


@dataclass
class Behavior:
    """Switches; a test may change them at any time (each request snapshots them on arrival)."""

    status: int | None = None  # answer this status instead of the normal reply
    body: bytes | str | dict[str, Any] | None = None  # body of the status answer; None: Google's
    times: int | None = None  # status for the next N requests only; None: for all
    retry_after: float | str | None = None  # Retry-After header on the status answers
    retry_delay: float | None = 7.0  # RetryInfo.retryDelay on a 429 answer; None: no RetryInfo
    headers: dict[str, str] = field(default_factory=dict)  # extra headers on every answer
    first_byte_delay: float = 0.0  # seconds before the response headers (every answer)
    chunks: int | None = None  # text deltas in a stream; None: one per word
    chunk_delay: float = 0.0  # seconds between stream events
    cut_after: int | None = None  # abort the TCP connection after K stream events
    error_after: int | None = None  # after K events send an `{"error": ...}` event instead
    function_call: dict[str, Any] | None = None  # {"name", "args"}: call a declared function
    parallel_calls: list[dict[str, Any]] | None = None  # several functionCall parts at once
    thoughts: str | None = None  # the model thought this (parts shown with includeThoughts)
    thoughts_tokens: int | None = None  # thoughtsTokenCount; None: words of `thoughts`
    cached: int = 0  # cachedContentTokenCount (a part of promptTokenCount)
    finish_reason: str | None = None  # e.g. "SAFETY": the candidate comes back blocked
    block_reason: str | None = None  # e.g. "SAFETY": promptFeedback.blockReason, no candidates
    usage: dict[str, Any] | None = None  # replaces usageMetadata in every answer
    content: str | None = None  # replaces the "echo: ..." reply text
    compress: bool = False  # gzip/deflate non-streamed JSON answers when the client accepts it
    # A scripted turn: called with each request's parsed JSON body (after the checks pass), it
    # returns switches for that request alone (e.g. a tool call first, text once the tool's
    # result comes back); None or {} keeps the others.
    script: Callable[[Any], dict[str, Any] | None] | None = None


@dataclass
class Recorded:
    """One request as it arrived, and what became of it."""

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: bytes
    json: Any
    received_at: float  # time.monotonic()
    rpc: str | None = None  # "generateContent", ..., "models.list", "models.get"
    version: str | None = None  # "v1beta" or "v1"
    model: str | None = None  # from the path, without "models/"
    request: Any = None  # the validated `gemini_wire` request model, when the body passed
    status: int | None = None  # status the fake answered (None while in flight)
    events_sent: int = 0  # stream events (SSE events or array elements) written
    completed: bool = False  # the whole answer was written
    disconnected_at: float | None = None  # time.monotonic() the client was seen gone


@dataclass(frozen=True)
class Violation:
    kind: str  # "invalid_body", "unknown_route", "unauthorized", "forbidden_header", "host"
    detail: str
    request: Recorded

    def __str__(self) -> str:
        return f"[{self.kind}] {self.request.method} {self.request.path}: {self.detail}"


@dataclass(frozen=True)
class _Route:
    rpc: str
    version: str
    model: str | None = None


class FakeGemini:
    def __init__(
        self,
        *,
        api_key: str | None = "gemini-up-test",
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = DEFAULT_MODELS,
        forbidden_headers: Iterable[str] = DEFAULT_FORBIDDEN_HEADERS,
        forbidden_values: Iterable[str] = (),
        forbid_extra_fields: bool = True,
        check_host: bool = True,
        check_models: bool = False,
        require_thought_signatures: bool = False,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.models = list(models)
        self.forbidden_headers = {h.lower() for h in forbidden_headers}
        self.forbidden_values = list(forbidden_values)
        self.forbid_extra_fields = forbid_extra_fields
        self.check_host = check_host
        self.check_models = check_models
        self.require_thought_signatures = require_thought_signatures
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._changed = asyncio.Event()  # replaced by a fresh one each time it is set
        self.active_streams = 0  # a live gauge, so reset() leaves it alone
        self.reset()

    def reset(self) -> None:
        """Default switches, and forget every request, violation and counter."""
        self.behavior = Behavior()
        self.requests: list[Recorded] = []
        self.invalid: list[Violation] = []
        self.unauthorized: list[Violation] = []
        self.forbidden: list[Violation] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.disconnects = 0
        self.completed_streams = 0
        self._seq = 0

    def __repr__(self) -> str:
        return (
            f"<FakeGemini {self.base_url or 'stopped'} requests={len(self.requests)} "
            f"invalid={len(self.invalid)} unauthorized={len(self.unauthorized)} "
            f"forbidden={len(self.forbidden)} disconnects={self.disconnects}>"
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels the handler at once, which is how
        # `disconnects` sees it even while the fake sleeps between chunks.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        # No version in it: the SDK takes `api_version` apart from `base_url`, and so does a
        # gateway provider entry ("base URL without /v1beta").
        self.base_url = f"http://{self.host}:{self.port}"
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

    # --- assertions and waits ------------------------------------------------------------------

    @property
    def violations(self) -> list[Violation]:
        return [*self.invalid, *self.unauthorized, *self.forbidden]

    def assert_clean(self) -> None:
        """Raise AssertionError listing every invalid, unauthorized or header-violating request."""
        if self.violations:
            lines = "\n".join(f"  {v}" for v in self.violations)
            raise AssertionError(f"fake Gemini saw {len(self.violations)} bad request(s):\n{lines}")

    # The waits take `timeout` (ASYNC109) on purpose: it is the test's failure bound, and
    # `await fake.wait_disconnect(1.0)` reads better in a test than an `asyncio.timeout` block.
    async def wait_for(self, predicate: Callable[[FakeGemini], bool], timeout: float) -> None:  # noqa: ASYNC109
        """Wait until `predicate(fake)` holds; re-checked on every request and stream event."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def wait_disconnect(self, timeout: float = 5.0, count: int = 1) -> int:  # noqa: ASYNC109
        """Wait until `count` clients went away mid-answer; returns `disconnects`."""
        await self.wait_for(lambda f: f.disconnects >= count, timeout)
        return self.disconnects

    async def wait_requests(self, count: int = 1, timeout: float = 5.0) -> list[Recorded]:  # noqa: ASYNC109
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
        raw = await request.read()
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=MultiDict(request.query),
            headers=CIMultiDict(request.headers),
            body=raw,
            json=None,
            received_at=time.monotonic(),
        )
        self.requests.append(rec)
        route = self._route(request.method, request.path)
        if route is not None:
            rec.rpc, rec.version, rec.model = route.rpc, route.version, route.model
        self.calls[route.rpc if route else request.path] += 1
        self._check_headers(rec)
        self._poke()
        try:
            resp = await self._answer(request, rec, route)
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

    def _check_headers(self, rec: Recorded) -> None:
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

    def _route(self, method: str, path: str) -> _Route | None:
        if method == "POST" and (m := _RPC.fullmatch(path)):
            return _Route(m[3], m[1], m[2])
        if method == "GET" and (m := _LIST.fullmatch(path)):
            return _Route("models.list", m[1])
        if method == "GET" and (m := _MODEL.fullmatch(path)):
            return _Route("models.get", m[1], m[2])
        return None

    def _auth_error(self, rec: Recorded, array: bool) -> web.Response | None:
        # The SDK sends `x-goog-api-key`; `?key=` is the other documented way.
        key = rec.headers.get("x-goog-api-key") or rec.query.get("key") or ""
        if not key:
            self.unauthorized.append(Violation("unauthorized", "no x-goog-api-key or ?key=", rec))
            return self._json(403, wire.no_key_error(), array=array)
        if self.api_key is not None and key != self.api_key:
            self.unauthorized.append(Violation("unauthorized", f"wrong key {key!r}", rec))
            return self._json(400, wire.bad_key_error(), array=array)
        return None

    async def _answer(
        self, request: web.Request, rec: Recorded, route: _Route | None
    ) -> web.StreamResponse:
        if route is None:
            self.invalid.append(Violation("unknown_route", "no such endpoint", rec))
            html = wire.not_found_html(request.path)
            return web.Response(status=404, text=html, content_type="text/html", charset="UTF-8")
        # Without ?alt=sse a stream is a JSON array, and so is its error body: `[{"error": …}]`
        # (quoted in continuedev/continue#8516).
        array = route.rpc == "streamGenerateContent" and rec.query.get("alt") != "sse"
        if (denied := self._auth_error(rec, array)) is not None:
            return denied
        if route.rpc in ("generateContent", "streamGenerateContent", "countTokens"):
            problem = self._check_body(request, rec, route.rpc)
            if problem is not None:
                self.invalid.append(Violation("invalid_body", problem.detail, rec))
                return self._json(400, wire.invalid_argument(problem), array=array)
        b = dataclasses.replace(self.behavior, headers=dict(self.behavior.headers))
        if b.script is not None and rec.json is not None:
            b = dataclasses.replace(b, **(b.script(rec.json) or {}))
        status = self._take_status()
        if b.first_byte_delay:
            await asyncio.sleep(b.first_byte_delay)
        if status is not None:
            return self._status_answer(status, b, array)
        if route.model is not None and self.check_models and route.model not in self.models:
            method = {"models.get": "get"}.get(route.rpc, route.rpc)
            body = wire.model_not_found(route.model, route.version, method)
            return self._json(404, body, self._headers(b), array=array)
        match route.rpc:
            case "generateContent" | "streamGenerateContent":
                return await self._generate(request, rec, b, route)
            case "countTokens":
                req = rec.request
                inner = req.generate_content_request
                total = wire.prompt_tokens(inner, None if inner else req.contents)
                return await self._finish_plain(request, rec, b, wire.count_tokens_response(total))
            case "models.list":
                size = rec.query.get("pageSize")
                page = wire.list_models(
                    self.models, int(size) if size and size.isdigit() else None, rec.query.get("pageToken")
                )
                return await self._finish_plain(request, rec, b, page)
            case _:
                model_id = route.model or ""
                if model_id in self.models:
                    return await self._finish_plain(request, rec, b, wire.model_object(model_id))
                body = wire.model_not_found(model_id, route.version, "get")
                return self._json(404, body, self._headers(b))

    def _check_body(self, request: web.Request, rec: Recorded, rpc: str) -> wire.BodyProblem | None:
        parsed, req, problem = wire.validate_body(
            rpc,
            rec.body,
            forbid_extra=self.forbid_extra_fields,
            require_signatures=self.require_thought_signatures,
        )
        rec.json, rec.request = parsed, req
        if problem is None and request.content_type != "application/json":
            # The fake's own strictness: every Gemini SDK sends application/json.
            msg = f"Invalid Content-Type header ({request.content_type}), expected application/json"
            return wire.BodyProblem(msg, (), msg)
        return problem

    def _take_status(self) -> int | None:
        b = self.behavior
        if b.status is None or (b.times is not None and b.times <= 0):
            return None
        if b.times is not None:
            b.times -= 1
        return b.status

    def _headers(self, b: Behavior) -> dict[str, str]:
        return {**GOOGLE_HEADERS, "Server-Timing": f"gfet4t7; dur={self._next_id()}", **b.headers}

    def _json(
        self, status: int, body: Any, headers: dict[str, str] | None = None, *, array: bool = False
    ) -> web.Response:
        return web.Response(
            status=status,
            body=wire.dumps([body] if array else body),
            content_type="application/json",
            charset="UTF-8",
            headers=headers,
        )

    def _status_answer(self, status: int, b: Behavior, array: bool) -> web.Response:
        headers = self._headers(b)
        if b.retry_after is not None:
            ra = b.retry_after
            headers["Retry-After"] = (
                str(int(ra)) if isinstance(ra, float) and ra.is_integer() else str(ra)
            )
        match b.body:
            case None:
                return self._json(status, wire.status_error(status, b.retry_delay), headers, array=array)
            case dict():
                return self._json(status, b.body, headers)
            case str() | bytes():
                raw = b.body.encode() if isinstance(b.body, str) else b.body
                return web.Response(status=status, body=raw, headers=headers)
        raise TypeError(f"Behavior.body must be bytes, str, dict or None, not {type(b.body)}")

    async def _finish_plain(
        self, request: web.Request, rec: Recorded, b: Behavior, body: dict[str, Any]
    ) -> web.StreamResponse:
        raw = wire.dumps(body)
        if b.cut_after is None:
            whole = self._json(200, body, self._headers(b))
            if b.compress:
                whole.enable_compression()  # picks gzip or deflate from Accept-Encoding
            return whole
        # A non-streamed answer cut short: full headers, half the body, then the TCP abort.
        resp = web.StreamResponse(status=200, headers=self._headers(b))
        resp.content_type, resp.charset = "application/json", "UTF-8"
        resp.content_length = len(raw)
        await resp.prepare(request)
        await resp.write(raw[: len(raw) // 2])
        self._abort(request)
        return resp

    def _abort(self, request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    def _note_disconnect(self, rec: Recorded) -> None:
        if rec.disconnected_at is None:
            rec.disconnected_at = time.monotonic()
            self.disconnects += 1
            self._poke()

    # --- generation ----------------------------------------------------------------------------

    def _calls(self, req: wire.GenerateContentRequest, b: Behavior) -> list[dict[str, Any]]:
        declared = [d.name for t in req.tools or [] for d in t.function_declarations or []]
        wanted = b.parallel_calls or ([b.function_call] if b.function_call else [])
        fcc = req.tool_config.function_calling_config if req.tool_config else None
        mode = fcc.mode.value if fcc is not None and fcc.mode is not None else "AUTO"
        if not declared or not wanted or mode.upper() == "NONE":
            return []  # mode NONE: "Model will not predict any function call"
        default = (fcc.allowed_function_names if fcc else None) or declared
        calls = []
        for call in wanted:
            fc: dict[str, Any] = {"id": call["id"]} if "id" in call else {}
            fc.update(name=call.get("name") or default[0], args=call.get("args", {}))
            calls.append(fc)
        return calls

    def _reply(self, req: wire.GenerateContentRequest, route: _Route, b: Behavior) -> wire.Reply:
        gc = req.generation_config
        calls = self._calls(req, b)
        said = b.content if b.content is not None else ("" if calls else wire.reply_text(req))
        text, finish = wire.finish_text(said, gc)
        thinking = gc.thinking_config if gc is not None else None
        shown = b.thoughts if thinking is not None and thinking.include_thoughts else None
        thought_tokens = b.thoughts_tokens
        if thought_tokens is None:
            thought_tokens = wire.words(b.thoughts) if b.thoughts else 0
        signed = b.thoughts is not None or b.thoughts_tokens is not None
        seed = f"{route.model}|{calls[0]['name'] if calls else text}"
        return wire.Reply(
            model=route.model or "",
            response_id=f"fakeResp{self._next_id():06d}",
            text=text,
            # A function call ends with STOP: the API has no "tool use" finish reason.
            finish_reason=b.finish_reason or ("STOP" if calls else finish),
            prompt_tokens=wire.prompt_tokens(req),
            thoughts=shown,
            thoughts_tokens=thought_tokens,
            cached=b.cached,
            calls=calls,
            signature=wire.thought_signature(seed) if signed else None,
            block_reason=b.block_reason,
            usage=b.usage,
            chunks=b.chunks,
        )

    async def _generate(
        self, request: web.Request, rec: Recorded, b: Behavior, route: _Route
    ) -> web.StreamResponse:
        reply = self._reply(rec.request, route, b)
        if route.rpc == "generateContent":
            return await self._finish_plain(request, rec, b, wire.generate_response(reply))
        return await self._stream(request, rec, b, wire.stream_chunks(reply))

    async def _stream(
        self, request: web.Request, rec: Recorded, b: Behavior, chunks: list[dict[str, Any]]
    ) -> web.StreamResponse:
        sse = rec.query.get("alt") == "sse"

        def frame(obj: Any, i: int) -> bytes:
            return wire.sse(obj) if sse else wire.array_element(obj, first=i == 0)

        resp = web.StreamResponse(status=200, headers=self._headers(b))
        if sse:
            resp.content_type = "text/event-stream"
        else:
            resp.content_type, resp.charset = "application/json", "UTF-8"
        self.active_streams += 1
        self._poke()
        try:
            await resp.prepare(request)
            for i, chunk in enumerate(chunks):
                if b.cut_after is not None and i >= b.cut_after:
                    self._abort(request)  # at once, not after another chunk_delay
                    return resp
                if i and b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
                if b.error_after is not None and i == b.error_after:
                    # A failure after the 200: an `{"error": …}` object in place of a chunk,
                    # then the end of the body (the SDK raises on a chunk starting so).
                    await resp.write(frame(wire.STREAM_ERROR, i))
                    rec.events_sent += 1
                    if not sse:
                        await resp.write(wire.array_close(empty=False))
                    break
                await resp.write(frame(chunk, i))
                rec.events_sent += 1
                self._poke()
            else:
                if b.cut_after is not None and len(chunks) >= b.cut_after:
                    self._abort(request)
                    return resp
                if not sse:
                    await resp.write(wire.array_close(empty=not chunks))
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


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeGemini(api_key=args.api_key, host=args.host, port=args.port, check_host=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake Gemini on {fake.base_url} (key: {args.api_key or 'any'})", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Gemini API provider for manual checks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9103)
    parser.add_argument("--api-key", default=None, help="expected key; default: any non-empty")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
