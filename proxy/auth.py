"""Gateway keys: who is calling. Keys are compared by SHA-256 digest in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from multidict import CIMultiDictProxy

from proxy.config import GatewayKey
from proxy.errors import Unauthorized

__all__ = ["ANONYMOUS", "KeyTable"]

ANONYMOUS = GatewayKey(name="anonymous", secret="")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sluice"'}


class KeyTable:
    """The configured gateway keys; with none, every caller is `ANONYMOUS` (loopback only)."""

    __slots__ = ("_by_digest",)

    def __init__(self, keys: Iterable[GatewayKey]) -> None:
        self._by_digest = {hashlib.sha256(k.secret.encode()).digest(): k for k in keys}

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def authenticate(self, headers: CIMultiDictProxy[str],
                     query_key: str | None = None) -> GatewayKey:
        if not self._by_digest:
            return ANONYMOUS
        presented = _presented_key(headers) or query_key
        if not presented:
            raise Unauthorized(
                "Missing gateway key. Send it as 'Authorization: Bearer <key>' "
                "(or 'x-api-key' / 'x-goog-api-key' / Gemini's '?key=').",
                headers=_CHALLENGE,
            )
        digest = hashlib.sha256(presented.encode()).digest()
        # The dict lookup compares digests of an unknown secret, which leaks nothing usable;
        # compare_digest keeps the final equality constant-time all the same.
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(
            digest, hashlib.sha256(found.secret.encode()).digest()
        ):
            raise Unauthorized("Invalid gateway key.", headers=_CHALLENGE)
        return found


def _presented_key(headers: CIMultiDictProxy[str]) -> str | None:
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key")
