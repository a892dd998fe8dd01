"""A fake Anthropic Messages provider: a real aiohttp server on 127.0.0.1 for e2e tests.

It answers in Anthropic's wire format (`anthropic_wire`), validates every request body against
the official SDK's own request types plus the rules the API enforces beyond them
(`anthropic_checks`), checks the key and `anthropic-version`, records every request, and has
switches for the ways real providers misbehave (`Behavior`). What every fake shares is in `base`.
See tests/fakes/README.md.

    async with FakeAnthropic(api_key="sk-ant-up-test") as fake:
        fake.behavior.status, fake.behavior.times = 529, 1
        ...                      # point the gateway at fake.base_url (no /v1, as ANTHROPIC_BASE_URL)
        fake.assert_clean()

Standalone: python -m tests.fakes.anthropic_provider --port 9102
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from typing_extensions import Unpack

from tests.fakes import anthropic_checks as checks
from tests.fakes import anthropic_wire as wire
from tests.fakes import base
from tests.fakes.base import Violation

__all__ = ["Behavior", "FakeAnthropic", "Recorded", "Violation"]

# The API's own limit for the Messages and Token Counting endpoints (docs: api/errors, "Request
# size limits"); a bigger body gets its 413 `request_too_large`, as a gateway must expect. Read
# at start, so that a test can lower it.
MAX_BODY_BYTES = 32 * 1024 * 1024

DEFAULT_MODELS = ("claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5")
# Gemini's credential header of a caller is never legitimate here either. `Authorization` is
# allowed: the SDK 2.x sends its API key as `Authorization: Bearer`, and the API accepts both.
DEFAULT_FORBIDDEN_HEADERS = (*base.HOP_BY_HOP, "x-goog-api-key")
# Statuses the SDKs retry; the API says so in `x-should-retry` (seen on its 400s as "false").
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass
class Behavior(base.Behavior):
    """Switches (`base.Behavior`) plus Anthropic's own. `chunks` counts text and thinking deltas
    (argument fragments); `cut_after` counts every SSE event, ping included; `usage` keys override
    those of every usage object."""

    error_type: str = "overloaded_error"  # error.type of the `error_after` event
    tool_use: dict[str, Any] | None = None  # {"name"?, "input"?}: a tool_use block, if tools sent
    parallel_tools: list[dict[str, Any]] | None = None  # several tool_use blocks
    thinking: str | None = None  # a thinking block first, if the request enables thinking
    cache_read: int = 0  # cache_read_input_tokens, on top of the counted input
    cache_creation: int = 0  # cache_creation_input_tokens, on top of the counted input
    refusal: bool = False  # stop_reason "refusal" with stop_details
    stop_reason: str | None = None  # force any stop reason (pause_turn, ...)


@dataclass
class Recorded(base.Recorded):
    """One request as it arrived (`base.Recorded`), and Anthropic's own headers and media."""

    beta: bool = False  # `?beta=true`, as the SDK's beta resources and Claude Code send it
    betas: list[str] = field(default_factory=list)  # the `anthropic-beta` header, split
    version: str | None = None  # the `anthropic-version` header
    auth: str | None = None  # "x-api-key" or "bearer": where the key came from
    media: list[dict[str, Any]] = field(default_factory=list)  # images and documents sent


