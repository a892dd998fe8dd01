"""A fake Anthropic Messages provider: a real aiohttp server on 127.0.0.1 for e2e tests.

It answers in Anthropic's wire format, validates every request body against the official SDK's
own request types plus the rules the API enforces beyond them (see `anthropic_wire`), checks the
key and `anthropic-version`, records every request, and has switches for the ways real providers
misbehave (`Behavior`). See tests/fakes/README.md.

    async with FakeAnthropic(api_key="sk-ant-up-test") as fake:
        fake.behavior.status, fake.behavior.times = 529, 1
        ...                      # point the gateway at fake.base_url (no /v1, as ANTHROPIC_BASE_URL)
        fake.assert_clean()

Standalone: python -m tests.fakes.anthropic_provider --port 9102
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import json
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from tests.fakes import anthropic_wire as wire

__all__ = ["Behavior", "FakeAnthropic", "Recorded", "Violation"]

# The API's own limit for the Messages and Token Counting endpoints (docs: api/errors, "Request
# size limits"); a bigger body gets its 413 `request_too_large`, as a gateway must expect.
MAX_BODY_BYTES = 32 * 1024 * 1024
# The fake must stop fast even with a stream in flight; nothing it serves needs a grace period.
SHUTDOWN_TIMEOUT = 0.2

DEFAULT_MODELS = ("claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5")
# Never legitimate on a request from a gateway to Anthropic: hop-by-hop headers (RFC 9110 7.6.1)
# that must not be forwarded, and Gemini's credential header of a caller. `Authorization` is not
# here: the SDK 2.x sends its API key as `Authorization: Bearer`, and the API accepts both.
DEFAULT_FORBIDDEN_HEADERS = (
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "x-goog-api-key",
)
# Statuses the SDKs retry; the API says so in `x-should-retry` (seen on its 400s as "false").
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass
class Behavior:
    """Switches; a test may change them at any time (each request snapshots them on arrival)."""

    status: int | None = None  # answer this status instead of the normal reply
    body: bytes | str | dict[str, Any] | None = None  # body of the status answer; None: the API's
    times: int | None = None  # status for the next N requests only; None: for all
    retry_after: float | str | None = None  # `retry-after` header on the status answers
    headers: dict[str, str] = field(default_factory=dict)  # extra headers on every answer
    first_byte_delay: float = 0.0  # seconds before the response headers (every answer)
    chunks: int | None = None  # text/thinking deltas (argument fragments); None: one per word
    chunk_delay: float = 0.0  # seconds between stream events
    cut_after: int | None = None  # abort the TCP connection after K SSE events (ping included)
    error_after: int | None = None  # after K events send `event: error` and end the body
    error_type: str = "overloaded_error"  # error.type of that event
    usage: dict[str, Any] | None = None  # keys override those of every usage object
    content: str | None = None  # replaces the "echo: ..." reply text
    tool_use: dict[str, Any] | None = None  # {"name"?, "input"?}: a tool_use block, if tools sent
    parallel_tools: list[dict[str, Any]] | None = None  # several tool_use blocks
    thinking: str | None = None  # a thinking block first, if the request enables thinking
    cache_read: int = 0  # cache_read_input_tokens, on top of the counted input
    cache_creation: int = 0  # cache_creation_input_tokens, on top of the counted input
    refusal: bool = False  # stop_reason "refusal" with stop_details
    stop_reason: str | None = None  # force any stop reason (pause_turn, ...)
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
    beta: bool = False  # `?beta=true`, as the SDK's beta resources and Claude Code send it
    betas: list[str] = field(default_factory=list)  # the `anthropic-beta` header, split
    version: str | None = None  # the `anthropic-version` header
    auth: str | None = None  # "x-api-key" or "bearer": where the key came from
    media: list[dict[str, Any]] = field(default_factory=list)  # images and documents sent
    status: int | None = None  # status the fake answered (None while in flight)
    events_sent: int = 0  # SSE events written (ping and error included)
    completed: bool = False  # the whole answer was written
    disconnected_at: float | None = None  # time.monotonic() the client was seen gone


@dataclass(frozen=True)
class Violation:
    kind: str  # "invalid_body", "version", "unknown_route", "unauthorized", "forbidden_header", "host"
    detail: str
    request: Recorded

    def __str__(self) -> str:
        return f"[{self.kind}] {self.request.method} {self.request.path}: {self.detail}"


class FakeAnthropic:
    def __init__(
        self,
        *,
        api_key: str | None = "sk-ant-up-test",
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = DEFAULT_MODELS,
        forbidden_headers: Iterable[str] = DEFAULT_FORBIDDEN_HEADERS,
        forbidden_values: Iterable[str] = (),
        forbid_extra_fields: bool = True,
        check_host: bool = True,
        accept_bearer: bool = True,
        verify_signatures: bool = True,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.models = list(models)
        self.forbidden_headers = {h.lower() for h in forbidden_headers}
        self.forbidden_values = list(forbidden_values)
        self.forbid_extra_fields = forbid_extra_fields
        self.check_host = check_host
        self.accept_bearer = accept_bearer
        self.verify_signatures = verify_signatures
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
            f"<FakeAnthropic {self.base_url or 'stopped'} requests={len(self.requests)} "
            f"invalid={len(self.invalid)} unauthorized={len(self.unauthorized)} "
            f"forbidden={len(self.forbidden)} disconnects={self.disconnects}>"
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
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
            raise AssertionError(
                f"fake Anthropic saw {len(self.violations)} bad request(s):\n{lines}"
            )

    # The waits take `timeout` (ASYNC109) on purpose: it is the test's failure bound, and
    # `await fake.wait_disconnect(1.0)` reads better in a test than an `asyncio.timeout` block.
    async def wait_for(self, predicate: Callable[[FakeAnthropic], bool], timeout: float) -> None:  # noqa: ASYNC109
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

    def _request_id(self) -> str:
        # The API's ids are `req_011C` + base58 (e.g. req_011CXw8h8A796q3f74Ezmhav).
        return f"req_011CFake{self._next_id():014d}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            raw, too_large = await request.read(), False
        except web.HTTPRequestEntityTooLarge:
            raw, too_large = b"", True
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=MultiDict(request.query),
            headers=CIMultiDict(request.headers),
            body=raw,
            json=None,
            received_at=time.monotonic(),
            beta=request.query.get("beta") == "true",
            betas=[
                b.strip() for b in request.headers.get("anthropic-beta", "").split(",") if b.strip()
            ],
            version=request.headers.get("anthropic-version"),
        )
        self.requests.append(rec)
        self.calls[request.path] += 1
        self._check_headers(rec)
        self._poke()
        try:
            if too_large:
                error = wire.status_error(413, None)["error"]
                resp: web.StreamResponse = self._error(413, error["type"], error["message"])
            else:
                resp = await self._answer(request, rec)
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
        """`x-api-key` wins over `Authorization: Bearer` when both are sent, as the API does."""
        key = rec.headers.get("x-api-key", "").strip()
        scheme, _, token = rec.headers.get("Authorization", "").partition(" ")
        if key:
            rec.auth, given, wrong = "x-api-key", key, "invalid x-api-key"
        elif self.accept_bearer and scheme.lower() == "bearer" and token.strip():
            rec.auth, given, wrong = "bearer", token.strip(), "Invalid bearer token"
        else:
            # Without either header the API names the one it documents (stackblitz-labs/bolt.diy#156).
            self.unauthorized.append(Violation("unauthorized", "no x-api-key", rec))
            return self._error(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and given != self.api_key:
            self.unauthorized.append(Violation("unauthorized", f"wrong key via {rec.auth}", rec))
            return self._error(401, "authentication_error", wrong)
        return None

    def _version_error(self, rec: Recorded) -> web.Response | None:
        if rec.version is None:
            # The API's 400 for a missing header (quoted in envoyproxy/ai-gateway#1909).
            self.invalid.append(Violation("version", "no anthropic-version header", rec))
            return self._error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if rec.version not in wire.API_VERSIONS:
            self.invalid.append(Violation("version", f"anthropic-version {rec.version!r}", rec))
            msg = f"anthropic-version: {rec.version!r} is not a supported version"  # fake's wording
            return self._error(400, "invalid_request_error", msg)
        return None

    def _route(self, method: str, path: str) -> str | None:
        match (method, path):
            case ("POST", "/v1/messages"):
                return "messages"
            case ("POST", "/v1/messages/count_tokens"):
                return "count_tokens"
            case ("GET", "/v1/models"):
                return "models"
            case ("GET", str(p)) if p.startswith("/v1/models/") and len(p) > len("/v1/models/"):
                return "model"
        return None

    async def _answer(self, request: web.Request, rec: Recorded) -> web.StreamResponse:
        endpoint = self._route(request.method, request.path)
        if endpoint is None:
            self.invalid.append(Violation("unknown_route", "no such endpoint", rec))
            return self._error(404, "not_found_error", "Not Found")
        denied = self._auth_error(rec) or self._version_error(rec)
        if denied is not None:
            return denied
        if endpoint in ("messages", "count_tokens"):
            problem = self._check_body(request, rec, endpoint)
            if problem is not None:
                self.invalid.append(Violation("invalid_body", problem.detail, rec))
                return self._error(400, "invalid_request_error", problem.message)
        b = dataclasses.replace(self.behavior, headers=dict(self.behavior.headers))
        if b.script is not None and rec.json is not None:
            b = dataclasses.replace(b, **(b.script(rec.json) or {}))
        status = self._take_status()
        if b.first_byte_delay:
            await asyncio.sleep(b.first_byte_delay)
        if status is not None:
            return self._status_answer(status, b)
        match endpoint:
            case "messages":
                return await self._generate(request, rec, b)
            case "count_tokens":
                answer = {"input_tokens": wire.input_tokens(rec.json)}
                return await self._finish_plain(request, rec, b, (200, answer))
            case "models":
                data = [wire.model_info(m) for m in self.models]
                page = {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
                return await self._finish_plain(request, rec, b, (200, page))
            case _:
                model_id = request.path[len("/v1/models/") :]
                if model_id in self.models:
                    return await self._finish_plain(
                        request, rec, b, (200, wire.model_info(model_id))
                    )
                return self._error(404, "not_found_error", f"model: {model_id}")

    def _check_body(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> wire.BodyProblem | None:
        parsed, problem = wire.validate_body(
            endpoint,
            rec.body,
            beta=rec.beta or bool(rec.betas),
            version=rec.version or wire.LATEST_VERSION,
            forbid_extra=self.forbid_extra_fields,
            signed=self.verify_signatures,
        )
        rec.json = parsed
        if isinstance(parsed, dict) and problem is None:
            rec.media = wire.media_of(parsed)
        if problem is None and request.content_type != "application/json":
            msg = f"Invalid Content-Type header ({request.content_type}), expected application/json"
            return wire.BodyProblem(msg, msg)  # the fake's wording
        return problem

    def _take_status(self) -> int | None:
        b = self.behavior
        if b.status is None or (b.times is not None and b.times <= 0):
            return None
        if b.times is not None:
            b.times -= 1
        return b.status

    def _headers(self, b: Behavior | None = None) -> dict[str, str]:
        return {"request-id": self._request_id(), **(b.headers if b else {})}

    def _json(self, status: int, body: Any, headers: dict[str, str]) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers=headers,
        )

    def _error(self, status: int, type_: str, message: str) -> web.Response:
        headers = self._headers()
        headers["x-should-retry"] = "true" if status in _RETRYABLE else "false"
        body = wire.error_body(type_, message, headers["request-id"])
        return self._json(status, body, headers)

    def _status_answer(self, status: int, b: Behavior) -> web.Response:
        headers = self._headers(b)
        headers["x-should-retry"] = "true" if status in _RETRYABLE else "false"
        if b.retry_after is not None:
            ra = b.retry_after
            headers["retry-after"] = (
                str(int(ra)) if isinstance(ra, float) and ra.is_integer() else str(ra)
            )
        if status == 429:
            # docs: api/rate-limits, response headers; the reset is an RFC 3339 time.
            wait = float(b.retry_after) if isinstance(b.retry_after, int | float) else 1.0
            reset = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=wait)
            headers.setdefault("anthropic-ratelimit-requests-limit", "50")
            headers.setdefault("anthropic-ratelimit-requests-remaining", "0")
            headers.setdefault(
                "anthropic-ratelimit-requests-reset",
                reset.isoformat(timespec="seconds").replace("+00:00", "Z"),
            )
        match b.body:
            case None:
                return self._json(status, wire.status_error(status, headers["request-id"]), headers)
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
        raw = json.dumps(body).encode()
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

    # --- the answer ------------------------------------------------------------------------------

    def _tools(self, body: dict[str, Any], b: Behavior) -> list[dict[str, Any]]:
        """tool_use blocks: the switches' when the request has tools; a forced `tool_choice`
        (any/tool) calls one with `{}` input even without a switch; `none` calls nothing."""
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        if not tools or choice.get("type") == "none":
            return []
        specs = list(b.parallel_tools or ([b.tool_use] if b.tool_use else []))
        if not specs and choice.get("type") in ("any", "tool"):
            specs = [{}]
        if choice.get("disable_parallel_tool_use"):
            specs = specs[:1]
        default = choice["name"] if choice.get("type") == "tool" else tools[0].get("name", "tool")
        return [
            {
                "id": f"toolu_01Fake{self._next_id():018d}",
                "name": s.get("name") or default,
                "input": s.get("input", {}),
            }
            for s in specs
        ]

    def _reply(self, body: dict[str, Any], b: Behavior) -> wire.Reply:
        tools = self._tools(body, b)
        thinking_cfg = body.get("thinking") or {}
        thinking = None
        if b.thinking is not None and thinking_cfg.get("type") in ("enabled", "adaptive"):
            # display "omitted": the text is withheld, the signature still comes (SDK docstring).
            thinking = "" if thinking_cfg.get("display") == "omitted" else b.thinking
        text: str | None = None
        stop_reason, stop_sequence = "tool_use", None
        if not tools or b.content is not None:
            source = b.content if b.content is not None else f"echo: {wire.last_user_text(body)}"
            text, stop_reason, stop_sequence = wire.truncate(source, body)
            if tools:
                stop_reason, stop_sequence = "tool_use", None
        if b.refusal:
            stop_reason, stop_sequence = "refusal", None
        if b.stop_reason is not None:
            stop_reason, stop_sequence = b.stop_reason, None
        said = [text or "", thinking or ""]
        said += [f"{t['name']} {json.dumps(t['input'])}" for t in tools]
        return wire.Reply(
            id=f"msg_01Fake{self._next_id():018d}",
            model=body["model"],
            thinking=thinking,
            text=text,
            tools=tools,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            input_tokens=wire.input_tokens(body),
            output_tokens=sum(wire.words(s) for s in said),
            cache_read=b.cache_read,
            cache_creation=b.cache_creation,
            usage_override=b.usage,
            chunks=b.chunks,
        )

    async def _generate(
        self, request: web.Request, rec: Recorded, b: Behavior
    ) -> web.StreamResponse:
        reply = self._reply(rec.json, b)
        if rec.json.get("stream"):
            events = [wire.sse(name, data) for name, data in wire.stream_events(reply)]
            return await self._stream(request, rec, b, events)
        return await self._finish_plain(request, rec, b, (200, wire.message_body(reply)))

    async def _stream(
        self, request: web.Request, rec: Recorded, b: Behavior, events: list[bytes]
    ) -> web.StreamResponse:
        headers = {**self._headers(b), "cache-control": "no-cache"}
        resp = web.StreamResponse(status=200, headers=headers)
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
                    # Anthropic's mid-stream failure (streaming docs, "Error events"): an `error`
                    # event where the next event would be, then the end of the body.
                    await resp.write(wire.sse("error", wire.stream_error(b.error_type)))
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
    fake = FakeAnthropic(api_key=args.api_key, host=args.host, port=args.port, check_host=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake Anthropic on {fake.base_url} (key: {args.api_key or 'any'})", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Fake Anthropic Messages provider for manual checks"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9102)
    parser.add_argument("--api-key", default=None, help="expected key; default: any")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
