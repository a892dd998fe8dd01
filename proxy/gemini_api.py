"""The Gemini dialect's endpoints: generateContent, streamGenerateContent, countTokens, models.

Served under /v1beta (the API's own default) and /v1 (recent google-genai releases default to
it). The model is in the path; the key may come as `x-goog-api-key` or `?key=`.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from proxy.calls import Call, Operation
from proxy.config import ModelRoute
from proxy.errors import ModelNotFound, NotFound
from proxy.handlers import JSON_HEADERS, authenticate, check_object, read_body, serve_call

__all__ = ["add_routes", "get_model", "list_models"]

_ENCODE = msgspec.json.Encoder()
_ACTIONS: dict[str, tuple[Operation, bool]] = {
    "generateContent": ("chat", False),
    "streamGenerateContent": ("chat", True),
    "countTokens": ("count_tokens", False),
}


async def _action(request: web.Request) -> web.StreamResponse:
    rt, caller = authenticate(request, query_key=True)
    model, action = request.match_info["model"], request.match_info["action"]
    if action not in _ACTIONS:
        raise NotFound(f"Unknown method ':{action}'. This gateway serves :generateContent, "
                       ":streamGenerateContent and :countTokens.")
    operation, stream = _ACTIONS[action]
    body = await read_body(request, rt.settings.max_body)
    check_object(body)
    version = request.path.split("/", 2)[1]
    call = Call("gemini", operation, body, model, stream, version=version,
                sse=request.query.get("alt") == "sse")
    return await serve_call(request, rt, caller, call)


def _model_object(name: str) -> dict[str, object]:
    return {"name": f"models/{name}", "displayName": name,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent",
                                           "countTokens"]}


async def list_models(request: web.Request) -> web.Response:
    rt, _ = authenticate(request, query_key=True)
    models = [_model_object(r.name) for r in rt.router.listed()]
    return web.Response(body=_ENCODE.encode({"models": models}), headers=JSON_HEADERS)


async def get_model(request: web.Request) -> web.Response:
    rt, _ = authenticate(request, query_key=True)
    name = request.match_info["model"]
    route: ModelRoute | None = rt.router.resolve(name)
    if route is None:
        raise ModelNotFound(name)
    return web.Response(body=_ENCODE.encode(_model_object(name)), headers=JSON_HEADERS)


def add_routes(app: web.Application) -> None:
    for version in ("v1beta", "v1"):
        app.router.add_post(f"/{version}/models/{{model:[^:]+}}:{{action}}", _action)
    app.router.add_get("/v1beta/models", list_models, allow_head=False)
    app.router.add_get("/v1beta/models/{model:[^:]+}", get_model, allow_head=False)
