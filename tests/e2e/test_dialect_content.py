"""What must survive a crossing beyond plain text: images, parallel calls, reasoning and its
signatures, JSON schemas, safety stops; and what cannot cross is a 400 naming the field."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import GATEWAY_KEY
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.gemini_provider import FakeGemini
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway

# A 1x1 PNG.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f6c3d20000000049454e44ae426082"
)).decode()
PROVIDERS = ("openai", "anthropic", "gemini")


@pytest.fixture
def oai(dialect_gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{dialect_gateway.url}/v1", api_key=GATEWAY_KEY,
                       max_retries=0, timeout=20) as client:
        yield client


@pytest.fixture
def ant(dialect_gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=dialect_gateway.url, api_key=GATEWAY_KEY,
                             max_retries=0, timeout=20) as client:
        yield client


@pytest.fixture
def fakes(upstream: FakeOpenAI, anthropic_upstream: FakeAnthropic,
          gemini_upstream: FakeGemini) -> dict[str, Any]:
    return {"openai": upstream, "anthropic": anthropic_upstream, "gemini": gemini_upstream}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_base64_image_crosses_from_openai(oai: openai.OpenAI, provider: str,
                                          fakes: dict[str, Any]) -> None:
    oai.chat.completions.create(model=f"to-{provider}", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}])
    assert PIXEL in fakes[provider].requests[0].body.decode()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_base64_image_crosses_from_anthropic(ant: anthropic.Anthropic, provider: str,
                                             fakes: dict[str, Any]) -> None:
    ant.messages.create(model=f"to-{provider}", max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "text", "text": "what is this"}]}])
    assert PIXEL in fakes[provider].requests[0].body.decode()


def test_image_url_to_gemini_is_a_400_naming_the_field(oai: openai.OpenAI,
                                                       fakes: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="to-gemini", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "url" in info.value.message.lower()
    assert fakes["gemini"].requests == [], "the gateway must not fetch or forward it"


def test_n_greater_than_one_is_a_400_naming_n(oai: openai.OpenAI,
                                              fakes: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="to-anthropic", n=2,
                                    messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["param"] == "n"  # type: ignore[index]
    assert fakes["anthropic"].requests == []


def test_parallel_tool_calls_from_anthropic_reach_openai_caller(
        oai: openai.OpenAI, fakes: dict[str, Any]) -> None:
    fakes["anthropic"].behavior.parallel_tools = [
        {"name": "get_weather", "input": {"city": "Paris"}},
        {"name": "get_weather", "input": {"city": "Rome"}}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    done = oai.chat.completions.create(model="to-anthropic", tools=tools,
                                       messages=[{"role": "user", "content": "both cities"}])
    calls = done.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Rome"]
    assert len({c.id for c in calls}) == 2
    assert done.choices[0].finish_reason == "tool_calls"


def test_anthropic_thinking_round_trips_through_an_openai_caller(
        oai: openai.OpenAI, fakes: dict[str, Any]) -> None:
    """The signature comes back to Anthropic on the next turn, carried by the OpenAI message."""
    fake = fakes["anthropic"]
    fake.behavior.thinking = "let me think about the weather"
    fake.behavior.tool_use = {"name": "get_weather", "input": {"city": "Paris"}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    first = oai.chat.completions.create(model="to-anthropic", tools=tools,
                                        reasoning_effort="low",
                                        messages=[{"role": "user", "content": "weather?"}])
    message = first.choices[0].message
    assert message.model_extra and message.model_extra.get("reasoning_content")
    history = [{"role": "user", "content": "weather?"}, message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": (message.tool_calls or [])[0].id,
                "content": "sunny"}]
    fake.behavior.tool_use = None
    oai.chat.completions.create(model="to-anthropic", tools=tools, reasoning_effort="low",
                                messages=history)
    second = fake.requests[1].json
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    thinking = [b for b in assistant["content"] if b["type"] == "thinking"]
    assert thinking and thinking[0]["signature"], "the signed thinking block must come back"


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_json_schema_reaches_each_provider_its_way(oai: openai.OpenAI, provider: str,
                                                   fakes: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}},
              "required": ["answer"], "additionalProperties": False}
    fakes[provider].behavior.content = '{"answer": "42"}'
    done = oai.chat.completions.create(
        model=f"to-{provider}", messages=[{"role": "user", "content": "answer in JSON"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "reply", "schema": schema, "strict": True}})
    assert json.loads(done.choices[0].message.content or "") == {"answer": "42"}
    body = fakes[provider].requests[0].json
    if provider == "gemini":
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert "answer" in json.dumps(config.get("responseJsonSchema")
                                      or config.get("responseSchema"))
    else:
        assert "answer" in json.dumps(body.get("output_config") or body.get("output_format"))


def test_safety_stop_maps_to_each_callers_reason(oai: openai.OpenAI, ant: anthropic.Anthropic,
                                                 fakes: dict[str, Any]) -> None:
    fakes["gemini"].behavior.finish_reason = "SAFETY"
    done = oai.chat.completions.create(model="to-gemini",
                                       messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].finish_reason == "content_filter"
    msg = ant.messages.create(model="to-gemini", max_tokens=20,
                              messages=[{"role": "user", "content": "hi"}])
    assert msg.stop_reason == "refusal"


def test_claude_code_style_body_crosses_to_openai(dialect_gateway: Gateway,
                                                  fakes: dict[str, Any]) -> None:
    """Fields Claude Code sends that mean nothing elsewhere are dropped, never fatal."""
    body = {
        "model": "to-openai", "max_tokens": 1000, "stream": False,
        "system": [{"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {
            "type": "object", "properties": {"command": {"type": "string"}}}}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "user_abc"},
        "context_management": {"edits": []},
    }
    resp = httpx.post(f"{dialect_gateway.url}/v1/messages?beta=true", json=body, timeout=20,
                      headers={"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01",
                               "anthropic-beta": "interleaved-thinking-2025-05-14"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"][0]["text"] == "echo: hello"
    sent = fakes["openai"].requests[0].json
    assert sent["messages"][0] == {"role": "system", "content": "You are Claude Code."}
    assert "metadata" not in sent and "context_management" not in sent


@pytest.mark.parametrize("fail", [False, True], ids=["whole", "mid-stream-error"])
def test_gemini_json_array_stream_stays_valid_json(dialect_gateway: Gateway, fail: bool,
                                                   fakes: dict[str, Any]) -> None:
    """streamGenerateContent without ?alt=sse is one JSON array, even when the upstream fails."""
    fakes["openai"].behavior.content = "one two three four five six"
    if fail:
        fakes["openai"].behavior.error_after = 3
    resp = httpx.post(f"{dialect_gateway.url}/v1beta/models/to-openai:streamGenerateContent",
                      json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                      headers={"x-goog-api-key": GATEWAY_KEY}, timeout=20)
    assert resp.status_code == 200
    chunks = json.loads(resp.content)
    assert isinstance(chunks, list) and chunks
    if fail:
        assert "error" in chunks[-1]
    else:
        text = "".join(p.get("text", "") for c in chunks
                       for p in c["candidates"][0].get("content", {}).get("parts", []))
        assert text == "one two three four five six"


def test_same_dialect_stream_cut_ends_with_the_dialects_error_event(
        ant: anthropic.Anthropic, fakes: dict[str, Any]) -> None:
    """Anthropic -> Anthropic is forwarded as bytes; a cut upstream still ends in an
    `event: error` the SDK understands, not a bare disconnect."""
    fakes["anthropic"].behavior.content = "a b c d e f g h"
    fakes["anthropic"].behavior.cut_after = 4
    with pytest.raises(anthropic.APIStatusError, match=r"upstream|closed|ended"), \
            ant.messages.stream(model="to-anthropic", max_tokens=50,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()


def test_gateway_made_signatures_never_reach_anthropic(ant: anthropic.Anthropic,
                                                       fakes: dict[str, Any]) -> None:
    """Regression: a conversation first served by another provider carries thinking blocks
    signed `sluice:<dialect>:...`; forwarded as they are, Anthropic refuses the signature."""
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "from gpt", "signature": "sluice:openai:"},
            {"type": "text", "text": "first answer"}]},
        {"role": "user", "content": "second"},
    ]
    msg = ant.messages.create(model="to-anthropic", max_tokens=50, messages=history)
    assert msg.content[0].type == "text"
    sent = fakes["anthropic"].requests[0].body
    assert b"sluice:" not in sent


def test_cached_and_reasoning_tokens_reach_openai_callers(oai: openai.OpenAI,
                                                          fakes: dict[str, Any]) -> None:
    fakes["anthropic"].behavior.cache_read = 6
    done = oai.chat.completions.create(model="to-anthropic",
                                       messages=[{"role": "user", "content": "one two"}])
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == 6
    assert done.usage.prompt_tokens == 2 + 6  # all prompt tokens, cached ones included
    fakes["gemini"].behavior.thoughts = "pondering deeply here"
    fakes["gemini"].behavior.thoughts_tokens = 9
    done = oai.chat.completions.create(model="to-gemini", reasoning_effort="low",
                                       messages=[{"role": "user", "content": "one two"}])
    assert done.usage is not None and done.usage.completion_tokens_details is not None
    assert done.usage.completion_tokens_details.reasoning_tokens == 9


def test_message_start_carries_the_real_input_count(dialect_gateway: Gateway) -> None:
    """Gemini reports the prompt count on its first chunk: Anthropic's message_start says it."""
    body = {"model": "to-gemini", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "one two three"}]}
    resp = httpx.post(f"{dialect_gateway.url}/v1/messages", json=body, timeout=20,
                      headers={"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"})
    first = next(line for line in resp.text.splitlines() if line.startswith("data: "))
    start = json.loads(first[6:])
    assert start["type"] == "message_start"
    assert start["message"]["usage"]["input_tokens"] == 3


