"""proxy/config/load.py `_env_proxy`: the proxy the environment gives a provider, as curl and
requests read HTTPS_PROXY / HTTP_PROXY / NO_PROXY; and where the environment stands among the
provider's own `proxy:` and the top-level one."""

from __future__ import annotations

import pytest

from proxy.config import settings_from_mapping
from proxy.config.load import _env_proxy

OPENAI = "https://api.openai.com/v1"
LOCAL = "http://10.1.2.3:8000/v1"
CORP = "http://proxy.corp:3128"


def test_the_scheme_of_the_upstream_picks_the_variable() -> None:
    env = {"HTTPS_PROXY": CORP, "HTTP_PROXY": "http://plain.corp:8080"}
    assert _env_proxy(OPENAI, env) == (CORP,)
    assert _env_proxy(LOCAL, env) == ("http://plain.corp:8080",)
    assert _env_proxy(LOCAL, {"HTTPS_PROXY": CORP}) == ()  # an http:// upstream ignores it
    assert _env_proxy(OPENAI, {}) == ()


def test_lower_case_names_and_empty_values() -> None:
    assert _env_proxy(OPENAI, {"https_proxy": CORP}) == (CORP,)
    assert _env_proxy(LOCAL, {"http_proxy": CORP}) == (CORP,)
    # Upper case first; an empty one counts as unset.
    assert _env_proxy(OPENAI, {"HTTPS_PROXY": CORP, "https_proxy": "http://other:1"}) == (CORP,)
    assert _env_proxy(OPENAI, {"HTTPS_PROXY": "", "https_proxy": CORP}) == (CORP,)


def test_a_proxy_without_a_scheme_is_http() -> None:
    assert _env_proxy(OPENAI, {"HTTPS_PROXY": "proxy.corp:3128"}) == (CORP,)
    assert _env_proxy(OPENAI, {"HTTPS_PROXY": "socks5h://u:p@s.corp:1080"}) == (
        "socks5h://u:p@s.corp:1080",)


@pytest.mark.parametrize(("no_proxy", "direct"), [
    ("api.openai.com", True),
    ("openai.com", True),  # a domain covers its subdomains
    (".openai.com", True),
    ("*.openai.com", True),
    ("API.OpenAI.com", True),
    ("localhost, api.openai.com:443 ,10.0.0.0", True),  # a port in an entry is ignored
    ("*", True),
    ("penai.com", False),  # whole labels only
    ("api.openai.com.evil", False),
    ("localhost,127.0.0.1", False),
    ("", False),
    (" , ", False),
])
def test_no_proxy(no_proxy: str, direct: bool) -> None:
    env = {"HTTPS_PROXY": CORP, "NO_PROXY": no_proxy}
    assert _env_proxy(OPENAI, env) == (() if direct else (CORP,))
    assert _env_proxy(OPENAI, {"HTTPS_PROXY": CORP, "no_proxy": no_proxy}) == _env_proxy(
        OPENAI, env)


def test_no_proxy_for_an_ip_upstream() -> None:
    env = {"HTTP_PROXY": CORP, "NO_PROXY": "10.1.2.3"}
    assert _env_proxy(LOCAL, env) == ()
    assert _env_proxy("http://10.1.2.4:8000", env) == (CORP,)


def _proxies(raw_provider: dict[str, object], env: dict[str, str],
             top: object = None) -> tuple[str, ...]:
    raw: dict[str, object] = {"providers": {"o": {"kind": "openai", "api_key": "sk-x",
                                                  **raw_provider}}}
    if top is not None:
        raw["proxy"] = top
    return settings_from_mapping(raw, env).providers["o"].proxies


def test_the_provider_then_the_top_level_then_the_environment() -> None:
    env = {"HTTPS_PROXY": CORP}
    own = "socks5://127.0.0.1:1080"
    top = "http://u:p@top.corp:8080"
    assert _proxies({}, env) == (CORP,)
    assert _proxies({}, env, top=top) == (top,)
    assert _proxies({"proxy": own}, env, top=top) == (own,)
    assert _proxies({"proxy": [own, top]}, env) == (own, top)
    assert _proxies({"proxy": "direct"}, env, top=top) == ()
    assert _proxies({}, env, top="direct") == ()
    assert _proxies({}, {**env, "NO_PROXY": "openai.com"}) == ()
