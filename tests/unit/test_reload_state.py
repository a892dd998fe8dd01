"""What a config reload keeps: traffic state and pooled connections of what still exists."""

from __future__ import annotations

import time
from typing import Any

from proxy.config import settings_from_mapping
from proxy.limits import RateLimit
from proxy.runtime import Runtime


def settings(providers: dict[str, str], keys: tuple[str, ...] = ("k1",)) -> Any:
    return settings_from_mapping({
        "keys": [{"name": k, "key": f"secret-{k}-123"} for k in keys],
        "providers": {n: {"kind": "openai-compatible", "base_url": url}
                      for n, url in providers.items()},
        "models": {"m": {"targets": [{"provider": n, "model": "x"} for n in providers]}},
    }, env={})


def test_state_of_what_remains_is_kept_and_the_rest_forgotten() -> None:
    old = Runtime(settings({"a": "http://127.0.0.1:1/v1", "b": "http://127.0.0.1:2/v1"},
                           keys=("k1", "k2")))
    t, now = old.traffic, time.monotonic()
    label = {name: pr.credentials[0].label if pr.credentials else name
             for name, pr in old.providers.items()}
    for name in ("a", "b"):
        t.cooldowns.cool((label[name], "x"), 600, now, "rate_limited")
        t.breakers.get((name, "x")).record(False, now)
        t.target_limits.check((label[name], "x"), RateLimit(rpm=5), 1, now)
    for key in ("k1", "k2"):
        t.key_limits.check(key, RateLimit(rpm=5), 1, now)
    new = Runtime(settings({"a": "http://127.0.0.1:1/v1"}), traffic=t, previous=old)
    new.retain_traffic()
    assert t.cooldowns.remaining((label["a"], "x"), now) > 0
    assert not t.cooldowns.remaining((label["b"], "x"), now)
    assert [k for k, _ in t.breakers.items()] == [("a", "x")]
    assert t.target_limits.check((label["a"], "x"), RateLimit(rpm=5), 1, now).remaining == 3
    assert t.key_limits.check("k1", RateLimit(rpm=5), 1, now).remaining == 3
    assert t.key_limits.check("k2", RateLimit(rpm=5), 1, now).remaining == 4  # forgotten


def test_unchanged_providers_keep_their_pool_and_the_others_are_orphaned() -> None:
    old = Runtime(settings({"a": "http://127.0.0.1:1/v1", "b": "http://127.0.0.1:2/v1",
                            "c": "http://127.0.0.1:3/v1"}))
    new = Runtime(settings({"a": "http://127.0.0.1:1/v1", "b": "http://127.0.0.1:9/v1"}),
                  traffic=old.traffic, previous=old)
    assert new.providers["a"].upstream is old.providers["a"].upstream
    assert new.providers["b"].upstream is not old.providers["b"].upstream
    orphans = new.orphans(old)
    assert {id(u) for u in orphans} == {id(old.providers["b"].upstream),
                                        id(old.providers["c"].upstream)}


async def test_pools_the_new_config_dropped_close_after_the_old_runtimes_last_request() -> None:
    import asyncio

    from proxy.reload import _retire

    old = Runtime(settings({"a": "http://127.0.0.1:1/v1"}))
    new = Runtime(settings({"a": "http://127.0.0.1:2/v1"}), traffic=old.traffic, previous=old)
    (pool,) = new.orphans(old)
    old.active = 1  # a stream still runs on the old config
    task = asyncio.create_task(_retire(old, [pool]))
    await asyncio.sleep(0.6)
    assert not task.done() and "closed" not in repr(pool)
    old.active = 0
    await asyncio.wait_for(task, 2)
    assert "closed" in repr(pool)
