"""A fake Gemini API provider: a real aiohttp server on 127.0.0.1 for e2e tests.

It answers in the Gemini API's wire format, generativelanguage `v1beta` and `v1` (`gemini_wire`),
validates every request body against the official `google-genai` SDK's own types plus the API's
own rules (`gemini_checks`), checks the `x-goog-api-key` header or `?key=`, records every request,
and has switches for the ways real providers misbehave (`Behavior`). What every fake shares is in
`base`. See tests/fakes/README.md.

    async with FakeGemini(api_key="gemini-up-test") as fake:
        fake.behavior.status, fake.behavior.times = 429, 1
        ...                      # point the gateway at fake.base_url (no version in it)
        fake.assert_clean()

Standalone: python -m tests.fakes.gemini_provider --port 9103
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from typing_extensions import Unpack

from tests.fakes import base
from tests.fakes import gemini_checks as checks
from tests.fakes import gemini_wire as wire
from tests.fakes.base import Violation

__all__ = ["Behavior", "FakeGemini", "Recorded", "Violation"]

DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")
# The other dialects' credential headers of the caller are never legitimate here either.
DEFAULT_FORBIDDEN_HEADERS = (*base.HOP_BY_HOP, "authorization", "x-api-key")
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
class Behavior(base.Behavior):
    """Switches (`base.Behavior`) plus Gemini's own. `cut_after` and `error_after` count SSE
    events or array elements; `usage` replaces `usageMetadata` in every answer and chunk."""

    retry_delay: float | None = 7.0  # RetryInfo.retryDelay on a 429 answer; None: no RetryInfo
    function_call: dict[str, Any] | None = None  # {"name", "args"}: call a declared function
    parallel_calls: list[dict[str, Any]] | None = None  # several functionCall parts at once
    thoughts: str | None = None  # the model thought this (parts shown with includeThoughts)
    thoughts_tokens: int | None = None  # thoughtsTokenCount; None: words of `thoughts`
    cached: int = 0  # cachedContentTokenCount (a part of promptTokenCount)
    finish_reason: str | None = None  # e.g. "SAFETY": the candidate comes back blocked
    block_reason: str | None = None  # e.g. "SAFETY": promptFeedback.blockReason, no candidates


@dataclass
class Recorded(base.Recorded):
    """One request as it arrived (`base.Recorded`), and what its path and body named."""

    rpc: str | None = None  # "generateContent", ..., "models.list", "models.get"
    version: str | None = None  # "v1beta" or "v1"
    model: str | None = None  # from the path, without "models/"
    request: Any = None  # the validated `gemini_checks` request model, when the body passed


class FakeGemini(base.FakeProvider[Behavior, Recorded]):
    dialect = "Gemini"
    behavior_class = Behavior
    recorded_class = Recorded
    json_charset = "UTF-8"

    # No version in `base_url`: the SDK takes `api_version` apart from it, and so does a gateway
    # provider entry ("base URL without /v1beta").
    def __init__(
        self,
        *,
        api_key: str | None = "gemini-up-test",
        models: Sequence[str] = DEFAULT_MODELS,
        forbidden_headers: Iterable[str] = DEFAULT_FORBIDDEN_HEADERS,
        check_models: bool = False,
        require_thought_signatures: bool = False,
        **options: Unpack[base.Options],
    ) -> None:
        self.check_models = check_models
        self.require_thought_signatures = require_thought_signatures
        super().__init__(
            api_key=api_key, models=models, forbidden_headers=forbidden_headers, **options
        )

    # --- checks --------------------------------------------------------------------------------

    def _request_fields(self, request: web.Request) -> dict[str, Any]:
        method, path = request.method, request.path
        if method == "POST" and (m := _RPC.fullmatch(path)):
            return {"rpc": m[3], "version": m[1], "model": m[2]}
        if method == "GET" and (m := _LIST.fullmatch(path)):
            return {"rpc": "models.list", "version": m[1]}
        if method == "GET" and (m := _MODEL.fullmatch(path)):
            return {"rpc": "models.get", "version": m[1], "model": m[2]}
        return {}

    def _call_name(self, rec: Recorded) -> str:
        return rec.rpc or rec.path

    def _endpoint(self, rec: Recorded) -> str | None:
        return rec.rpc

    def _unknown_route(self, request: web.Request) -> web.Response:
        html = wire.not_found_html(request.path)
        return web.Response(status=404, text=html, content_type="text/html", charset="UTF-8")

    @staticmethod
    def _array(rec: Recorded) -> bool:
        # Without ?alt=sse a stream is a JSON array, and so is its error body: `[{"error": …}]`
        # (quoted in continuedev/continue#8516).
        return rec.rpc == "streamGenerateContent" and rec.query.get("alt") != "sse"

    def _refusal(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> web.Response | None:
        if (denied := self._auth_error(rec)) is not None:
            return denied
        if endpoint in ("generateContent", "streamGenerateContent", "countTokens"):
            problem = self._check_body(request, rec, endpoint)
            if problem is not None:
                self.invalid.append(Violation("invalid_body", problem.detail, rec))
                return self._json(400, wire.invalid_argument(problem), array=self._array(rec))
        return None

    def _auth_error(self, rec: Recorded) -> web.Response | None:
        # The SDK sends `x-goog-api-key`; `?key=` is the other documented way.
        key = rec.headers.get("x-goog-api-key") or rec.query.get("key") or ""
        if not key:
            self.unauthorized.append(Violation("unauthorized", "no x-goog-api-key or ?key=", rec))
            return self._json(403, wire.no_key_error(), array=self._array(rec))
        if self.api_key is not None and key != self.api_key:
            self.unauthorized.append(Violation("unauthorized", f"wrong key {key!r}", rec))
            return self._json(400, wire.bad_key_error(), array=self._array(rec))
        return None

    def _check_body(
        self, request: web.Request, rec: Recorded, rpc: str
    ) -> checks.BodyProblem | None:
        parsed, req, problem = checks.validate_body(
            rpc,
            rec.body,
            forbid_extra=self.forbid_extra_fields,
            require_signatures=self.require_thought_signatures,
        )
        rec.json, rec.request = parsed, req
        if problem is None and (msg := self._content_type_error(request)) is not None:
            return checks.BodyProblem(msg, (), msg)
        return problem

    # --- answers -------------------------------------------------------------------------------

    def _headers(self, b: Behavior) -> dict[str, str]:
        return {**GOOGLE_HEADERS, "Server-Timing": f"gfet4t7; dur={self._next_id()}", **b.headers}

    def _dumps(self, body: Any) -> bytes:
        return wire.dumps(body)

    def _json(
        self,
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        array: bool = False,
    ) -> web.Response:
        return super()._json(status, [body] if array else body, headers)

    def _status_error(
        self, status: int, b: Behavior, headers: dict[str, str], rec: Recorded
    ) -> web.Response:
        body = wire.status_error(status, b.retry_delay)
        return self._json(status, body, headers, array=self._array(rec))

    async def _serve(
        self, request: web.Request, rec: Recorded, endpoint: str, b: Behavior
    ) -> web.StreamResponse:
        version = rec.version or ""
        if rec.model is not None and self.check_models and rec.model not in self.models:
            method = {"models.get": "get"}.get(endpoint, endpoint)
            body = wire.model_not_found(rec.model, version, method)
            return self._json(404, body, self._headers(b), array=self._array(rec))
        match endpoint:
            case "generateContent" | "streamGenerateContent":
                return await self._generate(request, rec, b)
            case "countTokens":
                req = rec.request
                inner = req.generate_content_request
                total = wire.prompt_tokens(inner, None if inner else req.contents)
                return await self._finish_plain(request, b, wire.count_tokens_response(total))
            case "models.list":
                size = rec.query.get("pageSize")
                page = wire.list_models(
                    self.models, int(size) if size and size.isdigit() else None, rec.query.get("pageToken")
                )
                return await self._finish_plain(request, b, page)
            case _:
                model_id = rec.model or ""
                if model_id in self.models:
                    return await self._finish_plain(request, b, wire.model_object(model_id))
                body = wire.model_not_found(model_id, version, "get")
                return self._json(404, body, self._headers(b))

    def _calls(self, req: checks.GenerateContentRequest, b: Behavior) -> list[dict[str, Any]]:
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

    def _reply(self, req: checks.GenerateContentRequest, model: str, b: Behavior) -> wire.Reply:
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
        seed = f"{model}|{calls[0]['name'] if calls else text}"
        return wire.Reply(
            model=model,
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
        self, request: web.Request, rec: Recorded, b: Behavior
    ) -> web.StreamResponse:
        reply = self._reply(rec.request, rec.model or "", b)
        if rec.rpc == "generateContent":
            return await self._finish_plain(request, b, wire.generate_response(reply))
        chunks = wire.stream_chunks(reply)
        # A failure after the 200: an `{"error": …}` object in place of a chunk, then the end of
        # the body (the SDK raises on a chunk starting so).
        if rec.query.get("alt") == "sse":
            # No terminator event: `end=b""` makes the body's end a cut point of its own.
            events = [wire.sse(c) for c in chunks]
            error = wire.sse(wire.STREAM_ERROR)
            return await self._stream(
                request, rec, b, events, error=lambda _: error, end=b"", charset=None
            )

        def array_error(i: int) -> bytes:
            element = wire.array_element(wire.STREAM_ERROR, first=i == 0)
            return element + wire.array_close(empty=False)

        events = [wire.array_element(c, first=i == 0) for i, c in enumerate(chunks)]
        return await self._stream(
            request,
            rec,
            b,
            events,
            error=array_error,
            end=wire.array_close(empty=not chunks),
            content_type="application/json",
            charset="UTF-8",
        )


def main() -> None:
    parser = base.standalone_parser(
        "Fake Gemini API provider for manual checks",
        port=9103,
        key_help="expected key; default: any non-empty",
    )
    args = parser.parse_args()
    fake = FakeGemini(api_key=args.api_key, host=args.host, port=args.port, check_host=False)
    asyncio.run(base.serve_until_stopped(fake, args.api_key or "any"))


if __name__ == "__main__":
    main()
