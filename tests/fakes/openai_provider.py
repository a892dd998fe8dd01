"""A fake OpenAI-dialect provider: a real aiohttp server on 127.0.0.1 for e2e tests.

It answers in OpenAI's wire format, validates every request body against the official SDK's own
request types (see `openai_wire`), checks `Authorization: Bearer`, records every request, and has
switches for the ways real providers misbehave (`Behavior`). See tests/fakes/README.md.

    async with FakeOpenAI(prefix="/v1", api_key="sk-up-test") as fake:
        fake.behavior.status, fake.behavior.times = 429, 1
        ...                      # point the gateway at fake.base_url
        fake.assert_clean()

Standalone: python -m tests.fakes.openai_provider --port 9101 --prefix /v1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from tests.fakes import openai_wire as wire

__all__ = ["Behavior", "FakeOpenAI", "Recorded", "Violation"]

# Request bodies are read whole to record and validate them; this bound is well above any test
# payload and keeps a runaway client from eating the test process' memory.
MAX_BODY_BYTES = 32 * 1024 * 1024
# The fake must stop fast even with a stream in flight; nothing it serves needs a grace period.
SHUTDOWN_TIMEOUT = 0.2

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
# Never legitimate on a request from a gateway to OpenAI: hop-by-hop headers (RFC 9110 7.6.1)
# that must not be forwarded, and the other dialects' credential headers of the caller.
DEFAULT_FORBIDDEN_HEADERS = (
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "x-api-key",
    "x-goog-api-key",
)


@dataclass
class Behavior:
    """Switches; a test may change them at any time (each request snapshots them on arrival)."""

    status: int | None = None  # answer this status instead of the normal reply
    body: bytes | str | dict[str, Any] | None = None  # body of the status answer; None: OpenAI's
    times: int | None = None  # status for the next N requests only; None: for all
    retry_after: float | str | None = None  # Retry-After header on the status answers
    headers: dict[str, str] = field(default_factory=dict)  # extra headers on every answer
    first_byte_delay: float = 0.0  # seconds before the response headers (every answer)
    chunks: int | None = None  # content/argument deltas in a stream; None: one per word
    chunk_delay: float = 0.0  # seconds between stream events
    cut_after: int | None = None  # abort the TCP connection after K `data:` events (no [DONE])
    error_after: int | None = None  # after K events send OpenAI's mid-stream error event instead
    tool_call: dict[str, str] | None = None  # {"name", "arguments"}: call a tool if tools sent
    usage: dict[str, Any] | None = None  # replaces the usage object in answers
    content: str | None = None  # replaces the "echo: ..." reply text
    embedding_dim: int = 8  # vector size when the request has no `dimensions`
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
    status: int | None = None  # status the fake answered (None while in flight)
    events_sent: int = 0  # SSE `data:` events written, [DONE] included
    completed: bool = False  # the whole answer was written
    disconnected_at: float | None = None  # time.monotonic() the client was seen gone


@dataclass(frozen=True)
class Violation:
    kind: str  # "invalid_body", "unknown_route", "unauthorized", "forbidden_header", "host"
    detail: str
    request: Recorded

    def __str__(self) -> str:
        return f"[{self.kind}] {self.request.method} {self.request.path}: {self.detail}"


class FakeOpenAI:
    def __init__(
        self,
        *,
        prefix: str = "/v1",
        api_key: str | None = "sk-up-test",
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = DEFAULT_MODELS,
        forbidden_headers: Iterable[str] = DEFAULT_FORBIDDEN_HEADERS,
        forbidden_values: Iterable[str] = (),
        forbid_extra_fields: bool = True,
        check_host: bool = True,
    ) -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.api_key = api_key
        self.host = host
        self.port = port
        self.models = list(models)
        self.forbidden_headers = {h.lower() for h in forbidden_headers}
        self.forbidden_values = list(forbidden_values)
        self.forbid_extra_fields = forbid_extra_fields
        self.check_host = check_host
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
            f"<FakeOpenAI {self.base_url or 'stopped'} requests={len(self.requests)} "
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
        self.base_url = f"http://{self.host}:{self.port}{self.prefix}"
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
            raise AssertionError(f"fake OpenAI saw {len(self.violations)} bad request(s):\n{lines}")

    # The waits take `timeout` (ASYNC109) on purpose: it is the test's failure bound, and
    # `await fake.wait_disconnect(1.0)` reads better in a test than an `asyncio.timeout` block.
    async def wait_for(self, predicate: Callable[[FakeOpenAI], bool], timeout: float) -> None:  # noqa: ASYNC109
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
        rel = request.path[len(self.prefix) :] if request.path.startswith(self.prefix) else None
        self.calls[rel if rel is not None else request.path] += 1
        self._check_headers(rec)
        self._poke()
        try:
            resp = await self._answer(request, rec, rel)
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

    def _auth_error(self, rec: Recorded) -> web.Response | None:
        header = rec.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self.unauthorized.append(Violation("unauthorized", f"Authorization: {header!r}", rec))
            return self._json(401, wire.no_key_error())
        if self.api_key is not None and token != self.api_key:
            self.unauthorized.append(Violation("unauthorized", f"wrong key {token!r}", rec))
            return self._json(401, wire.wrong_key_error(token))
        return None

    def _route(self, method: str, rel: str | None) -> str | None:
        match (method, rel):
            case ("POST", "/chat/completions"):
                return "chat"
            case ("POST", "/completions"):
                return "completions"
            case ("POST", "/embeddings"):
                return "embeddings"
            case ("GET", "/models"):
                return "models"
            case ("GET", str(r)) if r.startswith("/models/") and len(r) > len("/models/"):
                return "model"
        return None

    async def _answer(
        self, request: web.Request, rec: Recorded, rel: str | None
    ) -> web.StreamResponse:
        endpoint = self._route(request.method, rel)
        if endpoint is None:
            # OpenAI's own words for a path or method it does not serve.
            self.invalid.append(Violation("unknown_route", "no such endpoint", rec))
            return self._json(404, wire.unknown_route_error(request.method, request.path))
        if (denied := self._auth_error(rec)) is not None:
            return denied
        if endpoint in ("chat", "completions", "embeddings"):
            problem = self._check_body(request, rec, endpoint)
            if problem is not None:
                self.invalid.append(Violation("invalid_body", problem.detail, rec))
                body = wire.error_body(
                    problem.message, "invalid_request_error", problem.param, problem.code
                )
                return self._json(400, body)
        b = dataclasses.replace(self.behavior, headers=dict(self.behavior.headers))
        if b.script is not None and rec.json is not None:
            b = dataclasses.replace(b, **(b.script(rec.json) or {}))
        status = self._take_status()
        if b.first_byte_delay:
            await asyncio.sleep(b.first_byte_delay)
        if status is not None:
            return self._status_answer(status, b)
        match endpoint:
            case "chat" | "completions":
                return await self._generate(request, rec, b, endpoint)
            case "embeddings":
                return await self._finish_plain(request, rec, b, self._embeddings(rec.json, b))
            case "models":
                models = {"object": "list", "data": [wire.model_object(m) for m in self.models]}
                return await self._finish_plain(request, rec, b, (200, models))
            case _:
                model_id = rel[len("/models/") :] if rel else ""
                if model_id in self.models:
                    return await self._finish_plain(
                        request, rec, b, (200, wire.model_object(model_id))
                    )
                body = wire.unknown_model_error(model_id)
                return await self._finish_plain(request, rec, b, (404, body))

    def _check_body(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> wire.BodyProblem | None:
        parsed, problem = wire.validate_body(
            endpoint, rec.body, forbid_extra=self.forbid_extra_fields
        )
        rec.json = parsed
        if problem is None and request.content_type != "application/json":
            msg = f"Invalid Content-Type header ({request.content_type}), expected application/json"
            return wire.BodyProblem(msg, None, None, msg)
        return problem

    def _take_status(self) -> int | None:
        b = self.behavior
        if b.status is None or (b.times is not None and b.times <= 0):
            return None
        if b.times is not None:
            b.times -= 1
        return b.status

    def _headers(self, b: Behavior) -> dict[str, str]:
        return {
            "x-request-id": f"req_fake{self._next_id():06d}",
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
            **b.headers,
        }

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps(body, indent=2).encode(),
            content_type="application/json",
            headers=headers,
        )

    def _status_answer(self, status: int, b: Behavior) -> web.Response:
        headers = self._headers(b)
        if b.retry_after is not None:
            ra = b.retry_after
            headers["Retry-After"] = (
                str(int(ra)) if isinstance(ra, float) and ra.is_integer() else str(ra)
            )
        match b.body:
            case None:
                return self._json(status, wire.status_error(status), headers)
            case dict():
                return self._json(status, b.body, headers)
            case str() | bytes():
                raw = b.body.encode() if isinstance(b.body, str) else b.body
                return web.Response(status=status, body=raw, headers=headers)
        raise TypeError(f"Behavior.body must be bytes, str, dict or None, not {type(b.body)}")

    async def _finish_plain(
        self, request: web.Request, rec: Recorded, b: Behavior, answer: tuple[int, dict[str, Any]]
    ) -> web.StreamResponse:
        status, body = answer
        if b.cut_after is None:
            whole = self._json(status, body, self._headers(b))
            if b.compress:
                whole.enable_compression()  # picks gzip or deflate from Accept-Encoding
            return whole
        # A non-streamed answer cut short: full headers, half the body, then the TCP abort.
        raw = json.dumps(body, indent=2).encode()
        resp = web.StreamResponse(status=status, headers=self._headers(b))
        resp.content_type = "application/json"
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

    # --- endpoints -------------------------------------------------------------------------------

    def _tool_call(self, body: dict[str, Any], b: Behavior) -> dict[str, str] | None:
        tools = body.get("tools")
        if not b.tool_call or not tools:
            return None
        name = b.tool_call.get("name") or tools[0].get("function", {}).get("name", "tool")
        arguments = b.tool_call.get("arguments", "{}")
        return {"id": f"call_fake{self._next_id():06d}", "name": name, "arguments": arguments}

    def _reply(self, body: dict[str, Any], b: Behavior, kind: str) -> wire.Reply:
        if kind == "chat":
            text, prompt_tokens = wire.chat_reply_text(body)
        else:
            text, prompt_tokens = wire.legacy_prompt_text(body)
        text, finish = wire.truncate(b.content if b.content is not None else text, body)
        call = self._tool_call(body, b) if kind == "chat" else None
        if call is not None:
            finish = "tool_calls"
        said = f"{call['name']} {call['arguments']}" if call else text
        usage = (
            b.usage
            if b.usage is not None
            else wire.usage_object(prompt_tokens, wire.words(said), details=kind == "chat")
        )
        return wire.Reply(
            id=f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-fake{self._next_id():06d}",
            created=int(time.time()),
            model=body["model"],
            text=text,
            finish_reason=finish,
            usage=usage,
            tool_call=call,
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
            chunks=b.chunks,
        )

    async def _generate(
        self, request: web.Request, rec: Recorded, b: Behavior, kind: str
    ) -> web.StreamResponse:
        body: dict[str, Any] = rec.json
        reply = self._reply(body, b, kind)
        if body.get("stream"):
            chunks = wire.chat_stream(reply) if kind == "chat" else wire.legacy_stream(reply)
            return await self._stream(request, rec, b, [wire.sse(c) for c in chunks])
        answer = wire.chat_completion(reply) if kind == "chat" else wire.legacy_completion(reply)
        return await self._finish_plain(request, rec, b, (200, answer))

    def _embeddings(self, body: dict[str, Any], b: Behavior) -> tuple[int, dict[str, Any]]:
        raw_input = body["input"]
        inputs: list[Any]
        if isinstance(raw_input, str):
            inputs = [raw_input]
        elif raw_input and isinstance(raw_input[0], int):
            inputs = [raw_input]  # one prompt given as token ids
        else:
            inputs = list(raw_input)
        dim = body.get("dimensions") or b.embedding_dim
        tokens = sum(wire.words(i) if isinstance(i, str) else len(i) for i in inputs)
        answer = wire.embedding_response(
            body["model"],
            [wire.embedding_vector(i, dim) for i in inputs],
            base64_format=body.get("encoding_format") == "base64",
            prompt_tokens=tokens,
        )
        if b.usage is not None:
            answer["usage"] = b.usage
        return 200, answer

    async def _stream(
        self, request: web.Request, rec: Recorded, b: Behavior, events: list[bytes]
    ) -> web.StreamResponse:
        events.append(wire.sse("[DONE]"))
        resp = web.StreamResponse(status=200, headers=self._headers(b))
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
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
                    # OpenAI's mid-stream failure: an `error` object in place of a chunk, then
                    # the end of the body without [DONE].
                    await resp.write(wire.sse(wire.STREAM_ERROR))
                    rec.events_sent += 1
                    break
                await resp.write(event)
                rec.events_sent += 1
                self._poke()
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
    fake = FakeOpenAI(
        prefix=args.prefix, api_key=args.api_key, host=args.host, port=args.port, check_host=False
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake OpenAI on {fake.base_url} (key: {args.api_key or 'any Bearer'})", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-dialect provider for manual checks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--prefix", default="/v1")
    parser.add_argument("--api-key", default=None, help="expected Bearer key; default: any")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
