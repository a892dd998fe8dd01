"""proxy/upstream/proxies.py: the upstream pool through real proxies on 127.0.0.1.

tinyproxy (HTTP CONNECT, with and without BasicAuth) makes its outgoing connections from
127.0.0.2 and Dante (SOCKS5) from 127.0.0.3, and the upstreams here answer every request with
the address the connection came from: a body of b"127.0.0.2" is proof of the path. Every
scenario runs on the default loop and again on uvloop (`test_on_uvloop`).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import ssl
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
import uvloop

from proxy.errors import UpstreamConnectError, UpstreamConnectTimeout
from proxy.log import redact_url
from proxy.upstream import Timeouts, UpstreamPool
from proxy.upstream.proxies import ProxyRotation, _reply_failure, parse_proxy_url
from tests.harness import closed_port
from tests.net.raw_server import RawServer
from tests.services.proxy_servers import (
    DANTE_FROM,
    PROXY_PASSWORD,
    PROXY_USER,
    TINYPROXY_FROM,
    Dante,
    TinyProxy,
)

pytestmark = pytest.mark.timeout(30)

AUTH = [(b"Authorization", b"Bearer sk-upstream-secret")]
WRONG_PASSWORD = "WrongPass-77x"
VIA_TINYPROXY = TINYPROXY_FROM.encode()
VIA_DANTE = DANTE_FROM.encode()

Handler = Callable[["Listener", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listener(RawServer["Listener"]):
    """A loopback server; `handler` runs once per accepted connection."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        super().__init__(handler, ssl_context)
        self.host = host  # the name in `url` (the certificate holds 127.0.0.1 and localhost)
        self.heads: list[bytes] = []  # request heads an upstream received
        self.received = bytearray()  # what a relay got from its clients

    def url_for(self, scheme: str) -> str:
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.url_for("https" if self.ssl_context else "http")


def answer_peer(close: bool = False) -> Handler:
    """An upstream answering each request with the address the connection came from."""

    async def handler(srv: Listener, reader: asyncio.StreamReader,
                      w: asyncio.StreamWriter) -> None:
        body = w.get_extra_info("peername")[0].encode()
        while True:
            srv.heads.append(await reader.readuntil(b"\r\n\r\n"))
            extra = b"Connection: close\r\n" if close else b""
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))
            await w.drain()
            if close:
                return

    return handler


def relay_to(port: int) -> Handler:
    """A TCP relay to 127.0.0.1:`port` that keeps what its clients sent (after its own TLS)."""

    async def handler(srv: Listener, reader: asyncio.StreamReader,
                      w: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
            try:
                while data := await src.read(65536):
                    if keep:
                        srv.received += data
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, w, False),
                                 return_exceptions=True)
        finally:
            up_writer.close()
            with suppress(Exception):
                await asyncio.wait_for(up_writer.wait_closed(), 1)

    return handler