class FakeAnthropic(base.FakeProvider[Behavior, Recorded]):
    dialect = "Anthropic"
    behavior_class = Behavior
    recorded_class = Recorded

    def __init__(
        self,
        *,
        api_key: str | None = "sk-ant-up-test",
        models: Sequence[str] = DEFAULT_MODELS,
        forbidden_headers: Iterable[str] = DEFAULT_FORBIDDEN_HEADERS,
        accept_bearer: bool = True,
        verify_signatures: bool = True,
        **options: Unpack[base.Options],
    ) -> None:
        self.accept_bearer = accept_bearer
        self.verify_signatures = verify_signatures
        super().__init__(
            api_key=api_key, models=models, forbidden_headers=forbidden_headers, **options
        )

    def _max_body_bytes(self) -> int:
        return MAX_BODY_BYTES

    def _too_large(self) -> web.Response:
        error = wire.status_error(413, None)["error"]
        return self._error(413, error["type"], error["message"])

    def _request_id(self) -> str:
        # The API's ids are `req_011C` + base58 (e.g. req_011CXw8h8A796q3f74Ezmhav).
        return f"req_011CFake{self._next_id():014d}"

    # --- checks --------------------------------------------------------------------------------

    def _request_fields(self, request: web.Request) -> dict[str, Any]:
        betas = request.headers.get("anthropic-beta", "").split(",")
        return {
            "beta": request.query.get("beta") == "true",
            "betas": [b.strip() for b in betas if b.strip()],
            "version": request.headers.get("anthropic-version"),
        }

    def _endpoint(self, rec: Recorded) -> str | None:
        match (rec.method, rec.path):
            case ("POST", "/v1/messages"):
                return "messages"
            case ("POST", "/v1/messages/count_tokens"):
                return "count_tokens"
            case ("GET", "/v1/models"):
                return "models"
            case ("GET", str(p)) if p.startswith("/v1/models/") and len(p) > len("/v1/models/"):
                return "model"
        return None

    def _unknown_route(self, request: web.Request) -> web.Response:
        return self._error(404, "not_found_error", "Not Found")

    def _refusal(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> web.Response | None:
        denied = self._auth_error(rec) or self._version_error(rec)
        if denied is not None:
            return denied
        if endpoint in ("messages", "count_tokens"):
            problem = self._check_body(request, rec, endpoint)
            if problem is not None:
                self.invalid.append(Violation("invalid_body", problem.detail, rec))
                return self._error(400, "invalid_request_error", problem.message)
        return None

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
        if rec.version not in checks.API_VERSIONS:
            self.invalid.append(Violation("version", f"anthropic-version {rec.version!r}", rec))
            msg = f"anthropic-version: {rec.version!r} is not a supported version"  # fake's wording
            return self._error(400, "invalid_request_error", msg)
        return None

    def _check_body(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> checks.BodyProblem | None:
        parsed, problem = checks.validate_body(
            endpoint,
            rec.body,
            beta=rec.beta or bool(rec.betas),
            version=rec.version or checks.LATEST_VERSION,
            forbid_extra=self.forbid_extra_fields,
            signed=self.verify_signatures,
        )
        rec.json = parsed
        if isinstance(parsed, dict) and problem is None:
            rec.media = checks.media_of(parsed)
        if problem is None and (msg := self._content_type_error(request)) is not None:
            return checks.BodyProblem(msg, msg)
        return problem

    # --- answers -------------------------------------------------------------------------------

    def _headers(self, b: Behavior | None = None) -> dict[str, str]:
        return {"request-id": self._request_id(), **(b.headers if b else {})}

    def _dumps(self, body: Any) -> bytes:
        return json.dumps(body).encode()

    def _error(self, status: int, type_: str, message: str) -> web.Response:
        headers = self._headers()
        headers["x-should-retry"] = "true" if status in _RETRYABLE else "false"
        body = wire.error_body(type_, message, headers["request-id"])
        return self._json(status, body, headers)

    def _status_headers(self, status: int, b: Behavior) -> dict[str, str]:
        headers = super()._status_headers(status, b)
        headers["x-should-retry"] = "true" if status in _RETRYABLE else "false"
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
        return headers

    def _status_error(
        self, status: int, b: Behavior, headers: dict[str, str], rec: Recorded
    ) -> web.Response:
        return self._json(status, wire.status_error(status, headers["request-id"]), headers)

    async def _serve(
        self, request: web.Request, rec: Recorded, endpoint: str, b: Behavior
    ) -> web.StreamResponse:
        match endpoint:
            case "messages":
                return await self._generate(request, rec, b)
            case "count_tokens":
                answer = {"input_tokens": wire.input_tokens(rec.json)}
                return await self._finish_plain(request, b, answer)
            case "models":
                data = [wire.model_info(m) for m in self.models]
                page = {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
                return await self._finish_plain(request, b, page)
            case _:
                model_id = rec.path[len("/v1/models/") :]
                if model_id in self.models:
                    return await self._finish_plain(request, b, wire.model_info(model_id))
                return self._error(404, "not_found_error", f"model: {model_id}")

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
        if not rec.json.get("stream"):
            return await self._finish_plain(request, b, wire.message_body(reply))
        events = [wire.sse(name, data) for name, data in wire.stream_events(reply)]
        # Anthropic's mid-stream failure (streaming docs, "Error events"): an `error` event where
        # the next event would be, then the end of the body.
        error = wire.sse("error", wire.stream_error(b.error_type))
        return await self._stream(
            request, rec, b, events, error=lambda _: error, headers={"cache-control": "no-cache"}
        )


def main() -> None:
    parser = base.standalone_parser(
        "Fake Anthropic Messages provider for manual checks",
        port=9102,
        key_help="expected key; default: any",
    )
    args = parser.parse_args()
    fake = FakeAnthropic(api_key=args.api_key, host=args.host, port=args.port, check_host=False)
    asyncio.run(base.serve_until_stopped(fake, args.api_key or "any"))


if __name__ == "__main__":
    main()
