"""tests/net fixtures: outbound proxies (tinyproxy, Dante) of the session's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.proxy_servers import PROXY_PASSWORD, PROXY_USER, Dante, TinyProxy, serve


@pytest.fixture(scope="session")
def tinyproxy() -> Iterator[TinyProxy]:
    """tinyproxy without authentication; its tunnels leave from 127.0.0.2."""
    yield from serve(TinyProxy)


@pytest.fixture(scope="session")
def tinyproxy_auth() -> Iterator[TinyProxy]:
    """tinyproxy with BasicAuth PROXY_USER:PROXY_PASSWORD (`.url` carries them)."""
    yield from serve(lambda: TinyProxy(auth=(PROXY_USER, PROXY_PASSWORD)))


@pytest.fixture(scope="session")
def dante() -> Iterator[Dante]:
    """danted without authentication; its tunnels leave from 127.0.0.3."""
    yield from serve(Dante)


@pytest.fixture(scope="session")
def dante_login() -> Iterator[Dante]:
    """danted that wants a user name and password, and accepts none of ours."""
    yield from serve(lambda: Dante(require_login=True))