async def hang_up(srv: Listener, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A broken proxy: accepts, then closes without a word."""


async def stay_silent(srv: Listener, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A stuck proxy: accepts, then says nothing until the client leaves."""
    await reader.read()


@dataclass(frozen=True)
class TLS:
    server: ssl.SSLContext  # a certificate for 127.0.0.1 and localhost, from a private CA
    client: ssl.SSLContext  # trusts that CA
    untrusted: ssl.SSLContext  # trusts another CA only


@pytest.fixture(scope="module")
def tls() -> TLS:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    untrusted = ssl.create_default_context()
    trustme.CA().configure_trust(untrusted)
    return TLS(server, client, untrusted)


@pytest.fixture
def proxy_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The gateway's `sluice` logger captured, whether or not an earlier test configured it."""
    logger = logging.getLogger("sluice")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # caplog's handler is on the root logger too: no record twice
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = propagate


@asynccontextmanager
async def pool_for(url: str, proxies: list[str], **kwargs: Any) -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(url, proxies=proxies, **kwargs)
    try:
        yield pool
    finally:
        await pool.aclose()


async def get(pool: UpstreamPool) -> bytes:
    async with await pool.request(b"GET", b"/", AUTH) as resp:
        assert resp.status == 200
        return await resp.read()


def resting(pool: UpstreamPool) -> int:
    assert pool._proxies is not None
    return pool._proxies._rotation.resting(asyncio.get_running_loop().time())


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """For the proxies' own logs, which they write after the tunnel is up."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the proxy never logged the tunnel"
        await asyncio.sleep(0.02)


def assert_no_password(err: BaseException, *passwords: str) -> None:
    """Not in the message, the repr, the formatted traceback, nor anything chained."""
    text = str(err) + repr(err) + "".join(traceback.format_exception(err))
    for password in passwords:
        assert password not in text
        token = base64.b64encode(f"{PROXY_USER}:{password}".encode()).decode()
        assert token not in text
    assert err.__cause__ is None
    assert err.__context__ is None


# --- HTTP CONNECT: tinyproxy ----------------------------------------------------------------------


async def test_http_proxy_tunnels_to_http_and_https_upstreams(tinyproxy: TinyProxy,
                                                              tls: TLS) -> None:
    for server_ctx, client_ctx in ((None, None), (tls.server, tls.client)):
        before = tinyproxy.connects()
        async with (
            Listener(answer_peer(), server_ctx) as origin,
            pool_for(origin.url, [tinyproxy.url], ssl_context=client_ctx) as pool,
        ):
            assert await get(pool) == VIA_TINYPROXY
            assert await get(pool) == VIA_TINYPROXY
            assert repr(pool).startswith(f"<UpstreamPool {origin.url} proxies=1 idle=1 ")
        assert origin.connections == 1  # one tunnel, kept alive for both requests
        await wait_until(lambda: tinyproxy.connects() == before + 1)  # noqa: B023
        # The request inside the tunnel is the direct one: origin-form, its own Host.
        assert all(h.startswith(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:") for h in origin.heads)


async def test_http_proxy_with_basic_auth(tinyproxy_auth: TinyProxy, tls: TLS) -> None:
    for server_ctx, client_ctx in ((None, None), (tls.server, tls.client)):
        async with (
            Listener(answer_peer(), server_ctx) as origin,
            pool_for(origin.url, [tinyproxy_auth.url], ssl_context=client_ctx) as pool,
        ):
            assert await get(pool) == VIA_TINYPROXY
        # Proxy-Authorization went to the proxy only, never through the tunnel.
        assert origin.heads
        assert not any(b"proxy-authorization" in h.lower() for h in origin.heads)


async def test_https_proxy_tls_to_the_proxy_then_the_upstream_inside(tinyproxy: TinyProxy,
                                                                     tls: TLS) -> None:
    async with (
        # A TLS front for tinyproxy: the https:// proxy, named by the certificate's localhost.
        Listener(relay_to(tinyproxy.port), tls.server, host="localhost") as front,
        Listener(answer_peer(), tls.server) as tls_origin,
        Listener(answer_peer()) as plain_origin,
    ):
        proxy = front.url_for("https")
        for origin in (tls_origin, plain_origin):
            front.received.clear()
            async with pool_for(origin.url, [proxy], ssl_context=tls.client,
                                proxy_ssl_context=tls.client) as pool:
                assert await get(pool) == VIA_TINYPROXY
                assert await get(pool) == VIA_TINYPROXY
            assert front.received.startswith(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n" % origin.port)
            # TLS inside TLS: the front saw the CONNECT in clear, but not the request inside.
            inside = front.received.split(b"\r\n\r\n", 1)[1]
            assert (b"GET / HTTP/1.1" in inside) == (origin is plain_origin)
        assert front.connections == 2
        # The proxy's certificate is checked too, and a bad one is the proxy's fault.
        async with pool_for(tls_origin.url, [proxy], ssl_context=tls.client,
                            proxy_ssl_context=tls.untrusted) as pool:
            with pytest.raises(UpstreamConnectError, match="TLS handshake with the proxy failed"):
                await get(pool)
            assert resting(pool) == 1


# --- SOCKS5: Dante --------------------------------------------------------------------------------


async def test_socks5_resolves_the_name_here_and_socks5h_at_the_proxy(dante: Dante,
                                                                     tls: TLS) -> None:
    async with (
        Listener(relay_to(dante.port)) as tap,
        Listener(answer_peer(), tls.server, host="localhost") as origin,
    ):
        # RFC 1928 §4, the CONNECT request: VER CMD RSV ATYP DST.ADDR DST.PORT.
        port = origin.port.to_bytes(2, "big")
        for scheme, address in (("socks5", b"\x01\x7f\x00\x00\x01"),
                                ("socks5h", b"\x03\x09localhost")):
            tap.received.clear()
            before = dante.connects()
            async with pool_for(origin.url, [tap.url_for(scheme)], ssl_context=tls.client) as pool:
                assert await get(pool) == VIA_DANTE
                assert await get(pool) == VIA_DANTE
            assert b"\x05\x01\x00" + address + port in tap.received
            await wait_until(lambda: dante.connects() == before + 1)  # noqa: B023
        assert origin.connections == 2
        assert all(h.startswith(b"GET / HTTP/1.1\r\nHost: localhost:") for h in origin.heads)


async def test_socks5_to_a_plain_http_upstream(dante: Dante) -> None:
    async with (
        Listener(answer_peer()) as origin,
        pool_for(origin.url, [dante.url_h]) as pool,
    ):
        assert await get(pool) == VIA_DANTE
        assert await get(pool) == VIA_DANTE
    assert origin.connections == 1


# --- rotation and resting ---------------------------------------------------------------------------


async def test_proxies_take_turns_per_new_connection(tinyproxy: TinyProxy, dante: Dante) -> None:
    async with (
        Listener(answer_peer(close=True)) as origin,
        pool_for(origin.url, [tinyproxy.url, dante.url]) as pool,
    ):
        assert [await get(pool) for _ in range(4)] == [VIA_TINYPROXY, VIA_DANTE] * 2


async def test_a_dead_proxy_is_skipped_and_rested(
    tinyproxy: TinyProxy, proxy_log: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    dead = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"
    async with (
        Listener(answer_peer(close=True)) as origin,
        pool_for(origin.url, [dead, tinyproxy.url]) as pool,
    ):
        # Every request needs a new connection; the dead proxy is tried for the first only.
        for _ in range(4):
            assert await get(pool) == VIA_TINYPROXY
        assert resting(pool) == 1
    assert origin.connections == 4
    [record] = [r for r in proxy_log.records if r.getMessage().startswith("outbound proxy")]
    assert record.levelno == logging.WARNING
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["proxy"] == redact_url(dead) == f"http://{PROXY_USER}:***@127.0.0.1:{port}"
    assert fields["seconds"] == 30.0
    assert "Connection refused" in fields["reason"]
    assert PROXY_PASSWORD not in str(fields) + proxy_log.text


async def test_connects_that_meet_one_outage_together_rest_the_proxy_once(
    tinyproxy: TinyProxy, proxy_log: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    async with (
        Listener(answer_peer()) as origin,
        pool_for(origin.url, [dead, tinyproxy.url]) as pool,
    ):
        # Five new connections at once, each starting with the dead proxy as round robin
        # allows: however many of them it fails, that is one failure, 30 s of rest.
        bodies = await asyncio.gather(*(get(pool) for _ in range(5)))
        assert bodies == [VIA_TINYPROXY] * 5
        assert resting(pool) == 1
    [record] = [r for r in proxy_log.records if r.getMessage().startswith("outbound proxy")]
    assert record.fields["seconds"] == 30.0  # type: ignore[attr-defined]


async def test_when_every_proxy_rests_the_least_recently_failed_is_tried() -> None:
    async with (
        Listener(hang_up) as first,
        Listener(hang_up) as second,
        Listener(answer_peer()) as origin,
        pool_for(origin.url, [first.url, second.url]) as pool,
    ):
        with pytest.raises(UpstreamConnectError) as info:
            await get(pool)
        assert type(info.value) is UpstreamConnectError
        assert info.value.message == (
            f"could not connect to upstream 127.0.0.1:{origin.port} through any of 2 proxies: "
            f"{first.url}: the proxy closed the connection before answering CONNECT; "
            f"{second.url}: the proxy closed the connection before answering CONNECT")
        assert resting(pool) == 2
        with pytest.raises(UpstreamConnectError, match=f"through proxy {first.url}:"):
            await get(pool)
        assert (first.connections, second.connections) == (2, 1)
    assert origin.connections == 0


async def test_a_silent_proxy_times_out_and_rests() -> None:
    async with Listener(stay_silent) as silent, Listener(answer_peer()) as origin:
        for scheme in ("http", "socks5"):
            async with pool_for(origin.url, [silent.url_for(scheme)],
                                timeouts=Timeouts(connect=0.3)) as pool:
                with pytest.raises(UpstreamConnectTimeout, match=r"no tunnel within 0\.3 s"):
                    await get(pool)
                assert resting(pool) == 1
    assert origin.connections == 0


async def test_an_upstream_the_proxy_cannot_reach_is_not_the_proxys_fault(
    tinyproxy: TinyProxy, dante: Dante
) -> None:
    dead_upstream = f"http://127.0.0.1:{closed_port()}"
    for proxies, why in (
        ([tinyproxy.url, dante.url], "the proxy could not reach the upstream (500 Unable to connect)"),
        ([dante.url, tinyproxy.url],
         "the proxy could not reach the upstream (Connection refused by destination host)"),
    ):
        async with pool_for(dead_upstream, proxies) as pool:
            with pytest.raises(UpstreamConnectError) as info:
                await get(pool)
            # One proxy tried: the next would fail the same way. None rests.
            assert info.value.message == (
                f"could not connect to upstream {dead_upstream[7:]} through proxy {proxies[0]}:"
                f" {why}")
            assert resting(pool) == 0


async def test_an_upstream_certificate_not_trusted_fails_inside_the_tunnel(
    tinyproxy: TinyProxy, dante: Dante, tls: TLS
) -> None:
    async with Listener(answer_peer(), tls.server) as origin:
        for proxy in (tinyproxy.url, dante.url):
            async with pool_for(origin.url, [proxy], ssl_context=tls.untrusted) as pool:
                with pytest.raises(UpstreamConnectError,
                                   match="TLS handshake with the upstream failed: unable to get local issuer"):
                    await get(pool)
                assert resting(pool) == 0


async def test_each_pool_keeps_its_own_tunnels(tinyproxy: TinyProxy, dante: Dante) -> None:
    async with (
        Listener(answer_peer()) as origin,
        pool_for(origin.url, [tinyproxy.url]) as via_http,
        pool_for(origin.url, [dante.url]) as via_socks,
        pool_for(origin.url, []) as direct,
    ):
        for _ in range(3):
            assert await get(via_http) == VIA_TINYPROXY
            assert await get(via_socks) == VIA_DANTE
            assert await get(direct) == b"127.0.0.1"
    assert origin.connections == 3


# --- credentials never show -----------------------------------------------------------------------


async def test_a_wrong_proxy_password_names_the_proxy_never_the_password(
    tinyproxy_auth: TinyProxy, dante_login: Dante, proxy_log: pytest.LogCaptureFixture
) -> None:
    cases = [
        (tinyproxy_auth.url.replace(PROXY_PASSWORD, WRONG_PASSWORD),
         "the proxy refused our credentials (401 Unauthorized)"),
        (f"socks5://{PROXY_USER}:{WRONG_PASSWORD}@127.0.0.1:{dante_login.port}",
         "SOCKS5 handshake failed: Username and password authentication failure"),
    ]
    async with Listener(answer_peer()) as origin:
        for url, why in cases:
            async with pool_for(origin.url, [url]) as pool:
                with pytest.raises(UpstreamConnectError) as info:
                    await get(pool)
                assert WRONG_PASSWORD not in repr(pool) + repr(pool._proxies)
            label = redact_url(url)
            assert f"{PROXY_USER}:***@" in label
            assert info.value.message == (
                f"could not connect to upstream 127.0.0.1:{origin.port} through proxy {label}:"
                f" {why}")
            assert_no_password(info.value, WRONG_PASSWORD)
        # Without credentials tinyproxy answers 407.
        async with pool_for(origin.url, [tinyproxy_auth.bare_url]) as pool:
            with pytest.raises(UpstreamConnectError,
                               match=r"requires credentials \(407 Proxy Authentication Required\)"):
                await get(pool)
    assert origin.connections == 0
    assert len(proxy_log.records) == 3
    assert WRONG_PASSWORD not in proxy_log.text
    assert all(WRONG_PASSWORD not in str(r.__dict__) for r in proxy_log.records)


def test_proxy_urls_parse_and_never_show_the_password() -> None:
    proxy = parse_proxy_url("http://us%40er:p%3Ass%40w0rd@proxy.corp:3128")
    assert (proxy.scheme, proxy.host, proxy.port) == ("http", "proxy.corp", 3128)
    assert (proxy.username, proxy.password) == ("us@er", "p:ss@w0rd")
    assert proxy.auth_header == (b"Proxy-Authorization: Basic "
                                 + base64.b64encode(b"us@er:p:ss@w0rd") + b"\r\n")
    assert repr(proxy) == "<ProxyURL http://us%40er:***@proxy.corp:3128>"
    assert [parse_proxy_url(f"{s}://h").port for s in ("http", "https", "socks5", "socks5h")] == [
        80, 443, 1080, 1080]
    assert parse_proxy_url("SOCKS5H://[::1]:1081").host == "::1"
    assert parse_proxy_url("http://h:1").auth_header == b""
    for bad in ("ftp://u:hunter22@h:21", "http://u:hunter22@h:99999", "http://u:hunter22@h:x",
                "http://u:hunter22@", "u:hunter22@h:80", "http://u:hunter22@[::1:80",
                "http://u:hunter/22@h:80"):
        with pytest.raises(ValueError, match="is not a proxy URL") as info:
            parse_proxy_url(bad)
        assert "hunter22" not in str(info.value)
        assert info.value.__context__ is None
    with pytest.raises(ValueError, match="ASCII") as info:
        parse_proxy_url("socks5://u:p\u00e4ss@h:1080")
    assert "p\u00e4ss" not in str(info.value)


def test_a_direct_pool_has_no_proxy_machinery() -> None:
    for pool in (UpstreamPool("https://api.openai.com/v1"),
                 UpstreamPool("https://api.openai.com/v1", proxies=())):
        assert pool._proxies is None
        assert repr(pool) == "<UpstreamPool https://api.openai.com idle=0 active=0 max=512>"
    with pytest.raises(ValueError, match="not a proxy URL"):
        UpstreamPool("https://api.openai.com/v1", proxies=["gopher://h:70"])


# --- the pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "still_open", "sent_auth", "why", "proxy_fault"), [
    (b"HTTP/1.1 200 Connection established\r\n\r\n", True, False, None, None),
    (b"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n", True, True, None, None),
    (b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1", True, False,
     "the proxy sent bytes after its CONNECT reply (200 OK)", True),
    (b"HTTP/1.1 200 OK\r\n\r\n", False, False,
     "the proxy closed the tunnel right after its CONNECT reply (200 OK)", True),
    (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n<html>", False, False,
     "the proxy requires credentials (407 Proxy Authentication Required)", True),
    (b"HTTP/1.0 407 Nope\r\n\r\n", True, True, "the proxy refused our credentials (407 Nope)",
     True),
    (b"HTTP/1.1 403 Forbidden\x07\r\n\r\n", True, False,
     "the proxy refused the tunnel (403 Forbidden)", True),
    (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", False, False,
     "the proxy could not reach the upstream (502 Bad Gateway)", False),
    (b"HTTP/1.1 200 OK\r\n", False, False,
     "the proxy closed the connection before answering CONNECT", True),
    (b"", False, False, "the proxy closed the connection before answering CONNECT", True),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", True, False,
     "the proxy did not answer CONNECT in HTTP/1.x", True),
    (b"HTTP/2 200\r\n\r\n", True, False, "the proxy did not answer CONNECT in HTTP/1.x", True),
    (b"HTTP/1.1 " + b"x" * 20000, True, False,
     "the proxy's CONNECT reply head is over 16384 bytes", True),
])
def test_connect_replies(reply: bytes, still_open: bool, sent_auth: bool, why: str | None,
                         proxy_fault: bool | None) -> None:
    failure = _reply_failure(reply, still_open, sent_auth)
    if why is None:
        assert failure is None
    else:
        assert failure is not None
        assert (failure.why, failure.proxy_fault) == (why, proxy_fault)


def test_rotation_takes_turns_rests_failures_and_falls_back_to_the_oldest_failure() -> None:
    rotation = ProxyRotation(3)
    assert [rotation.order(0.0) for _ in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    # 30 s, doubling per failure in a row, up to 5 minutes.
    assert [rotation.failed(1, 100.0 + i, rotation.seen(1)) for i in range(6)] == [
        30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    # An attempt begun before the last failure met the same outage: it counts once.
    assert rotation.failed(1, 105.5, seen=5) is None
    assert rotation.resting(106.0) == 1
    assert rotation.order(106.0) == [2, 0]  # 1 rests
    assert rotation.order(404.0) == [2, 0]
    assert rotation.order(405.0) == [0, 1, 2]  # rested enough
    rotation.succeeded(1)
    assert rotation.failed(1, 500.0, rotation.seen(1)) == 30.0  # a success forgets the rests
    rotation.failed(0, 510.0, rotation.seen(0))
    rotation.failed(2, 505.0, rotation.seen(2))
    assert rotation.resting(511.0) == 3
    assert rotation.order(511.0) == [1]  # all rest: the one that failed longest ago
    with pytest.raises(ValueError, match="at least one"):
        ProxyRotation(0)


# --- the same scenarios on uvloop -----------------------------------------------------------------

SCENARIOS = [
    value
    for name, value in list(globals().items())
    if name.startswith("test_") and inspect.iscoroutinefunction(value)
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.removeprefix("test_"))
def test_on_uvloop(scenario: Callable[..., Awaitable[None]], request: pytest.FixtureRequest) -> None:
    kwargs = {name: request.getfixturevalue(name)
              for name in inspect.signature(scenario).parameters}

    async def run() -> None:
        await scenario(**kwargs)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
