"""Model names to routes: exact aliases, `provider/model`, then glob routes.

The order in which a route's targets are tried is the balancer's (proxy/balance.py).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

from proxy.config import ModelRoute, Provider, Settings, Target

__all__ = ["Router"]

# Ad-hoc `provider/model` routes are cached by name; names come from callers, so the cache is
# bounded (cleared when full) to keep a stream of random names from growing memory.
_ADHOC_CACHE_MAX = 4096


class Router:
    __slots__ = ("_adhoc", "_exact", "_globs", "_providers")

    def __init__(self, settings: Settings) -> None:
        self._exact: dict[str, ModelRoute] = {}
        self._globs: list[tuple[re.Pattern[str], ModelRoute]] = []
        for route in settings.models:
            if route.is_glob:
                self._globs.append((re.compile(fnmatch.translate(route.name)), route))
            else:
                self._exact[route.name] = route
        self._providers: Mapping[str, Provider] = settings.providers
        self._adhoc: dict[str, ModelRoute] = {}

    def resolve(self, model: str) -> ModelRoute | None:
        """The route serving `model`, or None when no alias, provider prefix or glob matches."""
        route = self._exact.get(model) or self._adhoc.get(model)
        if route is not None:
            return route
        prefix, slash, rest = model.partition("/")
        provider = self._providers.get(prefix) if slash and rest else None
        if provider is not None and not provider.spec.builtin:
            route = ModelRoute(name=model, targets=(Target(provider, rest, 1),))
            if len(self._adhoc) >= _ADHOC_CACHE_MAX:
                self._adhoc.clear()
            self._adhoc[model] = route
            return route
        for pattern, glob_route in self._globs:
            if pattern.match(model):
                return glob_route
        return None

    def listed(self) -> list[ModelRoute]:
        """The routes `GET /v1/models` shows: every named alias (globs are not model names)."""
        return list(self._exact.values())
