"""e2e fixtures: fake providers on a background loop, and real gateways in subprocesses."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import openai
import pytest

from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.gemini_provider import FakeGemini
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway, ThreadLoop, closed_port

GATEWAY_KEY = "sk-sluice-team-a-0123456789"
UPSTREAM_KEY = "sk-up-openai-secret-abc"
ROUTER_KEYS = ("sk-or-one-secret", "sk-or-two-secret")
ADMIN_KEY = "sk-admin-secret-xyz"
ANTHROPIC_KEY = "sk-ant-up-secret-777"
GEMINI_KEY = "gemini-up-secret-888"
SECRETS = (GATEWAY_KEY, UPSTREAM_KEY, *ROUTER_KEYS, ADMIN_KEY, ANTHROPIC_KEY, GEMINI_KEY)
FAKES = ("upstream", "router_upstream", "anthropic_upstream", "gemini_upstream")


@pytest.fixture(scope="session")
def fake_loop() -> Iterator[ThreadLoop]:
    loop = ThreadLoop()
    yield loop
    loop.close()


F = TypeVar("F", FakeOpenAI, FakeAnthropic, FakeGemini)


def _serving(loop: ThreadLoop, fake: F) -> Iterator[F]:
    """A fake served on the background loop for the session; every fake refuses requests
    that carry the gateway's own key."""
    loop.run(fake.start())
    yield fake
    loop.run(fake.stop())


@pytest.fixture(scope="session")
def upstream(fake_loop: ThreadLoop) -> Iterator[FakeOpenAI]:
    yield from _serving(fake_loop, FakeOpenAI(prefix="/v1", api_key=UPSTREAM_KEY,
                                              forbidden_values=(GATEWAY_KEY,)))


@pytest.fixture(scope="session")
def router_upstream(fake_loop: ThreadLoop) -> Iterator[FakeOpenAI]:
    yield from _serving(fake_loop, FakeOpenAI(prefix="/api/v1", api_key=None,
                                              forbidden_values=(GATEWAY_KEY,)))


@pytest.fixture(scope="session")
def anthropic_upstream(fake_loop: ThreadLoop) -> Iterator[FakeAnthropic]:
    yield from _serving(fake_loop, FakeAnthropic(api_key=ANTHROPIC_KEY,
                                                 forbidden_values=(GATEWAY_KEY,)))


@pytest.fixture(scope="session")
def gemini_upstream(fake_loop: ThreadLoop) -> Iterator[FakeGemini]:
    yield from _serving(fake_loop, FakeGemini(api_key=GEMINI_KEY,
                                              forbidden_values=(GATEWAY_KEY,)))


@pytest.fixture(autouse=True)
def _clean_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with default behaviour and ends with no malformed forwarded request."""
    fakes = [request.getfixturevalue(name) for name in FAKES if name in request.fixturenames]
    for fake in fakes:
        fake.reset()
    yield
    for name in ("gateway", "dialect_gateway"):
        if name in request.fixturenames:
            _recover_all(request.getfixturevalue(name))
    for fake in fakes:
        fake.assert_clean()


def _recover_all(gw: Gateway) -> None:
    """Cooldowns and breakers a test caused must not leak into the next test."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    status = httpx.get(f"{gw.url}/v0/operations/providers/status", headers=admin, timeout=10)
    for name in status.json()["providers"]:
        httpx.post(f"{gw.url}/v0/operations/providers/{name}/recover", headers=admin, timeout=10)


