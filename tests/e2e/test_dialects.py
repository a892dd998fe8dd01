"""The conformance matrix: every caller dialect x every provider dialect, through the running
gateway, with each official SDK parsing our answers and each fake validating what it receives.

A `Driver` speaks one caller dialect through its SDK and reports results in neutral terms, so
one scenario runs as nine crossings (three of them the same-dialect fast path).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from tests.e2e.conftest import GATEWAY_KEY
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.gemini_provider import FakeGemini
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway

CALLERS = ("openai", "anthropic", "gemini")
PROVIDERS = ("openai", "anthropic", "gemini")
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


@dataclass
class Result:
    text: str
    finish: str  # stop | length | tool_calls | other
    input_tokens: int
    output_tokens: int
    calls: list[tuple[str, dict[str, Any], str]]  # (name, args, id)


class OpenAIDriver:
    def __init__(self, url: str) -> None:
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=GATEWAY_KEY, max_retries=0,
                                    timeout=20)

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _finish(reason: str | None) -> str:
        return reason if reason in ("stop", "length", "tool_calls") else f"other:{reason}"

    def chat(self, model: str, turns: list[dict[str, Any]], *, system: str | None = None,
             max_tokens: int | None = None, tools: bool = False, stream: bool = False) -> Result:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            self._turn(t) for t in turns]
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens:
            kwargs["max_tokens"] = max_tokens
        if tools:
            kwargs["tools"] = [{"type": "function", "function": WEATHER}]
        if not stream:
            done = self.client.chat.completions.create(**kwargs)
            msg = done.choices[0].message
            calls = [(c.function.name, json.loads(c.function.arguments), c.id)
                     for c in msg.tool_calls or []]
            assert done.usage is not None
            assert done.created > 1_700_000_000, "created must be a real Unix time"
            return Result(msg.content or "", self._finish(done.choices[0].finish_reason),
                          done.usage.prompt_tokens, done.usage.completion_tokens, calls)
        chunks = list(self.client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}))
        text, finish, parts = "", None, {}
        for chunk in chunks:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    entry = parts.setdefault(call.index, {"name": "", "args": "", "id": ""})
                    entry["id"] = call.id or entry["id"]
                    if call.function:
                        entry["name"] += call.function.name or ""
                        entry["args"] += call.function.arguments or ""
        usage = chunks[-1].usage
        assert usage is not None, "the usage chunk the caller asked for is missing"
        assert all(c.created > 1_700_000_000 for c in chunks)
        calls = [(p["name"], json.loads(p["args"]), p["id"]) for p in parts.values()]
        return Result(text, self._finish(finish), usage.prompt_tokens, usage.completion_tokens,
                      calls)

    @staticmethod
    def _turn(t: dict[str, Any]) -> dict[str, Any]:
        if t["role"] == "call":
            return {"role": "assistant", "content": None, "tool_calls": [{
                "id": t["id"], "type": "function",
                "function": {"name": t["name"], "arguments": json.dumps(t["args"])}}]}
        if t["role"] == "result":
            return {"role": "tool", "tool_call_id": t["id"], "content": t["content"]}
        return {"role": t["role"], "content": t["content"]}

    errors = (openai.APIError,)
    rate_limited = openai.RateLimitError


class AnthropicDriver:
    def __init__(self, url: str) -> None:
        self.client = anthropic.Anthropic(base_url=url, api_key=GATEWAY_KEY, max_retries=0,
                                          timeout=20)

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _finish(reason: str | None) -> str:
        return {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                "tool_use": "tool_calls"}.get(reason or "", f"other:{reason}")

    def chat(self, model: str, turns: list[dict[str, Any]], *, system: str | None = None,
             max_tokens: int | None = None, tools: bool = False, stream: bool = False) -> Result:
        kwargs: dict[str, Any] = {"model": model, "max_tokens": max_tokens or 256,
                                  "messages": [self._turn(t) for t in turns]}
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = [{"name": WEATHER["name"], "description": WEATHER["description"],
                                "input_schema": WEATHER["parameters"]}]
        if stream:
            with self.client.messages.stream(**kwargs) as s:
                msg = s.get_final_message()
        else:
            msg = self.client.messages.create(**kwargs)
        text = "".join(b.text for b in msg.content if b.type == "text")
        calls = [(b.name, dict(b.input), b.id) for b in msg.content if b.type == "tool_use"]
        return Result(text, self._finish(msg.stop_reason), msg.usage.input_tokens,
                      msg.usage.output_tokens, calls)

    @staticmethod
    def _turn(t: dict[str, Any]) -> dict[str, Any]:
        if t["role"] == "call":
            return {"role": "assistant", "content": [
                {"type": "tool_use", "id": t["id"], "name": t["name"], "input": t["args"]}]}
        if t["role"] == "result":
            return {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": t["id"], "content": t["content"]}]}
        return {"role": t["role"], "content": t["content"]}

    errors = (anthropic.APIError,)
    rate_limited = anthropic.RateLimitError


class GeminiDriver:
    def __init__(self, url: str) -> None:
        self.client = genai.Client(api_key=GATEWAY_KEY, http_options=gtypes.HttpOptions(
            base_url=url, api_version="v1beta", timeout=20_000,
            retry_options=gtypes.HttpRetryOptions(attempts=1)))

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _finish(reason: Any, calls: list[Any]) -> str:
        name = getattr(reason, "value", reason)
        if name == "STOP":
            return "tool_calls" if calls else "stop"
        return "length" if name == "MAX_TOKENS" else f"other:{name}"

    def chat(self, model: str, turns: list[dict[str, Any]], *, system: str | None = None,
             max_tokens: int | None = None, tools: bool = False, stream: bool = False) -> Result:
        config = gtypes.GenerateContentConfig(
            system_instruction=system, max_output_tokens=max_tokens,
            tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(
                name=WEATHER["name"], description=WEATHER["description"],
                parameters_json_schema=WEATHER["parameters"])])] if tools else None,
            automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True))
        contents = [self._turn(t) for t in turns]
        if stream:
            chunks = list(self.client.models.generate_content_stream(
                model=model, contents=contents, config=config))
            text = "".join(c.text or "" for c in chunks if c.candidates)
            fcalls = [fc for c in chunks for fc in (c.function_calls or [])]
            last = chunks[-1]
        else:
            last = self.client.models.generate_content(model=model, contents=contents,
                                                       config=config)
            text, fcalls = last.text or "", list(last.function_calls or [])
        usage = last.usage_metadata
        assert usage is not None and last.candidates
        calls = [(fc.name or "", dict(fc.args or {}), fc.id or "") for fc in fcalls]
        return Result(text, self._finish(last.candidates[0].finish_reason, calls),
                      usage.prompt_token_count or 0, usage.candidates_token_count or 0, calls)

    @staticmethod
    def _turn(t: dict[str, Any]) -> gtypes.Content:
        if t["role"] == "call":
            return gtypes.Content(role="model", parts=[gtypes.Part(function_call=gtypes.FunctionCall(
                id=t["id"], name=t["name"], args=t["args"]))])
        if t["role"] == "result":
            return gtypes.Content(role="user", parts=[gtypes.Part(
                function_response=gtypes.FunctionResponse(
                    id=t["id"], name=t["name"], response={"result": t["content"]}))])
        role = "model" if t["role"] == "assistant" else "user"
        return gtypes.Content(role=role, parts=[gtypes.Part(text=t["content"])])

    errors = (genai_errors.APIError,)
    rate_limited = genai_errors.ClientError


DRIVERS = {"openai": OpenAIDriver, "anthropic": AnthropicDriver, "gemini": GeminiDriver}


@pytest.fixture(params=CALLERS)
def caller(request: pytest.FixtureRequest, dialect_gateway: Gateway) -> Iterator[Any]:
    driver = DRIVERS[request.param](dialect_gateway.url)
    yield driver
    driver.close()


@pytest.fixture
def fakes(upstream: FakeOpenAI, anthropic_upstream: FakeAnthropic,
          gemini_upstream: FakeGemini) -> dict[str, Any]:
    return {"openai": upstream, "anthropic": anthropic_upstream, "gemini": gemini_upstream}


def _system_seen(kind: str, body: dict[str, Any]) -> str:
    if kind == "openai":
        return " ".join(m["content"] for m in body["messages"] if m["role"] in ("system",
                                                                                "developer"))
    if kind == "anthropic":
        system = body.get("system", "")
        return system if isinstance(system, str) else " ".join(b["text"] for b in system)
    return " ".join(p.get("text", "") for p in body["systemInstruction"]["parts"])


HELLO = [{"role": "user", "content": "hello there gateway"}]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_text_system_and_usage(caller: Any, provider: str, stream: bool,
                               fakes: dict[str, Any]) -> None:
    result = caller.chat(f"to-{provider}", HELLO, system="be brief", stream=stream)
    assert result.text == "echo: hello there gateway"
    assert result.finish == "stop"
    # The fakes count words: 2 of system + 3 of the message in, 4 out.
    assert (result.input_tokens, result.output_tokens) == (5, 4)
    (seen,) = fakes[provider].requests
    assert _system_seen(provider, seen.json) == "be brief"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_multi_turn_history_and_max_tokens(caller: Any, provider: str,
                                           fakes: dict[str, Any]) -> None:
    turns = [{"role": "user", "content": "first question"},
             {"role": "assistant", "content": "first answer"},
             {"role": "user", "content": "one two three four five six"}]
    result = caller.chat(f"to-{provider}", turns, max_tokens=3)
    assert result.text.split() == ["echo:", "one", "two"]
    assert result.finish == "length"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tool_call_reaches_the_caller_whole(caller: Any, provider: str, stream: bool,
                                            fakes: dict[str, Any]) -> None:
    args = {"city": "Paris"}
    fake = fakes[provider]
    if provider == "openai":
        fake.behavior.tool_call = {"name": "get_weather", "arguments": json.dumps(args)}
    elif provider == "anthropic":
        fake.behavior.tool_use = {"name": "get_weather", "input": args}
    else:
        fake.behavior.function_call = {"name": "get_weather", "args": args}
    result = caller.chat(f"to-{provider}", [{"role": "user", "content": "weather in Paris?"}],
                         tools=True, stream=stream)
    assert [(name, a) for name, a, _ in result.calls] == [("get_weather", args)]
    if not isinstance(caller, GeminiDriver):  # Gemini names calls by function, ids optional
        assert result.calls[0][2], "the call must carry an id the caller can answer"
    assert result.finish == "tool_calls"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_result_round_trip(caller: Any, provider: str, fakes: dict[str, Any]) -> None:
    turns = [{"role": "user", "content": "weather in Paris?"},
             {"role": "call", "id": "call_abc123", "name": "get_weather",
              "args": {"city": "Paris"}},
             {"role": "result", "id": "call_abc123", "name": "get_weather",
              "content": "sunny and 21C"}]
    result = caller.chat(f"to-{provider}", turns, tools=True)
    assert result.finish == "stop"
    body = json.dumps(fakes[provider].requests[0].json)
    assert "sunny and 21C" in body and "Paris" in body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_rate_limit_reaches_the_caller_as_its_own(caller: Any, provider: str,
                                                          fakes: dict[str, Any]) -> None:
    fakes[provider].behavior.status = 429
    fakes[provider].behavior.retry_after = 3
    with pytest.raises(caller.rate_limited) as info:
        caller.chat(f"to-{provider}", HELLO)
    if isinstance(info.value, genai_errors.ClientError):
        assert info.value.code == 429


@pytest.mark.parametrize("provider", PROVIDERS)
def test_mid_stream_error_ends_the_stream_as_an_error(caller: Any, provider: str,
                                                     fakes: dict[str, Any]) -> None:
    fakes[provider].behavior.content = "a b c d e f g h i j"
    fakes[provider].behavior.error_after = 3
    with pytest.raises(caller.errors):
        caller.chat(f"to-{provider}", HELLO, stream=True)


COUNT_TEXT = "count these few words please"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_count_tokens(dialect_gateway: Gateway, provider: str,
                                fakes: dict[str, Any]) -> None:
    with anthropic.Anthropic(base_url=dialect_gateway.url, api_key=GATEWAY_KEY,
                             max_retries=0) as client:
        raw = client.messages.with_raw_response.count_tokens(
            model=f"to-{provider}", system="be brief",
            messages=[{"role": "user", "content": COUNT_TEXT}])
    counted = raw.parse()
    if provider == "openai":  # no counting endpoint: a tiktoken estimate, and it says so
        assert raw.headers["x-sluice-token-count"] == "estimated"
        assert 10 <= counted.input_tokens <= 30
        assert fakes["openai"].requests == []
    else:  # the provider's own count: the fakes count 7 words
        assert raw.headers.get("x-sluice-token-count", "exact") == "exact"
        assert counted.input_tokens == 7


@pytest.mark.parametrize("provider", PROVIDERS)
def test_gemini_count_tokens(dialect_gateway: Gateway, provider: str) -> None:
    client = genai.Client(api_key=GATEWAY_KEY, http_options=gtypes.HttpOptions(
        base_url=dialect_gateway.url, api_version="v1beta",
        retry_options=gtypes.HttpRetryOptions(attempts=1)))
    try:
        counted = client.models.count_tokens(model=f"to-{provider}", contents=COUNT_TEXT)
    finally:
        client.close()
    assert counted.total_tokens is not None
    if provider == "openai":
        assert 5 <= counted.total_tokens <= 20
    else:
        assert counted.total_tokens == 5


def test_each_sdk_lists_models_in_its_own_shape(dialect_gateway: Gateway) -> None:
    with anthropic.Anthropic(base_url=dialect_gateway.url, api_key=GATEWAY_KEY,
                             max_retries=0) as client:
        assert {m.id for m in client.models.list()} == {"to-openai", "to-anthropic",
                                                         "to-gemini"}
        assert client.models.retrieve("to-gemini").id == "to-gemini"
    for version in ("v1beta", "v1"):
        gclient = genai.Client(api_key=GATEWAY_KEY, http_options=gtypes.HttpOptions(
            base_url=dialect_gateway.url, api_version=version,
            retry_options=gtypes.HttpRetryOptions(attempts=1)))
        try:
            names = {m.name for m in gclient.models.list()}
            assert names == {"models/to-openai", "models/to-anthropic", "models/to-gemini"}
            assert gclient.models.get(model="to-openai").name == "models/to-openai"
        finally:
            gclient.close()
    with openai.OpenAI(base_url=f"{dialect_gateway.url}/v1", api_key=GATEWAY_KEY) as oclient:
        assert "to-anthropic" in {m.id for m in oclient.models.list()}


def test_errors_answer_in_the_callers_dialect(dialect_gateway: Gateway) -> None:
    with anthropic.Anthropic(base_url=dialect_gateway.url, api_key=GATEWAY_KEY,
                             max_retries=0) as client, pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such", max_tokens=5,
                               messages=[{"role": "user", "content": "x"}])
    assert info.value.body["type"] == "error"  # type: ignore[index]
    gclient = genai.Client(api_key="wrong-key", http_options=gtypes.HttpOptions(
        base_url=dialect_gateway.url, api_version="v1beta",
        retry_options=gtypes.HttpRetryOptions(attempts=1)))
    try:
        with pytest.raises(genai_errors.ClientError) as ginfo:
            gclient.models.generate_content(model="to-openai", contents="x")
        assert ginfo.value.code == 401
    finally:
        gclient.close()
