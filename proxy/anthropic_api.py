"""The Anthropic dialect's endpoints: messages and token counting."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from proxy.calls import Call, Operation
from proxy.handlers import authenticate, envelope_of, read_body, serve_call

__all__ = ["add_routes"]


async def _messages(request: web.Request, operation: Operation) -> web.StreamResponse:
    rt, caller = authenticate(request)
    body = await read_body(request, rt.settings.max_body)
    env = envelope_of(body, "messages")
    # The SDK's beta namespace (Claude Code) adds ?beta=true; a same-dialect provider gets it.
    query = "beta=true" if request.query.get("beta") == "true" else ""
    stream = env.stream and operation == "chat"
    call = Call("anthropic", operation, body, env.model, stream, env, query=query)
    return await serve_call(request, rt, caller, call)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", partial(_messages, operation="chat"))
    app.router.add_post("/v1/messages/count_tokens", partial(_messages, operation="count_tokens"))
