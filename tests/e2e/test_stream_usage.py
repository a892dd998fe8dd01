"""Same-dialect streams through the running gateway, where the metering taps watch them: the
bytes the caller gets are the provider's own, whole, cut or abandoned, and the official SDKs
read the provider's usage from them.

What the gateway makes of the usage is asserted sans-IO in tests/unit/test_metering.py (the
usage records that expose it end to end come with proxy.accounting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from google import genai
from google.genai import types as gtypes

from tests.e2e.conftest import GATEWAY_KEY
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.base import FakeProvider
from tests.fakes.gemini_provider import FakeGemini
from tests.harness import Gateway, ThreadLoop

PROMPT = "hello there gateway"
ANTHROPIC_HEADERS = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
ANTHROPIC_BODY = {"model": "to-anthropic", "max_tokens": 100, "stream": True,
                  "messages": [{"role": "user", "content": PROMPT}]}
GEMINI_HEADERS = {"x-goog-api-key": GATEWAY_KEY}
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
GEMINI_PATH = "/v1beta/models/to-gemini:streamGenerateContent"

Sent = Callable[[FakeProvider[Any, Any]], list[tuple[list[bytes], bytes]]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Records, per stream a fake answers, the events it is about to write and what closes the
    body (a JSON array's `]`): the bytes the provider sent, to compare with the caller's."""

    def record(fake: FakeProvider[Any, Any]) -> list[tuple[list[bytes], bytes]]:
        streams: list[tuple[list[bytes], bytes]] = []
        original = fake._stream

        async def _stream(request: Any, rec: Any, b: Any, events: list[bytes], **kw: Any
                          ) -> Any:
            streams.append((list(events), kw.get("end") or b""))
            return await original(request, rec, b, events, **kw)

        monkeypatch.setattr(fake, "_stream", _stream)
        return streams

    return record


def _post(gw: Gateway, path: str, body: dict[str, Any], headers: dict[str, str]
          ) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body, headers=headers, timeout=20)


@pytest.mark.parametrize("framing", ["sse", "array"])
def test_gemini_stream_bytes_are_the_providers(dialect_gateway: Gateway,
                                               gemini_upstream: FakeGemini,
                                               sent: Sent, framing: str) -> None:
    streams = sent(gemini_upstream)
    query = "?alt=sse" if framing == "sse" else ""
    resp = _post(dialect_gateway, GEMINI_PATH + query, GEMINI_BODY, GEMINI_HEADERS)
    assert resp.status_code == 200
    ((events, end),) = streams
    assert resp.content == b"".join(events) + end
    assert b'"usageMetadata"' in events[-1] and b'"finishReason"' in events[-1]


def test_anthropic_stream_bytes_are_the_providers(dialect_gateway: Gateway,
                                                  anthropic_upstream: FakeAnthropic,
                                                  sent: Sent) -> None:
    streams = sent(anthropic_upstream)
    resp = _post(dialect_gateway, "/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS)
    assert resp.status_code == 200
    ((events, _),) = streams
    assert resp.content == b"".join(events)
    assert events[0].startswith(b"event: message_start")
    assert events[-2].startswith(b"event: message_delta")


@pytest.mark.parametrize("dialect", ["anthropic", "gemini"])
def test_a_cut_stream_gives_what_came_then_the_dialects_error(
        dialect_gateway: Gateway, anthropic_upstream: FakeAnthropic,
        gemini_upstream: FakeGemini, sent: Sent, dialect: str) -> None:
    fake = anthropic_upstream if dialect == "anthropic" else gemini_upstream
    fake.behavior.cut_after = 3
    streams = sent(fake)
    if dialect == "anthropic":
        resp = _post(dialect_gateway, "/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS)
        error = b"event: error\n"
    else:
        resp = _post(dialect_gateway, GEMINI_PATH + "?alt=sse", GEMINI_BODY, GEMINI_HEADERS)
        error = b'data: {"error":'
    ((events, _),) = streams
    given = b"".join(events[:3])
    assert resp.content.startswith(given)
    assert resp.content[len(given):].startswith(error)
    # The gateway serves on (the tap's accounting of the cut stream did not break it).
    fake.behavior.cut_after = None
    assert _post(dialect_gateway, "/v1/messages", ANTHROPIC_BODY,
                 ANTHROPIC_HEADERS).status_code == 200


def test_a_caller_that_leaves_mid_stream_ends_the_upstream_stream(
        dialect_gateway: Gateway, anthropic_upstream: FakeAnthropic,
        fake_loop: ThreadLoop) -> None:
    anthropic_upstream.behavior.chunk_delay = 0.2
    logged = len(dialect_gateway.log())
    with httpx.stream("POST", f"{dialect_gateway.url}/v1/messages", json=ANTHROPIC_BODY,
                      headers=ANTHROPIC_HEADERS, timeout=20) as resp:
        first = next(resp.iter_raw())
    assert first.startswith(b"event: message_start")
    fake_loop.run(anthropic_upstream.wait_disconnect(timeout=5))
    anthropic_upstream.behavior.chunk_delay = 0.0
    assert _post(dialect_gateway, "/v1/messages", ANTHROPIC_BODY,
                 ANTHROPIC_HEADERS).status_code == 200
    assert "Traceback" not in dialect_gateway.log()[logged:]


@pytest.fixture
def anthropic_sdk(dialect_gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=dialect_gateway.url, api_key=GATEWAY_KEY,
                                 max_retries=0, timeout=20)
    yield client
    client.close()


@pytest.fixture
def genai_sdk(dialect_gateway: Gateway) -> Iterator[genai.Client]:
    client = genai.Client(api_key=GATEWAY_KEY, http_options=gtypes.HttpOptions(
        base_url=dialect_gateway.url, api_version="v1beta", timeout=20_000,
        retry_options=gtypes.HttpRetryOptions(attempts=1)))
    yield client
    client.close()


def test_anthropic_sdk_reads_the_providers_stream_usage(anthropic_sdk: anthropic.Anthropic,
                                                        anthropic_upstream: FakeAnthropic
                                                        ) -> None:
    anthropic_upstream.behavior.cache_read = 10
    with anthropic_sdk.messages.stream(model="to-anthropic", max_tokens=100,
                                       messages=[{"role": "user", "content": PROMPT}]) as s:
        msg = s.get_final_message()
    assert "".join(b.text for b in msg.content if b.type == "text") == f"echo: {PROMPT}"
    # The fakes count words: 3 in (cache reads beside them), 4 out.
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens,
            msg.usage.output_tokens) == (3, 10, 4)


def test_genai_sdk_reads_the_providers_stream_usage(genai_sdk: genai.Client,
                                                    gemini_upstream: FakeGemini) -> None:
    gemini_upstream.behavior.thoughts_tokens = 6
    chunks = list(genai_sdk.models.generate_content_stream(model="to-gemini", contents=PROMPT))
    assert "".join(c.text or "" for c in chunks) == f"echo: {PROMPT}"
    usage = chunks[-1].usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count,
            usage.thoughts_token_count) == (3, 4, 6)
