"""Providers behind outbound proxies (`proxy:` in the config): the real gateway reaches a fake
OpenAI through Dante (SOCKS5) and through tinyproxy with a password, and a wrong password is a
502 naming the proxy, never the password, in the answer or the gateway's log.

The proxies make their outgoing connections from addresses of their own (tinyproxy 127.0.0.2,
Dante 127.0.0.3), and the fake notes where each request's connection came from.
"""

from __future__ import annotations

import base64
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.e2e.conftest import GATEWAY_ENV, GATEWAY_KEY, UPSTREAM_KEY
from tests.fakes.base import Recorded
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway, ThreadLoop
from tests.services.proxy_servers import DANTE_FROM, TINYPROXY_FROM, Dante, TinyProxy, serve

pytestmark = pytest.mark.timeout(60)

PROXY_USER = "gw-proxy-user"
PROXY_PASSWORD = "e2e-Pr0xy-pa55-71d0"
WRONG_PASSWORD = "e2e-Wr0ng-pa55-33aa"
PASSWORDS = (PROXY_PASSWORD, WRONG_PASSWORD)
MESSAGES = [{"role": "user", "content": "hello through the proxy"}]


@dataclass
class PeerRecorded(Recorded):
    peer: str = ""  # the address the request's connection came from


class PeerFakeOpenAI(FakeOpenAI):
    recorded_class = PeerRecorded

    def _request_fields(self, request: web.Request) -> dict[str, Any]:
        return {**super()._request_fields(request), "peer": request.remote or ""}

    def peers(self) -> list[str]:
        return [getattr(r, "peer", "") for r in self.requests]


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[TinyProxy]:
    yield from serve(lambda: TinyProxy(auth=(PROXY_USER, PROXY_PASSWORD)))


@pytest.fixture(scope="module")
def dante() -> Iterator[Dante]:
    yield from serve(Dante)


@pytest.fixture(scope="module")
def peer_upstream(fake_loop: ThreadLoop) -> Iterator[PeerFakeOpenAI]:
    fake = PeerFakeOpenAI(prefix="/v1", api_key=UPSTREAM_KEY, forbidden_values=(GATEWAY_KEY,))
    fake_loop.run(fake.start())
    yield fake
    fake_loop.run(fake.stop())


@pytest.fixture(scope="module")
def proxied_gateway(tmp_path_factory: pytest.TempPathFactory, peer_upstream: PeerFakeOpenAI,
                    tinyproxy: TinyProxy, dante: Dante) -> Iterator[Gateway]:
    up = peer_upstream.base_url
    http_proxy = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{tinyproxy.port}"
    wrong_proxy = http_proxy.replace(PROXY_PASSWORD, WRONG_PASSWORD)
    config = textwrap.dedent(f"""\
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys:
          - {{name: team-a, key: env:SLUICE_KEY_TEAM_A}}
        providers:
          via-socks: {{kind: openai, base_url: "{up}", api_key: env:UP_OPENAI_KEY,
                       proxy: "socks5://127.0.0.1:{dante.port}"}}
          via-http: {{kind: openai, base_url: "{up}", api_key: env:UP_OPENAI_KEY,
                      proxy: "{http_proxy}"}}
          wrong-login: {{kind: openai, base_url: "{up}", api_key: env:UP_OPENAI_KEY,
                         proxy: "{wrong_proxy}"}}
        models:
          through-socks: {{targets: [{{provider: via-socks, model: gpt-4o-mini}}]}}
          through-http: {{targets: [{{provider: via-http, model: gpt-4o-mini}}]}}
          wrong-proxy-login: {{targets: [{{provider: wrong-login, model: gpt-4o-mini}}]}}
        """)
    gw = Gateway(tmp_path_factory.mktemp("gw-proxy"), config, GATEWAY_ENV).start()
    yield gw
    gw.stop()
    log = gw.log()
    for password in PASSWORDS:
        token = base64.b64encode(f"{PROXY_USER}:{password}".encode()).decode()
        assert password not in log, "a proxy password reached the gateway log"
        assert token not in log, "a Proxy-Authorization value reached the gateway log"


@pytest.fixture(autouse=True)
def _clean(peer_upstream: PeerFakeOpenAI) -> Iterator[None]:
    peer_upstream.reset()
    yield
    peer_upstream.assert_clean()  # Proxy-Authorization, for one, is a forbidden header there


def test_chat_through_a_socks5_proxy(proxied_gateway: Gateway, peer_upstream: PeerFakeOpenAI,
                                     dante: Dante, sdk: Callable[..., openai.OpenAI]) -> None:
    before = dante.connects()
    client = sdk(proxied_gateway.url + "/v1")
    for _ in range(2):
        resp = client.chat.completions.create(model="through-socks", messages=MESSAGES)  # type: ignore[arg-type]
        assert resp.choices[0].message.content
    assert peer_upstream.peers() == [DANTE_FROM, DANTE_FROM]
    assert dante.connects() - before == 1  # one tunnel, kept alive for both


def test_chat_and_a_stream_through_an_http_proxy_with_a_password(
    proxied_gateway: Gateway, peer_upstream: PeerFakeOpenAI, tinyproxy: TinyProxy,
    sdk: Callable[..., openai.OpenAI]
) -> None:
    client = sdk(proxied_gateway.url + "/v1")
    resp = client.chat.completions.create(model="through-http", messages=MESSAGES)  # type: ignore[arg-type]
    assert resp.choices[0].message.content
    stream = client.chat.completions.create(model="through-http", messages=MESSAGES,  # type: ignore[arg-type]
                                            stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    assert peer_upstream.peers() == [TINYPROXY_FROM, TINYPROXY_FROM]
    assert tinyproxy.connects() >= 1
    # No 401/407 answer was logged (a timestamp's milliseconds, e.g. ":06.407", are not one).
    refused = re.compile(r"(?<![\d.:])40[17](?!\d)")
    assert not [line for line in tinyproxy.log().splitlines() if refused.search(line)]


def test_a_wrong_proxy_password_is_a_502_naming_the_proxy_not_the_password(
    proxied_gateway: Gateway, peer_upstream: PeerFakeOpenAI, tinyproxy: TinyProxy,
    sdk: Callable[..., openai.OpenAI]
) -> None:
    client = sdk(proxied_gateway.url + "/v1")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="wrong-proxy-login", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    text = info.value.response.text
    assert f"{PROXY_USER}:***@127.0.0.1:{tinyproxy.port}" in text
    assert "refused our credentials" in text
    for password in PASSWORDS:
        assert password not in text
    assert peer_upstream.requests == []
