"""What the targets are loaded with: one chat request, streamed or not, in a caller's dialect.

The core workloads (OpenAI caller, `gpt-4o-mini`) go to every target. The dialect workloads go to
Sluice alone, one per route (caller dialect -> provider kind): the caller picks the provider
through the model alias, `to-openai` or `to-anthropic`, both served by the same fake upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = [
    "ANTHROPIC_VERSION",
    "CLIENT_KEY",
    "MODEL",
    "NON_STREAM",
    "PATH",
    "ROUTES",
    "STREAM",
    "TO_ANTHROPIC",
    "TO_OPENAI",
    "WORKLOADS",
    "Route",
    "Workload",
    "non_stream_for",
    "raw_request",
    "route_workloads",
]

MODEL = "gpt-4o-mini"
PATH = "/v1/chat/completions"
# Every target is sent the same caller credential, as the openai SDK always sends one.
CLIENT_KEY = "sk-bench-client"
# Model aliases that pick the provider kind in the dialect cells.
TO_OPENAI = "to-openai"
TO_ANTHROPIC = "to-anthropic"
ANTHROPIC_VERSION = "2023-06-01"  # what the anthropic SDK sends

_SYSTEM = "You are a helpful assistant."
_PROMPT = "Write a haiku about a sluice gate on a quiet river."
_MESSAGES = [
    {"role": "system", "content": _SYSTEM},
    {"role": "user", "content": _PROMPT},
]
_MAX_TOKENS = 64

# Path and credential headers per caller dialect, as each official SDK sends them.
_OPENAI_HEADERS = (("Authorization", f"Bearer {CLIENT_KEY}"),)
_ANTHROPIC_HEADERS = (("x-api-key", CLIENT_KEY), ("anthropic-version", ANTHROPIC_VERSION))
_CALLERS = {
    "openai": (PATH, _OPENAI_HEADERS),
    "anthropic": ("/v1/messages", _ANTHROPIC_HEADERS),
}


@dataclass(frozen=True, slots=True)
class Workload:
    name: str  # "non-stream" or "stream-20"
    stream: bool
    body: bytes
    caller: str = "openai"  # the caller's dialect: path, credential header, shape of the answer
    route: str = ""  # "caller->provider" in the dialect cells; "" for the core workloads

    @property
    def path(self) -> str:
        return _CALLERS[self.caller][0]

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return _CALLERS[self.caller][1]

    @property
    def label(self) -> str:
        return f"{self.name} {self.route}" if self.route else self.name


# Streams do not ask for `stream_options.include_usage`, as the openai SDK does not by default:
# the gateway asks upstream for it and strips the usage chunk, and that work is part of its cost.
def _openai_body(model: str, stream: bool) -> bytes:
    body: dict[str, object] = {"model": model, "messages": _MESSAGES, "max_tokens": _MAX_TOKENS}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _anthropic_body(model: str, stream: bool) -> bytes:
    body: dict[str, object] = {
        "model": model,
        "max_tokens": _MAX_TOKENS,
        "system": _SYSTEM,
        "messages": [{"role": "user", "content": _PROMPT}],
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


NON_STREAM = Workload("non-stream", False, _openai_body(MODEL, False))
STREAM = Workload("stream-20", True, _openai_body(MODEL, True))
WORKLOADS = (NON_STREAM, STREAM)


def non_stream_for(model: str) -> Workload:
    """The core non-stream request asking for another model name (a route of the chaos run)."""
    return Workload(NON_STREAM.name, False, _openai_body(model, False))


@dataclass(frozen=True, slots=True)
class Route:
    caller: str
    provider: str

    @property
    def name(self) -> str:
        return f"{self.caller}->{self.provider}"

    @property
    def translated(self) -> bool:
        return self.caller != self.provider

    @property
    def reference(self) -> Route:
        """The same-dialect route a translated one is held against: same caller, same bodies."""
        return Route(self.caller, self.caller)


# Same-dialect references first, then the translated routes.
ROUTES = (
    Route("openai", "openai"),
    Route("anthropic", "anthropic"),
    Route("openai", "anthropic"),
    Route("anthropic", "openai"),
)
_ALIASES = {"openai": TO_OPENAI, "anthropic": TO_ANTHROPIC}
_BODIES = {"openai": _openai_body, "anthropic": _anthropic_body}


def route_workloads(stream: bool) -> list[Workload]:
    """One workload per route, streamed or not, in ROUTES' order."""
    name = STREAM.name if stream else NON_STREAM.name
    return [
        Workload(
            name,
            stream,
            _BODIES[r.caller](_ALIASES[r.provider], stream),
            caller=r.caller,
            route=r.name,
        )
        for r in ROUTES
    ]


def raw_request(workload: Workload, port: int, *, keep_alive: bool = True) -> bytes:
    """The whole HTTP/1.1 request as one buffer, so a client sends it with one write."""
    connection = b"keep-alive" if keep_alive else b"close"
    credentials = b"".join(f"{k}: {v}\r\n".encode() for k, v in workload.headers)
    head = (
        b"POST " + workload.path.encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Accept: application/json\r\n" + credentials + b"Connection: " + connection + b"\r\n"
        b"Content-Length: " + str(len(workload.body)).encode() + b"\r\n\r\n"
    )
    return head + workload.body
