"""The OpenAI drop-in: the official SDK, sync and async, against the gateway and fake providers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import openai
import pytest

from tests.e2e.conftest import GATEWAY_KEY, ROUTER_KEYS, UPSTREAM_KEY
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway

MESSAGES = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there gateway"}]


@pytest.fixture
def client(gateway: Gateway, sdk: Callable[..., openai.OpenAI]) -> openai.OpenAI:
    return sdk(f"{gateway.url}/v1")


@pytest.fixture
async def aclient(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY,
                                  max_retries=0, timeout=20) as client:
        yield client


def test_chat_non_stream_reaches_the_provider_with_its_own_key(
        client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="direct", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there gateway"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)
    assert raw.headers["x-sluice-provider"] == "up-openai"
    assert raw.headers["x-sluice-attempts"] == "1"
    assert len(raw.headers["x-request-id"]) >= 16
    (seen,) = upstream.requests
    assert seen.json["model"] == "gpt-4o-mini"
    assert seen.json["messages"] == MESSAGES
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "stream_options" not in seen.json


def test_model_is_renamed_for_the_target_and_credentials_rotate(
        client: openai.OpenAI, router_upstream: FakeOpenAI) -> None:
    for _ in range(4):
        client.chat.completions.create(model="routed", messages=MESSAGES)
    assert [r.json["model"] for r in router_upstream.requests] == ["openai/gpt-4o-mini"] * 4
    keys = [r.headers["Authorization"] for r in router_upstream.requests]
    assert keys == [f"Bearer {ROUTER_KEYS[0]}", f"Bearer {ROUTER_KEYS[1]}"] * 2


def test_stream_without_usage_option_hides_the_usage_chunk_the_gateway_asked_for(
        client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.behavior.content = "one two three four five"
    chunks = list(client.chat.completions.create(model="direct", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach the caller"
    assert chunks[-1].choices[0].finish_reason == "stop"
    (seen,) = upstream.requests
    # The gateway asked for usage on the caller's behalf, to count tokens.
    assert seen.json["stream_options"] == {"include_usage": True}


def test_stream_with_usage_option_passes_the_usage_chunk(
        client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    stream = client.chat.completions.create(model="direct", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 4)


async def test_async_client_stream_and_not(aclient: openai.AsyncOpenAI,
                                           upstream: FakeOpenAI) -> None:
    completion = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == "echo: hello there gateway"
    stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                   stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: hello there gateway"


def test_streamed_tool_call_arguments_arrive_whole(client: openai.OpenAI,
                                                   upstream: FakeOpenAI) -> None:
    args = json.dumps({"city": "Paris", "unit": "celsius"})
    upstream.behavior.tool_call = {"name": "get_weather", "arguments": args}
    upstream.behavior.chunks = 5
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                        "unit": {"type": "string"}}}}}]
    stream = client.chat.completions.create(model="direct", messages=MESSAGES, tools=tools,
                                            tool_choice="auto", stream=True)
    name, pieces, call_id, finish = None, [], None, None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name if call.function else name
                call_id = call.id or call_id
                if call.function and call.function.arguments:
                    pieces.append(call.function.arguments)
            finish = choice.finish_reason or finish
    assert name == "get_weather" and call_id
    assert len(pieces) > 1 and json.loads("".join(pieces)) == json.loads(args)
    assert finish == "tool_calls"
    assert upstream.requests[0].json["tools"] == tools
    completion = client.chat.completions.create(model="direct", messages=MESSAGES, tools=tools)
    (call,) = completion.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == json.loads(args)


def test_legacy_completions_stream_and_not(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    done = client.completions.create(model="direct", prompt="say this back")
    assert "say this back" in done.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="direct", prompt="say this back", stream=True) if c.choices)
    assert streamed == done.choices[0].text
    assert upstream.requests[0].path == "/v1/completions"


def test_embeddings_base64_and_float(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    # The SDK asks for base64 by default and decodes it itself.
    result = client.embeddings.create(model="emb-small", input=["alpha", "beta gamma"])
    assert [len(d.embedding) for d in result.data] == [8, 8]
    floats = client.embeddings.create(model="emb-small", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
    assert upstream.requests[0].json["model"] == "text-embedding-3-small"


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "direct", "routed", "failover"} <= ids
    assert not any("*" in i for i in ids)
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    assert client.models.retrieve("up-router/some/model").id == "up-router/some/model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_provider_prefix_reaches_any_model(client: openai.OpenAI,
                                           router_upstream: FakeOpenAI) -> None:
    client.chat.completions.create(model="up-router/qwen/qwen3-coder", messages=MESSAGES)
    assert router_upstream.requests[0].json["model"] == "qwen/qwen3-coder"


def test_connection_error_moves_to_the_next_target(client: openai.OpenAI,
                                                   upstream: FakeOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="failover", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "echo: hello there gateway"
    assert raw.headers["x-sluice-attempts"] == "2"
    assert raw.headers["x-sluice-provider"] == "up-openai"


def test_documented_headers_pass_and_others_stay(gateway: Gateway, upstream: FakeOpenAI,
                                                  sdk: Callable[..., openai.OpenAI]) -> None:
    client = sdk(f"{gateway.url}/v1", organization="org-123", project="proj-9",
                 default_headers={"x-api-key": GATEWAY_KEY, "Proxy-Authorization": "x",
                                  "x-custom": "nope"})
    client.chat.completions.create(model="direct", messages=MESSAGES)
    seen = upstream.requests[0].headers
    assert seen["OpenAI-Organization"] == "org-123"
    assert seen["OpenAI-Project"] == "proj-9"
    assert "x-custom" not in seen and "x-api-key" not in seen
    assert "x-stainless-lang" not in seen


def test_paths_without_v1_work(gateway: Gateway, sdk: Callable[..., openai.OpenAI]) -> None:
    client = sdk(gateway.url)
    done = client.chat.completions.create(model="direct", messages=MESSAGES)
    assert done.choices[0].message.content == "echo: hello there gateway"
    assert "direct" in {m.id for m in client.models.list()}


def test_unasked_stream_carries_no_trace_of_the_usage_request(gateway: Gateway,
                                                               upstream: FakeOpenAI) -> None:
    upstream.behavior.content = "one two three"
    body = {"model": "direct", "messages": MESSAGES, "stream": True}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20,
                      headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [e for e in resp.content.split(b"\n\n") if e]
    # role chunk, three words, finish chunk, [DONE]: exactly what OpenAI sends when not asked.
    assert len(events) == 6 and events[-1] == b"data: [DONE]"
    assert b'"usage"' not in resp.content
