"""The OpenAI dialect's endpoints, plus health and model listing.

A handler authenticates, reads the body under its bound, decodes only the envelope, resolves the
model and hands the raw bytes to dispatch; it never decodes the whole request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
from aiohttp import web

from adapters.openai import Envelope, RequestError, decode_envelope, decode_usage
from proxy.config import ModelRoute
from proxy.dispatch import Exchange, open_upstream
from proxy.errors import (
    BadRequest,
    BodyTooLarge,
    InvalidJSON,
    MissingField,
    ModelNotFound,
    UnsupportedMediaType,
)
from proxy.runtime import STATE, VERSION
from proxy.stream import pipe_sse

__all__ = ["CHAT", "COMPLETIONS", "EMBEDDINGS", "Endpoint", "health", "list_models", "ping",
           "proxy_endpoint", "retrieve_model"]

_ENCODE = msgspec.json.Encoder()
_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: bytes        # appended to the provider's base path
    required: str      # the body field without which the request means nothing
    streams: bool


CHAT = Endpoint(b"/chat/completions", "messages", True)
COMPLETIONS = Endpoint(b"/completions", "prompt", True)
EMBEDDINGS = Endpoint(b"/embeddings", "input", False)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _read_body(request: web.Request, limit: int) -> bytes:
    content_type = request.headers.get("Content-Type")
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(
            f"Content-Type {content_type.partition(';')[0]!r} is not supported; "
            "send the body as JSON with 'Content-Type: application/json'.")
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"The request body is {length} bytes; this gateway accepts at most "
                           f"{limit} (server.max_body).")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"The request body is over {limit} bytes (server.max_body).") from None
    if not body:
        raise InvalidJSON("The request body is empty; send a JSON object.")
    return body


def _envelope(body: bytes, required: str) -> Envelope:
    try:
        env = decode_envelope(body)
        env.require(required)
    except RequestError as err:
        if err.missing and err.param:
            raise MissingField(err.param) from None
        if err.param is None:
            raise InvalidJSON(str(err)) from None
        raise BadRequest(str(err), param=err.param) from None
    return env


async def proxy_endpoint(request: web.Request, ep: Endpoint) -> web.StreamResponse:
    rt = request.app[STATE].runtime
    caller = rt.keys.authenticate(request.headers)
    body = await _read_body(request, rt.settings.max_body)
    env = _envelope(body, ep.required)
    route = rt.router.resolve(env.model)
    if route is None:
        raise ModelNotFound(env.model)
    rid: str = request["rid"]
    ex = Exchange(rid, caller, route, env.model)
    answer = await open_upstream(rt, ex, env, body, ep.path, request.headers)
    assert ex.provider is not None  # set by open_upstream on every answer it returns
    headers = {"x-request-id": rid, "x-sluice-provider": ex.provider.name,
               "x-sluice-attempts": str(ex.attempts)}
    content_type = (answer.header(b"content-type") or b"application/json").decode()
    if env.stream and ep.streams and content_type.startswith("text/event-stream"):
        headers["Content-Type"] = content_type
        headers["Cache-Control"] = "no-cache"
        return await pipe_sse(request, ex, answer, headers)
    try:
        data = await answer.read()
    finally:
        answer.close()
    ex.usage = decode_usage(data)[0]
    headers["Content-Type"] = content_type
    return web.Response(body=data, status=answer.status, headers=headers)


def _model_object(route: ModelRoute, created: int) -> dict[str, object]:
    owner = route.targets[0].provider.name if route.targets else "sluice"
    return {"id": route.name, "object": "model", "created": created, "owned_by": owner}


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rt = state.runtime
    rt.keys.authenticate(request.headers)
    created = int(state.started_at)
    data = [_model_object(r, created) for r in rt.router.listed()]
    return web.Response(body=_ENCODE.encode({"object": "list", "data": data}),
                        headers=_JSON_HEADERS)


async def retrieve_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rt = state.runtime
    rt.keys.authenticate(request.headers)
    name = request.match_info["model"]
    route = rt.router.resolve(name)
    if route is None:
        raise ModelNotFound(name)
    obj = _model_object(route, int(state.started_at))
    obj["id"] = name
    return web.Response(body=_ENCODE.encode(obj), headers=_JSON_HEADERS)


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = {"status": "ok", "version": VERSION,
            "uptime_s": round(time.time() - state.started_at, 3)}
    return web.Response(body=_ENCODE.encode(body), headers=_JSON_HEADERS)


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK")
