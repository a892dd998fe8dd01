"""Bad input and bad upstreams: the right status and an OpenAI error body that says what to fix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import httpx
import openai
import pytest

from tests.e2e.conftest import GATEWAY_KEY, SECRETS
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway, ThreadLoop

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
CHAT = {"model": "direct", "messages": [{"role": "user", "content": "hi"}]}


def post(gateway: Gateway, body: bytes | dict[str, object], headers: dict[str, str] | None = None,
         path: str = "/v1/chat/completions") -> httpx.Response:
    hdrs = {"Content-Type": "application/json", **AUTH, **(headers or {})}
    kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
    return httpx.post(gateway.url + path, headers=hdrs, timeout=20, **kwargs)  # type: ignore[arg-type]


def error_of(resp: httpx.Response) -> dict[str, object]:
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-request-id"]
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    for secret in SECRETS:
        assert secret not in resp.text
    return err  # type: ignore[no-any-return]


def test_malformed_json_is_400(gateway: Gateway) -> None:
    resp = post(gateway, b'{"model": "direct", "messages": [')
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "invalid_json" and "not valid JSON" in str(err["message"])


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "direct"}, "messages"),
])
def test_missing_field_is_400_naming_it(gateway: Gateway, body: dict[str, object],
                                        field: str) -> None:
    resp = post(gateway, body)
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["param"] == field and f"'{field}'" in str(err["message"])


def test_missing_input_for_embeddings(gateway: Gateway) -> None:
    resp = post(gateway, {"model": "emb-x"}, path="/v1/embeddings")
    assert resp.status_code == 400 and error_of(resp)["param"] == "input"


def test_unknown_model_is_404_with_a_way_forward(gateway: Gateway) -> None:
    resp = post(gateway, {**CHAT, "model": "gpt-17"})
    assert resp.status_code == 404
    err = error_of(resp)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "GET /v1/models" in str(err["message"])


def test_oversized_body_is_413(gateway: Gateway, upstream: FakeOpenAI) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    resp = post(gateway, big)
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "request_too_large"
    assert upstream.requests == []


def test_non_json_content_type_is_415(gateway: Gateway) -> None:
    resp = post(gateway, b"model=direct", headers={"Content-Type":
                                                   "application/x-www-form-urlencoded"})
    assert resp.status_code == 415
    assert "application/json" in str(error_of(resp)["message"])


@pytest.mark.parametrize("key", [None, "sk-wrong-key-987"])
def test_missing_or_wrong_gateway_key_is_401(gateway: Gateway, key: str | None,
                                             sdk: Callable[..., openai.OpenAI]) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {"Authorization": ""}
    resp = post(gateway, CHAT, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    err = error_of(resp)
    assert err["code"] == "invalid_api_key"
    if key:
        assert key not in resp.text
    with pytest.raises(openai.AuthenticationError):
        sdk(f"{gateway.url}/v1", api_key="sk-wrong").models.list()


def test_unknown_path_and_method(gateway: Gateway) -> None:
    resp = httpx.get(f"{gateway.url}/v1/nothing-here", headers=AUTH)
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    resp = httpx.get(f"{gateway.url}/v1/chat/completions", headers=AUTH)
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"]


def test_upstream_4xx_passes_with_its_status_and_message(gateway: Gateway,
                                                         upstream: FakeOpenAI) -> None:
    upstream.behavior.status = 400
    upstream.behavior.body = {"error": {"message": "max_tokens is too large: 99999999",
                                        "type": "invalid_request_error", "param": "max_tokens",
                                        "code": None}}
    resp = post(gateway, CHAT)
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["message"] == "max_tokens is too large: 99999999"
    assert err["param"] == "max_tokens"
    assert resp.headers["x-sluice-provider"] == "up-openai"


def test_upstream_429_keeps_retry_after(gateway: Gateway, upstream: FakeOpenAI,
                                        sdk: Callable[..., openai.OpenAI]) -> None:
    upstream.behavior.status, upstream.behavior.retry_after = 429, 7
    with pytest.raises(openai.RateLimitError) as info:
        sdk(f"{gateway.url}/v1").chat.completions.create(**CHAT)  # type: ignore[call-overload]
    # The provider asked for 7 s; the gateway cooled the target for that (plus <=10% spread)
    # and answers with when it recovers.
    assert 7 <= int(info.value.response.headers["Retry-After"]) <= 8
    assert "Rate limit reached" in info.value.message


def test_upstream_5xx_is_502(gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.behavior.status = 500
    resp = post(gateway, CHAT)
    assert resp.status_code == 502
    assert "answered 500" in str(error_of(resp)["message"])
    assert resp.headers["x-sluice-attempts"] == "2"  # one retry pass (retry.attempts: 2)


def test_upstream_rejecting_our_credential_is_the_gateways_fault(
        gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.behavior.status = 401
    resp = post(gateway, CHAT)
    assert resp.status_code == 502
    err = error_of(resp)
    assert err["code"] == "upstream_auth_failed"
    assert "providers.up-openai.api_key" in str(err["message"])


def test_unreachable_upstream_is_502(gateway: Gateway) -> None:
    resp = post(gateway, {**CHAT, "model": "nowhere"})
    assert resp.status_code == 502
    assert error_of(resp)["code"] == "upstream_unreachable"
    assert (resp.headers["x-sluice-provider"], resp.headers["x-sluice-attempts"]) == ("dead", "2")


def test_upstream_timeout_is_504(gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.behavior.first_byte_delay = 2.0
    started = time.monotonic()
    resp = post(gateway, {**CHAT, "model": "sluggish"})
    assert resp.status_code == 504
    assert error_of(resp)["code"] == "upstream_read_timeout"
    assert time.monotonic() - started < 1.8


def test_stream_error_before_first_byte_is_a_plain_error(gateway: Gateway,
                                                         upstream: FakeOpenAI) -> None:
    upstream.behavior.status = 503
    resp = post(gateway, {**CHAT, "stream": True})
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/json")


def test_stream_cut_mid_way_ends_with_an_error_event(gateway: Gateway, upstream: FakeOpenAI,
                                                     sdk: Callable[..., openai.OpenAI]) -> None:
    upstream.behavior.content = "a b c d e f g h"
    upstream.behavior.cut_after = 3
    got: list[object] = []
    stream = sdk(f"{gateway.url}/v1").chat.completions.create(**CHAT, stream=True)  # type: ignore[call-overload]
    with pytest.raises(openai.APIError, match=r"closed|ended|upstream"):
        got.extend(stream)
    assert 1 <= len(got) <= 3


def test_client_disconnect_closes_the_upstream_request(
        gateway: Gateway, upstream: FakeOpenAI, fake_loop: ThreadLoop) -> None:
    upstream.behavior.content = " ".join(["word"] * 50)
    upstream.behavior.chunk_delay = 0.2

    async def read_two_chunks_and_leave() -> None:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{gateway.url}/v1/chat/completions",
                                      json={**CHAT, "stream": True}, headers=AUTH)
            assert resp.status == 200
            await resp.content.readany()
            resp.close()  # drop the connection mid-stream

    asyncio.run(read_two_chunks_and_leave())
    left = time.monotonic()
    fake_loop.run(upstream.wait_disconnect(timeout=3.0))
    assert time.monotonic() - left < 2.0
    assert upstream.completed_streams == 0


def test_every_answer_has_a_request_id_and_callers_id_is_kept(gateway: Gateway) -> None:
    for resp in (httpx.get(f"{gateway.url}/health"), httpx.get(f"{gateway.url}/ping"),
                 post(gateway, b"{")):
        assert resp.headers["x-request-id"]
    resp = post(gateway, CHAT, headers={"x-request-id": "trace-abc-123"})
    assert resp.headers["x-request-id"] == "trace-abc-123"