def gateway_config(upstream: FakeOpenAI, router: FakeOpenAI) -> str:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    return textwrap.dedent(f"""\
        server: {{host: 127.0.0.1, port: 8317, max_body: 1MiB}}
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys:
          - {{name: team-a, key: env:SLUICE_KEY_TEAM_A}}
        providers:
          up-openai: {{kind: openai, base_url: "{upstream.base_url}", api_key: env:UP_OPENAI_KEY}}
          up-router: {{kind: openrouter, base_url: "{router.base_url}", api_keys: [env:K1, env:K2]}}
          dead: {{kind: openai-compatible, base_url: "{dead}"}}
          slow: {{kind: openai, base_url: "{upstream.base_url}", api_key: env:UP_OPENAI_KEY,
                  timeouts: {{read: 500ms}}}}
        models:
          gpt-4o-mini:
            targets:
              - {{provider: up-openai, model: gpt-4o-mini, weight: 3}}
              - {{provider: up-router, model: openai/gpt-4o-mini}}
          direct:
            targets: [{{provider: up-openai, model: gpt-4o-mini}}]
          routed:
            targets: [{{provider: up-router, model: openai/gpt-4o-mini}}]
          failover:
            targets:
              - {{provider: dead, model: gpt-4o-mini, weight: 1}}
              - {{provider: up-openai, model: gpt-4o-mini, weight: 0}}
          nowhere:
            targets: [{{provider: dead, model: gpt-4o-mini}}]
          sluggish:
            targets: [{{provider: slow, model: gpt-4o-mini}}]
          "emb-*":
            targets: [{{provider: up-openai, model: text-embedding-3-small}}]
        """)


GATEWAY_ENV = {"SLUICE_ADMIN_KEY": ADMIN_KEY, "SLUICE_KEY_TEAM_A": GATEWAY_KEY,
               "UP_OPENAI_KEY": UPSTREAM_KEY, "K1": ROUTER_KEYS[0], "K2": ROUTER_KEYS[1],
               "UP_ANTHROPIC_KEY": ANTHROPIC_KEY, "UP_GEMINI_KEY": GEMINI_KEY}


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI,
            router_upstream: FakeOpenAI) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("gw"), gateway_config(upstream, router_upstream),
                 GATEWAY_ENV).start()
    yield gw
    gw.stop()
    log = gw.log()
    leaked = [s for s in SECRETS if s in log]
    assert not leaked, "a secret reached the gateway log"


def dialects_config(openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic,
                    gemini_fake: FakeGemini) -> str:
    """One model per provider dialect, each reachable from every caller dialect."""
    return textwrap.dedent(f"""\
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys:
          - {{name: team-a, key: env:SLUICE_KEY_TEAM_A}}
        providers:
          oai: {{kind: openai, base_url: "{openai_fake.base_url}", api_key: env:UP_OPENAI_KEY}}
          ant: {{kind: anthropic, base_url: "{anthropic_fake.base_url}", api_key: env:UP_ANTHROPIC_KEY}}
          gem: {{kind: gemini, base_url: "{gemini_fake.base_url}", api_key: env:UP_GEMINI_KEY}}
        models:
          to-openai: {{targets: [{{provider: oai, model: gpt-4o-mini}}]}}
          to-anthropic: {{targets: [{{provider: ant, model: claude-sonnet-4-6}}]}}
          to-gemini: {{targets: [{{provider: gem, model: gemini-2.5-flash}}]}}
        """)


@pytest.fixture(scope="session")
def dialect_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI,
                    anthropic_upstream: FakeAnthropic, gemini_upstream: FakeGemini
                    ) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("gw-dialects"),
                 dialects_config(upstream, anthropic_upstream, gemini_upstream),
                 GATEWAY_ENV).start()
    yield gw
    gw.stop()
    log = gw.log()
    assert not [s for s in SECRETS if s in log], "a secret reached the gateway log"


@pytest.fixture(scope="session")
def default_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The embedded default config, as `make run` starts it, with no provider keys set."""
    gw = Gateway(tmp_path_factory.mktemp("gw-default")).start()
    yield gw
    gw.stop()


@pytest.fixture
def sdk() -> Iterator[Callable[..., openai.OpenAI]]:
    """Make official sync SDK clients (no retries), all closed after the test."""
    made: list[openai.OpenAI] = []

    def make(base_url: str, api_key: str = GATEWAY_KEY, **kwargs: Any) -> openai.OpenAI:
        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20,
                               **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
