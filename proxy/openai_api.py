"""The OpenAI dialect's endpoints: chat completions, completions, embeddings, models."""

from __future__ import annotations

import time
from functools import partial

import msgspec
from aiohttp import web

from proxy import gemini_api
from proxy.calls import Call, Operation
from proxy.config import ModelRoute
from proxy.errors import ModelNotFound
from proxy.handlers import (
    JSON_HEADERS,
    authenticate,
    dialect_of,
    envelope_of,
    read_body,
    serve_call,
)
from proxy.runtime import STATE

__all__ = ["add_routes"]

_ENCODE = msgspec.json.Encoder()
# The body field without which each operation means nothing.
_REQUIRED: dict[Operation, str] = {"chat": "messages", "completions": "prompt",
                                   "embeddings": "input"}


async def _proxy(request: web.Request, operation: Operation) -> web.StreamResponse:
    rt, caller = authenticate(request)
    body = await read_body(request, rt.settings.max_body)
    env = envelope_of(body, _REQUIRED[operation])
    stream = env.stream and operation != "embeddings"
    call = Call("openai", operation, body, env.model, stream, env)
    return await serve_call(request, rt, caller, call)


def model_object(route: ModelRoute, created: int) -> dict[str, object]:
    owner = route.targets[0].provider.name if route.targets else "sluice"
    return {"id": route.name, "object": "model", "created": created, "owned_by": owner}


def _anthropic_model(name: str, created: int) -> dict[str, object]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    return {"type": "model", "id": name, "display_name": name, "created_at": stamp}


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models is shared by three SDKs; each gets the listing in its own shape."""
    dialect = dialect_of(request)
    if dialect == "gemini":
        return await gemini_api.list_models(request)
    rt, _ = authenticate(request)
    created = int(request.app[STATE].started_at)
    routes = rt.router.listed()
    body: dict[str, object]
    if dialect == "anthropic":
        data = [_anthropic_model(r.name, created) for r in routes]
        body = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
    else:
        body = {"object": "list", "data": [model_object(r, created) for r in routes]}
    return web.Response(body=_ENCODE.encode(body), headers=JSON_HEADERS)


async def retrieve_model(request: web.Request) -> web.Response:
    dialect = dialect_of(request)
    if dialect == "gemini":
        return await gemini_api.get_model(request)
    rt, _ = authenticate(request)
    name = request.match_info["model"]
    route = rt.router.resolve(name)
    if route is None:
        raise ModelNotFound(name)
    created = int(request.app[STATE].started_at)
    if dialect == "anthropic":
        obj = _anthropic_model(name, created)
    else:
        obj = model_object(route, created)
        obj["id"] = name
    return web.Response(body=_ENCODE.encode(obj), headers=JSON_HEADERS)


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", partial(_proxy, operation="chat"))
        app.router.add_post(f"{prefix}/completions", partial(_proxy, operation="completions"))
        app.router.add_post(f"{prefix}/embeddings", partial(_proxy, operation="embeddings"))
        app.router.add_get(f"{prefix}/models", list_models, allow_head=False)
        app.router.add_get(prefix + "/models/{model:[^:]+}", retrieve_model, allow_head=False)
