"""The naive baseline: an aiohttp pass-through with no features, what one writes in ten minutes.

aiohttp server, ONE shared `aiohttp.ClientSession`; the handler reads the caller's bytes, POSTs
them upstream with their content type, and returns the body bytes, or for an event stream,
writes each `iter_any()` piece as it arrives. No auth, routing, usage or metrics. Runs under uvloop,
as the gateway does, so the comparison is of the code and not of the event loop.

Run: `python -m bench.baseline_proxy --port P --upstream http://127.0.0.1:U`.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import uvloop
from aiohttp import web

__all__ = ["main"]

_SESSION = web.AppKey("session", aiohttp.ClientSession)
_UPSTREAM = web.AppKey("upstream", str)


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[_SESSION]
    url = request.app[_UPSTREAM] + request.path
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    async with session.post(url, data=body, headers=headers) as upstream:
        if upstream.content_type != "text/event-stream":
            data = await upstream.read()
            return web.Response(
                body=data, status=upstream.status, content_type=upstream.content_type
            )
        response = web.StreamResponse(status=upstream.status)
        response.content_type = upstream.content_type
        await response.prepare(request)
        async for piece in upstream.content.iter_any():
            await response.write(piece)
        await response.write_eof()
        return response


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _serve(host: str, port: int, upstream: str) -> None:
    # limit=0: aiohttp's default cap of 100 pooled connections would queue the 500-streams check,
    # and the baseline must hold as many streams open as the gateway is asked to.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    app = web.Application()
    app[_SESSION] = session
    app[_UPSTREAM] = upstream.rstrip("/")
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/health", _health)
    # No access log: the gateway does not log per request on the hot path either.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        # backlog: aiohttp's default of 128 overflows when 500 streams open at once, and the
        # streams check is about memory, not about SYN resends.
        await web.TCPSite(runner, host, port, backlog=1024).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9101")
    args = parser.parse_args(argv)
    uvloop.run(_serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
