"""A raw asyncio TCP (or TLS) server for the client's tests: each connection runs a test's
handler coroutine with the stream reader and writer, so a test writes exactly the bytes (and
the breakage) it needs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Generic, TypeVar

S = TypeVar("S", bound="RawServer[Any]")
Handler = Callable[[S, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer(Generic[S]):
    """Listens on 127.0.0.1 (a free port) while used as `async with`; counts connections,
    sets `eof` when a handler sees the client go, and cancels its handlers on exit."""

    def __init__(self, handler: Handler[S], ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.eof = asyncio.Event()  # set when a handler saw the client close or reset
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self: S) -> S:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                  ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(self, reader, writer)  # type: ignore[arg-type]
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            self.eof.set()  # the client went away
        except asyncio.CancelledError:
            pass  # the test is over
        finally:
            self._tasks.discard(task)
            writer.close()
            with suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