def test_gemini_thought_signature_round_trips_through_an_openai_caller(
        oai: openai.OpenAI, fakes: dict[str, Any]) -> None:
    """Gemini needs its thoughtSignature back on the functionCall; the OpenAI caller carries
    it unknowingly in the tool call id."""
    fake = fakes["gemini"]
    fake.behavior.thoughts = "think first"
    fake.behavior.function_call = {"name": "get_weather", "args": {"city": "Oslo"}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    first = oai.chat.completions.create(model="to-gemini", tools=tools, reasoning_effort="low",
                                        messages=[{"role": "user", "content": "weather?"}])
    call = (first.choices[0].message.tool_calls or [])[0]
    fake.behavior.function_call = None
    oai.chat.completions.create(model="to-gemini", tools=tools, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "cold"}])
    contents = fake.requests[1].json["contents"]
    model_turn = next(c for c in contents if c["role"] == "model")
    signed = [p for p in model_turn["parts"] if "functionCall" in p]
    assert signed and signed[0].get("thoughtSignature"), "the signature must come back"


def test_gemini_key_in_the_query_is_accepted_and_never_forwarded(
        dialect_gateway: Gateway, fakes: dict[str, Any]) -> None:
    resp = httpx.post(f"{dialect_gateway.url}/v1beta/models/to-gemini:generateContent",
                      params={"key": GATEWAY_KEY},
                      json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                      timeout=20)
    assert resp.status_code == 200, resp.text
    seen = fakes["gemini"].requests[0]
    assert "key" not in seen.query


def test_top_k_is_not_sent_to_openai(dialect_gateway: Gateway, fakes: dict[str, Any]) -> None:
    """Regression (Gemini CLI sends topK: 64 on every call): OpenAI refuses `top_k`."""
    resp = httpx.post(f"{dialect_gateway.url}/v1beta/models/to-openai:generateContent",
                      json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                            "generationConfig": {"topK": 64, "topP": 0.95}},
                      headers={"x-goog-api-key": GATEWAY_KEY}, timeout=20)
    assert resp.status_code == 200, resp.text
    sent = fakes["openai"].requests[0].json
    assert "top_k" not in sent and sent["top_p"] == 0.95
