"""The OpenAI dialect's endpoints: chat completions, completions, embeddings, models."""

from __future__ import annotations

from functools import partial

import msgspec
from aiohttp import web

from proxy.calls import Call, Operation
from proxy.config import ModelRoute
from proxy.errors import ModelNotFound
from proxy.handlers import JSON_HEADERS, authenticate, envelope_of, read_body, serve_call
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


async def list_models(request: web.Request) -> web.Response:
    rt, _ = authenticate(request)
    created = int(request.app[STATE].started_at)
    data = [model_object(r, created) for r in rt.router.listed()]
    return web.Response(body=_ENCODE.encode({"object": "list", "data": data}),
                        headers=JSON_HEADERS)


async def retrieve_model(request: web.Request) -> web.Response:
    rt, _ = authenticate(request)
    name = request.match_info["model"]
    route = rt.router.resolve(name)
    if route is None:
        raise ModelNotFound(name)
    obj = model_object(route, int(request.app[STATE].started_at))
    obj["id"] = name
    return web.Response(body=_ENCODE.encode(obj), headers=JSON_HEADERS)


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", partial(_proxy, operation="chat"))
        app.router.add_post(f"{prefix}/completions", partial(_proxy, operation="completions"))
        app.router.add_post(f"{prefix}/embeddings", partial(_proxy, operation="embeddings"))
        app.router.add_get(f"{prefix}/models", list_models, allow_head=False)
        app.router.add_get(prefix + "/models/{model:[^:]+}", retrieve_model, allow_head=False)
