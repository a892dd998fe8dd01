"""Our own lean HTTP/1.1 client for the providers: one keep-alive pool per provider origin.

Why not aiohttp's ClientSession: it cost ~40-45% of a naive proxy's CPU per request; this client
(an `asyncio.Protocol` fed to httptools' llhttp parser, one `transport.write` per request) took a
proxied request from ~420 µs to ~205 µs of CPU. Client alone, 5000 sequential keep-alive POSTs to
a raw server in another process, uvloop: ~28 µs CPU per request against ~136 µs for
aiohttp.ClientSession in the same run. CPU per request is the product's key figure, so the hot
path allocates little, creates no tasks, closures or timer handles, and logs nothing.

Shape (httpcore's: decide state first, do the IO after):
- `connection._Conn` is the protocol and the parser's callback object. It never awaits. The
  one task using it waits on `_waiter`, a future that only ever completes with None; what
  happened (headers, body, error) is read back from the connection's fields, so no future holds
  an exception that nobody retrieves.
- `pool.UpstreamPool` keeps idle connections (LIFO), counts slots against `max_connections`, queues
  waiters FIFO, and opens connections in `_open()`: directly, or through an outbound proxy.
- `proxies.UpstreamProxies` opens a pool's connections through its proxies (HTTP(S) CONNECT,
  SOCKS5(h)) in rotation, resting those that fail; a tunnel is opened once per connection, so the
  requests cost the same as direct ones, and a pool without proxies never enters this code.
- `response.UpstreamResponse` reads the body out of its connection's buffer, inflating gzip/deflate.

Error messages name the phase and the origin (host:port) only: never header values, nor the
request target (Gemini accepts the API key as `?key=`); a proxy is named by its URL with the
password masked.
"""

from __future__ import annotations

from proxy.upstream.limits import PoolLimits, Timeouts
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.response import UpstreamResponse

__all__ = ["PoolLimits", "Timeouts", "UpstreamPool", "UpstreamResponse"]
