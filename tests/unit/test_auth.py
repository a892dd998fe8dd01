"""Gateway keys: accepted in each SDK's header, compared by digest, never echoed."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.auth import ANONYMOUS, KeyTable
from proxy.config import GatewayKey
from proxy.errors import Unauthorized

TABLE = KeyTable([GatewayKey("team-a", "sk-a-secret"), GatewayKey("team-b", "sk-b-secret")])


def _headers(**items: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in items.items()}))


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer sk-b-secret"},
    {"authorization": "bearer   sk-b-secret  "},
    {"x_api_key": "sk-b-secret"},
    {"x_goog_api_key": "sk-b-secret"},
])
def test_each_sdks_header_is_accepted(headers: dict[str, str]) -> None:
    assert TABLE.authenticate(_headers(**headers)).name == "team-b"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic abc"}, {"Authorization": ""}])
def test_missing_key_says_how_to_send_one(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized, match="Missing gateway key") as info:
        TABLE.authenticate(_headers(**headers))
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_key_is_refused_without_echo() -> None:
    with pytest.raises(Unauthorized) as info:
        TABLE.authenticate(_headers(Authorization="Bearer sk-a-secretX"))
    assert "sk-a-secret" not in info.value.message
    assert info.value.status == 401


def test_no_keys_means_anonymous() -> None:
    table = KeyTable([])
    assert not table.enabled
    assert table.authenticate(_headers()) is ANONYMOUS
