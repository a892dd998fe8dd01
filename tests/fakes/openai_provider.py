"""A fake OpenAI-dialect provider: a real aiohttp server on 127.0.0.1 for e2e tests.

It answers in OpenAI's wire format (`openai_wire`), validates every request body against the
official SDK's own request types (`openai_checks`), checks `Authorization: Bearer`, records every
request, and has switches for the ways real providers misbehave (`Behavior`). What every fake
shares is in `base`. See tests/fakes/README.md.

    async with FakeOpenAI(prefix="/v1", api_key="sk-up-test") as fake:
        fake.behavior.status, fake.behavior.times = 429, 1
        ...                      # point the gateway at fake.base_url
        fake.assert_clean()

Standalone: python -m tests.fakes.openai_provider --port 9101 --prefix /v1
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from typing_extensions import Unpack

from tests.fakes import base
from tests.fakes import openai_checks as checks
from tests.fakes import openai_wire as wire
from tests.fakes.base import Recorded, Violation

__all__ = ["Behavior", "FakeOpenAI", "Recorded", "Violation"]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
# The other dialects' credential headers of the caller are never legitimate here either.
DEFAULT_FORBIDDEN_HEADERS = (*base.HOP_BY_HOP, "x-api-key", "x-goog-api-key")


@dataclass
class Behavior(base.Behavior):
    """Switches (`base.Behavior`) plus OpenAI's own. `chunks` also counts tool-argument
    fragments (default 4); `cut_after` counts `data:` events, and the stream then has no [DONE]."""

    tool_call: dict[str, str] | None = None  # {"name", "arguments"}: call a tool if tools sent
    embedding_dim: int = 8  # vector size when the request has no `dimensions`


class FakeOpenAI(base.FakeProvider[Behavior, Recorded]):
    dialect = "OpenAI"
    behavior_class = Behavior
    recorded_class = Recorded

    def __init__(
        self,
        *,
        prefix: str = "/v1",
        api_key: str | None = "sk-up-test",
        models: Sequence[str] = DEFAULT_MODELS,
        forbidden_headers: Iterable[str] = DEFAULT_FORBIDDEN_HEADERS,
        **options: Unpack[base.Options],
    ) -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        super().__init__(
            api_key=api_key,
            models=models,
            forbidden_headers=forbidden_headers,
            base_path=self.prefix,
            **options,
        )

    # --- checks --------------------------------------------------------------------------------

    def _relative(self, path: str) -> str | None:
        """The path without the prefix; None when it is not under it."""
        return path[len(self.prefix) :] if path.startswith(self.prefix) else None

    def _call_name(self, rec: Recorded) -> str:
        rel = self._relative(rec.path)
        return rel if rel is not None else rec.path

    def _endpoint(self, rec: Recorded) -> str | None:
        match (rec.method, self._relative(rec.path)):
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

    def _unknown_route(self, request: web.Request) -> web.Response:
        # OpenAI's own words for a path or method it does not serve.
        return self._json(404, wire.unknown_route_error(request.method, request.path))

    def _refusal(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> web.Response | None:
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
        return None

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

    def _check_body(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> checks.BodyProblem | None:
        parsed, problem = checks.validate_body(
            endpoint, rec.body, forbid_extra=self.forbid_extra_fields
        )
        rec.json = parsed
        if problem is None and (msg := self._content_type_error(request)) is not None:
            return checks.BodyProblem(msg, None, None, msg)
        return problem

    # --- answers -------------------------------------------------------------------------------

    def _headers(self, b: Behavior) -> dict[str, str]:
        return {
            "x-request-id": f"req_fake{self._next_id():06d}",
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
            **b.headers,
        }

    def _dumps(self, body: Any) -> bytes:
        return json.dumps(body, indent=2).encode()

    def _status_error(
        self, status: int, b: Behavior, headers: dict[str, str], rec: Recorded
    ) -> web.Response:
        return self._json(status, wire.status_error(status), headers)

    async def _serve(
        self, request: web.Request, rec: Recorded, endpoint: str, b: Behavior
    ) -> web.StreamResponse:
        match endpoint:
            case "chat" | "completions":
                return await self._generate(request, rec, b, endpoint)
            case "embeddings":
                return await self._finish_plain(request, b, self._embeddings(rec.json, b))
            case "models":
                models = {"object": "list", "data": [wire.model_object(m) for m in self.models]}
                return await self._finish_plain(request, b, models)
            case _:
                model_id = rec.path[len(self.prefix) + len("/models/") :]
                if model_id in self.models:
                    return await self._finish_plain(request, b, wire.model_object(model_id))
                body = wire.unknown_model_error(model_id)
                return await self._finish_plain(request, b, body, status=404)

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
            events = [*(wire.sse(c) for c in chunks), wire.sse("[DONE]")]
            # OpenAI's mid-stream failure: an `error` object in place of a chunk, then the end
            # of the body without [DONE].
            error = wire.sse(wire.STREAM_ERROR)
            return await self._stream(request, rec, b, events, error=lambda _: error)
        answer = wire.chat_completion(reply) if kind == "chat" else wire.legacy_completion(reply)
        return await self._finish_plain(request, b, answer)

    def _embeddings(self, body: dict[str, Any], b: Behavior) -> dict[str, Any]:
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
        return answer


def main() -> None:
    parser = base.standalone_parser(
        "Fake OpenAI-dialect provider for manual checks",
        port=9101,
        key_help="expected Bearer key; default: any",
    )
    parser.add_argument("--prefix", default="/v1")
    args = parser.parse_args()
    fake = FakeOpenAI(
        prefix=args.prefix, api_key=args.api_key, host=args.host, port=args.port, check_host=False
    )
    asyncio.run(base.serve_until_stopped(fake, args.api_key or "any Bearer"))


if __name__ == "__main__":
    main()
