"""The fake Gemini provider, proved with the official `google-genai` SDK and raw HTTP.

If these pass, an e2e failure against the fake is the gateway's, not the fake's.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, models
from google.genai import types as gt

from tests.fakes import gemini_checks
from tests.fakes import gemini_wire as wire
from tests.fakes.gemini_provider import FakeGemini

pytestmark = pytest.mark.timeout(10)

KEY = "gemini-up-test"
MODEL = "gemini-2.5-flash"
GEN = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
HELLO = [{"role": "user", "parts": [{"text": "hello there"}]}]
WEATHER = gt.Tool(
    function_declarations=[
        gt.FunctionDeclaration(
            name="get_weather",
            description="Weather of a city",
            parameters_json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,  # fine here: parametersJsonSchema is JSON Schema
            },
        )
    ]
)
NO_AFC = gt.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as f:
        yield f


@contextlib.asynccontextmanager
async def sdk(
    base_url: str, api_key: str = KEY, version: str = "v1beta", **options: Any
) -> AsyncIterator[Any]:
    """The SDK's async client on a session of ours.

    Our own aiohttp session: the session class the SDK builds subclasses aiohttp.ClientSession,
    which aiohttp answers with a DeprecationWarning, and warnings are errors here. attempts=1:
    no retries, and no implicit 1-10 s sleep-and-retry on a dropped connection (the SDK does
    that on aiohttp connection errors unless retry options are given). The fake is plain HTTP:
    verify/ssl False skip loading the CA bundle, three times per client, ~0.1 s in all.
    """
    async with aiohttp.ClientSession() as session:
        http = gt.HttpOptions(
            base_url=base_url,
            api_version=version,
            retry_options=gt.HttpRetryOptions(attempts=1),
            aiohttp_client=session,
            client_args={"verify": False},
            async_client_args={"ssl": False},
            **options,
        )
        client = genai.Client(api_key=api_key, http_options=http)
        try:
            yield client.aio
        finally:
            await client.aio.aclose()


@pytest.fixture
async def client(fake: FakeGemini) -> AsyncIterator[Any]:
    async with sdk(fake.base_url) as c:
        yield c


async def raw_post(
    fake: FakeGemini, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str]:
    hdrs = {"x-goog-api-key": KEY} if headers is None else headers
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.base_url + path, json=body, headers=hdrs) as resp,
    ):
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Drain an SDK stream into `into`, so a test sees what arrived before it raised."""
    async for chunk in stream:
        into.append(chunk)


def sse_objects(raw: bytes) -> list[Any]:
    """Every event of an `alt=sse` body, JSON-decoded; events end with CRLF CRLF."""
    events = raw.decode().split("\r\n\r\n")
    assert events[-1] == "", "the body must end with a blank line"
    out = []
    for event in events[:-1]:
        assert event.startswith("data: "), event
        assert "\n" not in event, event
        out.append(json.loads(event[len("data: ") :]))
    return out


# --- generateContent -------------------------------------------------------------------------


async def test_generate_content_text_and_usage(fake: FakeGemini, client: Any) -> None:
    resp = await client.models.generate_content(model=MODEL, contents="hello there")

    assert resp.text == "echo: hello there"
    cand = resp.candidates[0]
    assert (cand.finish_reason, cand.index, cand.content.role) == (gt.FinishReason.STOP, 0, "model")
    usage = resp.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (2, 3)
    assert usage.total_token_count == 5
    assert usage.thoughts_token_count is None  # zero counts are left out, as proto3 JSON does
    assert resp.model_version == MODEL
    assert resp.response_id
    [rec] = fake.requests
    assert (rec.rpc, rec.version, rec.model) == ("generateContent", "v1beta", MODEL)
    assert rec.headers["x-goog-api-key"] == KEY
    assert rec.json == {"contents": HELLO}
    assert fake.calls["generateContent"] == 1
    fake.assert_clean()


async def test_generate_wire_body_is_gemini_shaped(fake: FakeGemini) -> None:
    status, raw, ctype = await raw_post(fake, GEN, {"contents": HELLO})

    assert status == 200
    assert ctype.startswith("application/json")
    assert raw.startswith(b"{\n  ")  # pretty-printed, as the API answers
    assert json.loads(raw) == {
        "candidates": [
            {
                "content": {"parts": [{"text": "echo: hello there"}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 2,
            "candidatesTokenCount": 3,
            "totalTokenCount": 5,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}],
        },
        "modelVersion": MODEL,
        "responseId": json.loads(raw)["responseId"],
    }


async def test_system_instruction_config_and_snake_case_keys(fake: FakeGemini, client: Any) -> None:
    config = gt.GenerateContentConfig(
        system_instruction="be very brief",
        temperature=0.2,
        top_k=3,
        max_output_tokens=50,
        thinking_config=gt.ThinkingConfig(include_thoughts=False, thinking_budget=0),
        safety_settings=[gt.SafetySetting(category="HARM_CATEGORY_HATE_SPEECH", threshold="BLOCK_NONE")],
    )
    resp = await client.models.generate_content(model=MODEL, contents="hi you", config=config)

    assert resp.usage_metadata.prompt_token_count == 5  # 3 system words + 2
    body = fake.requests[0].json
    assert body["systemInstruction"] == {"parts": [{"text": "be very brief"}], "role": "user"}
    assert body["generationConfig"]["topK"] == 3.0  # the SDK sends a float; proto3 JSON takes it
    # The SDK puts thinkingConfig on the wire in snake_case; the API (and the fake) accept both.
    assert body["generationConfig"]["thinkingConfig"] == {"include_thoughts": False, "thinking_budget": 0}
    assert fake.requests[0].request.generation_config.thinking_config.thinking_budget == 0
    fake.assert_clean()


async def test_max_output_tokens_and_stop_sequences(client: Any) -> None:
    long = "one two three four five"
    cut = gt.GenerateContentConfig(max_output_tokens=3)
    resp = await client.models.generate_content(model=MODEL, contents=long, config=cut)
    assert resp.text == "echo: one two"
    assert resp.candidates[0].finish_reason == gt.FinishReason.MAX_TOKENS

    stop = gt.GenerateContentConfig(stop_sequences=[" three"])
    resp = await client.models.generate_content(model=MODEL, contents=long, config=stop)
    assert resp.text == "echo: one two"
    assert resp.candidates[0].finish_reason == gt.FinishReason.STOP


async def test_v1_path_is_served_too(fake: FakeGemini) -> None:
    async with sdk(fake.base_url, version="v1") as c:
        resp = await c.models.generate_content(model=MODEL, contents="hi")
    assert resp.text == "echo: hi"
    assert fake.requests[0].path == f"/v1/models/{MODEL}:generateContent"


# --- streaming -------------------------------------------------------------------------------


async def test_stream_chunks_carry_running_usage(fake: FakeGemini, client: Any) -> None:
    stream = await client.models.generate_content_stream(model=MODEL, contents="a b c")
    chunks: list[Any] = []
    await collect(stream, chunks)

    assert "".join(c.text for c in chunks) == "echo: a b c"
    assert [c.candidates[0].finish_reason for c in chunks] == [None, None, None, gt.FinishReason.STOP]
    # Every chunk carries the usage so far; a reader keeps the last one.
    assert [c.usage_metadata.candidates_token_count for c in chunks] == [1, 2, 3, 4]
    assert {c.usage_metadata.prompt_token_count for c in chunks} == {3}
    assert len({c.response_id for c in chunks}) == 1
    assert fake.requests[0].query["alt"] == "sse"
    await fake.wait_for(lambda f: f.completed_streams == 1, 1.0)
    assert fake.requests[0].events_sent == 4


async def test_sse_framing_is_crlf_data_lines(fake: FakeGemini) -> None:
    fake.behavior.chunks = 2
    status, raw, ctype = await raw_post(fake, STREAM + "?alt=sse", {"contents": HELLO})

    assert status == 200
    assert ctype.startswith("text/event-stream")
    events = sse_objects(raw)
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in events] == ["echo: hello", " there"]
    assert "finishReason" not in events[0]["candidates"][0]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert b'"candidates": [{' in raw  # `"key": value` pairs joined by a bare ","


async def test_stream_without_alt_sse_is_a_json_array(fake: FakeGemini) -> None:
    status, raw, ctype = await raw_post(fake, STREAM, {"contents": HELLO})

    assert status == 200
    assert ctype.startswith("application/json")
    assert raw.startswith(b"[{\n") and raw.endswith(b"\r\n]")
    assert raw.count(b"\r\n,\r\n") == 2
    chunks = json.loads(raw)
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["echo:", " hello", " there"]
    assert fake.requests[0].events_sent == 3


async def test_errors_of_a_json_array_stream_are_wrapped_in_an_array(fake: FakeGemini) -> None:
    status, raw, _ = await raw_post(fake, STREAM, {"contents": HELLO}, {"x-goog-api-key": "bad"})
    assert status == 400
    [err] = json.loads(raw)
    assert err["error"]["message"] == wire.API_KEY_INVALID


# --- function calling ------------------------------------------------------------------------


async def test_function_call_with_args(fake: FakeGemini, client: Any) -> None:
    fake.behavior.function_call = {"args": {"city": "Paris"}}
    config = gt.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AFC)
    resp = await client.models.generate_content(model=MODEL, contents="weather?", config=config)

    [call] = resp.function_calls
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})  # name: first declared
    assert call.id is None  # the Developer API sends no call id: a translator makes one up
    assert resp.candidates[0].finish_reason == gt.FinishReason.STOP  # no "tool use" reason
    assert resp.usage_metadata.candidates_token_count == 2  # 'get_weather {"city":"Paris"}'
    decl = fake.requests[0].json["tools"][0]["functionDeclarations"][0]
    assert "parameters_json_schema" in decl  # snake_case from the SDK, accepted
    fake.assert_clean()


async def test_parallel_calls_stream_whole_in_one_chunk(fake: FakeGemini) -> None:
    fake.behavior.parallel_calls = [
        {"name": "get_weather", "args": {"city": "Paris"}},
        {"name": "get_weather", "args": {"city": "Rome"}},
    ]
    fake.behavior.thoughts_tokens = 12  # a thinking model: the first call carries a signature
    tools = [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT"}}]}]
    status, raw, _ = await raw_post(fake, STREAM + "?alt=sse", {"contents": HELLO, "tools": tools})

    assert status == 200
    [event] = sse_objects(raw)
    parts = event["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["args"]["city"] for p in parts] == ["Paris", "Rome"]
    assert "thoughtSignature" in parts[0] and "thoughtSignature" not in parts[1]
    base64.b64decode(parts[0]["thoughtSignature"], validate=True)
    assert event["candidates"][0]["finishReason"] == "STOP"
    assert event["usageMetadata"]["thoughtsTokenCount"] == 12


async def test_content_with_a_function_call_is_a_text_part_before_it(
    fake: FakeGemini, client: Any
) -> None:
    fake.behavior.function_call, fake.behavior.content = {"args": {"city": "Rome"}}, "Let me check."
    config = gt.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AFC)
    resp = await client.models.generate_content(model=MODEL, contents="weather?", config=config)
    text, call = resp.candidates[0].content.parts
    assert (text.text, call.function_call.args) == ("Let me check.", {"city": "Rome"})


async def test_function_call_mode_none_means_no_call(fake: FakeGemini, client: Any) -> None:
    fake.behavior.function_call = {"name": "get_weather", "args": {}}
    config = gt.GenerateContentConfig(
        tools=[WEATHER],
        automatic_function_calling=NO_AFC,
        tool_config=gt.ToolConfig(function_calling_config=gt.FunctionCallingConfig(mode="NONE")),
    )
    resp = await client.models.generate_content(model=MODEL, contents="weather?", config=config)
    assert resp.function_calls is None
    assert resp.text == "echo: weather?"


async def test_function_response_round_trip(fake: FakeGemini, client: Any) -> None:
    history = [
        gt.Content(role="user", parts=[gt.Part(text="weather in Paris?")]),
        gt.Content(
            role="model",
            parts=[
                gt.Part(
                    function_call=gt.FunctionCall(name="get_weather", args={"city": "Paris"}),
                    thought_signature=b"sig-1",
                )
            ],
        ),
        gt.Content(
            role="user",
            parts=[gt.Part.from_function_response(name="get_weather", response={"temp": 21})],
        ),
    ]
    config = gt.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AFC)
    resp = await client.models.generate_content(model=MODEL, contents=history, config=config)

    assert resp.text == 'echo: get_weather {"temp":21}'
    sent = fake.requests[0].json["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == base64.b64encode(b"sig-1").decode()
    fake.assert_clean()


async def test_missing_thought_signature_refused_when_required() -> None:
    async with FakeGemini(api_key=KEY, require_thought_signatures=True) as f:
        body = {
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]},
            ]
        }
        status, raw, _ = await raw_post(f, GEN, body)
        assert status == 400
        assert "missing a thought_signature" in json.loads(raw)["error"]["message"]
        body["contents"][1]["parts"][0]["thoughtSignature"] = "c2ln"
        status, _, _ = await raw_post(f, GEN, body)
        assert status == 200
        assert len(f.invalid) == 1


# --- thinking --------------------------------------------------------------------------------


async def test_thought_parts_and_signature(fake: FakeGemini, client: Any) -> None:
    fake.behavior.thoughts = "let me think"
    config = gt.GenerateContentConfig(thinking_config=gt.ThinkingConfig(include_thoughts=True))
    resp = await client.models.generate_content(model=MODEL, contents="hi", config=config)

    thought, answer = resp.candidates[0].content.parts
    assert (thought.thought, thought.text) == (True, "let me think")
    assert answer.thought is None and answer.text == "echo: hi"
    assert answer.thought_signature  # bytes, decoded from base64 by the SDK
    assert resp.text == "echo: hi"  # the SDK leaves thought parts out of .text
    usage = resp.usage_metadata
    assert (usage.thoughts_token_count, usage.candidates_token_count) == (3, 2)
    assert usage.total_token_count == 1 + 2 + 3  # thoughts are in the total, not in candidates

    again = await client.models.generate_content(model=MODEL, contents="hi", config=config)
    assert again.candidates[0].content.parts[1].thought_signature == answer.thought_signature


async def test_thoughts_hidden_without_include_thoughts(fake: FakeGemini, client: Any) -> None:
    fake.behavior.thoughts = "secret reasoning here"
    stream = await client.models.generate_content_stream(model=MODEL, contents="hi")
    chunks: list[Any] = []
    await collect(stream, chunks)

    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert not any(p.thought for p in parts)
    assert parts[-1].thought_signature and not parts[0].thought_signature  # on the last text
    assert chunks[-1].usage_metadata.thoughts_token_count == 3


# --- counting and models ---------------------------------------------------------------------


async def test_count_tokens(fake: FakeGemini, client: Any) -> None:
    resp = await client.models.count_tokens(model=MODEL, contents="one two three")
    assert resp.total_tokens == 3
    assert fake.requests[0].rpc == "countTokens"


async def test_count_tokens_with_generate_content_request(fake: FakeGemini) -> None:
    inner = {
        "model": f"models/{MODEL}",
        "contents": HELLO,
        "systemInstruction": {"parts": [{"text": "be nice"}]},
    }
    status, raw, _ = await raw_post(fake, f"/v1beta/models/{MODEL}:countTokens", {"generateContentRequest": inner})
    assert (status, json.loads(raw)["totalTokens"]) == (200, 4)

    del inner["model"]  # the documented body names the model inside, too
    status, raw, _ = await raw_post(fake, f"/v1beta/models/{MODEL}:countTokens", {"generateContentRequest": inner})
    assert status == 400
    assert len(fake.invalid) == 1


async def test_models_list_get_and_unknown(fake: FakeGemini, client: Any) -> None:
    listed = [m.name async for m in await client.models.list()]
    assert listed == [f"models/{m}" for m in fake.models]

    model = await client.models.get(model="gemini-2.5-pro")
    assert (model.name, model.output_token_limit) == ("models/gemini-2.5-pro", 65536)

    with pytest.raises(errors.ClientError) as err:
        await client.models.get(model="no-such-model")
    assert (err.value.code, err.value.status) == (404, "NOT_FOUND")
    fake.assert_clean()  # a 404 for a model the caller asked about is not the gateway's fault


async def test_models_pages_and_check_models() -> None:
    async with FakeGemini(api_key=KEY, check_models=True) as f:
        async with aiohttp.ClientSession() as session:
            url = f.base_url + "/v1beta/models?pageSize=2"
            async with session.get(url, headers={"x-goog-api-key": KEY}) as resp:
                page = await resp.json()
        assert [m["name"] for m in page["models"]] == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
        assert page["nextPageToken"]
        status, raw, _ = await raw_post(f, "/v1beta/models/gemini-9:generateContent", {"contents": HELLO})
        assert status == 404
        assert json.loads(raw)["error"]["message"].startswith(
            "models/gemini-9 is not found for API version v1beta, or is not supported for generateContent."
        )
        f.assert_clean()


# --- errors ----------------------------------------------------------------------------------


async def test_rate_limit_with_retry_info_for_next_request_only(fake: FakeGemini, client: Any) -> None:
    fake.behavior.status, fake.behavior.times, fake.behavior.retry_after = 429, 1, 7

    with pytest.raises(errors.ClientError) as err:
        await client.models.generate_content(model=MODEL, contents="hi")
    assert (err.value.code, err.value.status) == (429, "RESOURCE_EXHAUSTED")
    retry = [d for d in err.value.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    assert err.value.response.headers["Retry-After"] == "7"

    resp = await client.models.generate_content(model=MODEL, contents="hi")
    assert resp.text == "echo: hi"


@pytest.mark.parametrize(
    ("status", "kind", "name"),
    [
        (400, errors.ClientError, "INVALID_ARGUMENT"),
        (403, errors.ClientError, "PERMISSION_DENIED"),
        (404, errors.ClientError, "NOT_FOUND"),
        (500, errors.ServerError, "INTERNAL"),
        (503, errors.ServerError, "UNAVAILABLE"),
    ],
)
async def test_status_switch_maps_to_sdk_errors(
    fake: FakeGemini, client: Any, status: int, kind: type[Exception], name: str
) -> None:
    fake.behavior.status = status
    stream = await client.models.generate_content_stream(model=MODEL, contents="hi")
    got: list[Any] = []
    with pytest.raises(kind) as err:  # the request goes out on the first iteration
        await collect(stream, got)
    assert got == []
    assert (err.value.code, err.value.status) == (status, name)  # type: ignore[attr-defined]


async def test_wrong_key_is_400_api_key_invalid(fake: FakeGemini) -> None:
    async with sdk(fake.base_url, api_key="sk-gateway-own-key") as c:
        with pytest.raises(errors.ClientError) as err:
            await c.models.generate_content(model=MODEL, contents="hi")
    assert (err.value.code, err.value.status) == (400, "INVALID_ARGUMENT")
    assert err.value.message == "API key not valid. Please pass a valid API key."
    reasons = [d.get("reason") for d in err.value.details["error"]["details"]]
    assert "API_KEY_INVALID" in reasons
    assert len(fake.unauthorized) == 1
    with pytest.raises(AssertionError, match="unauthorized"):
        fake.assert_clean()


async def test_missing_key_is_403_and_query_key_accepted() -> None:
    async with FakeGemini(api_key=None) as f:
        status, raw, _ = await raw_post(f, GEN, {"contents": HELLO}, {})
        assert status == 403
        assert json.loads(raw)["error"]["status"] == "PERMISSION_DENIED"
        status, _, _ = await raw_post(f, GEN + "?key=anything", {"contents": HELLO}, {})
        assert status == 200
        assert len(f.unauthorized) == 1


# --- refusals --------------------------------------------------------------------------------


async def test_unknown_field_is_400_like_gemini(fake: FakeGemini) -> None:
    status, raw, _ = await raw_post(fake, GEN, {"contents": HELLO, "temperature": 0.5})

    assert status == 400
    assert json.loads(raw) == {
        "error": {
            "code": 400,
            "message": 'Invalid JSON payload received. Unknown name "temperature": Cannot find field.',
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"description": 'Invalid JSON payload received. Unknown name "temperature": Cannot find field.'}
                    ],
                }
            ],
        }
    }
    [violation] = fake.invalid
    assert violation.kind == "invalid_body"
    with pytest.raises(AssertionError, match="invalid_body"):
        fake.assert_clean()


async def test_unknown_field_through_the_sdk(fake: FakeGemini) -> None:
    extra = {"generationConfig": {"fooBar": 1}}
    async with sdk(fake.base_url, extra_body=extra) as c:
        with pytest.raises(errors.ClientError, match="Unknown name") as err:
            await c.models.generate_content(model=MODEL, contents="hi")
    assert err.value.message == (
        'Invalid JSON payload received. Unknown name "fooBar" at \'generation_config\': Cannot find field.'
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified\n"),
        ({"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty"),
        ({"contents": [{"parts": [{"thought": True}]}]}, "required oneof field 'data'"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
        ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
        (
            {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
            "function response turn comes immediately after a function call turn",
        ),
        (
            {"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f"}}]}]},
            "function call turn comes immediately after a user turn",
        ),
        (
            {
                "contents": HELLO,
                "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "additionalProperties": False}}]}],
            },
            "Unknown name \"additionalProperties\" at 'tools[0].function_declarations[0].parameters'",
        ),
        (
            {
                "contents": HELLO,
                "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/x"}}}}]}],
            },
            "Unknown name \"$ref\" at 'tools[0].function_declarations[0].parameters.properties[0].value'",
        ),
        (
            {"contents": HELLO, "tools": [{"functionDeclarations": [{"name": "get weather"}]}]},
            "Invalid function name",
        ),
        ({"contents": HELLO, "generationConfig": {"temperature": 2.5}}, "temperature must be in the range"),
        ({"contents": HELLO, "generationConfig": {"temperature": "hot"}}, "(TYPE_FLOAT), \"hot\""),
        ({"contents": HELLO, "safetySettings": [{"category": "HARM_CATEGORY_FOO"}]}, "HarmCategory), \"HARM_CATEGORY_FOO\""),
        ({"contents": [{"parts": [{"text": "a", "thoughtSignature": "!!"}]}]}, "Base64 decoding failed"),
        ({"contents": "hello"}, "Invalid value at 'contents'"),
        (
            {"contents": [{"parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]},
            "Oneof field 'data' is already set",
        ),
        ([1], "Root element must be a message."),
    ],
)
async def test_malformed_bodies_are_400_and_recorded(fake: FakeGemini, body: Any, message: str) -> None:
    status, raw, _ = await raw_post(fake, GEN, body)
    assert status == 400
    error = json.loads(raw)["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert message in error["message"]
    assert len(fake.invalid) == 1


async def test_not_json_is_400(fake: FakeGemini) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + GEN,
            data=b"{nope",
            headers={"x-goog-api-key": KEY, "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 400
        message = (await resp.json())["error"]["message"]
    assert message.startswith("Invalid JSON payload received. Unexpected token.")
    assert fake.requests[0].json is None
    assert fake.invalid


async def test_extra_fields_allowed_when_asked() -> None:
    async with FakeGemini(api_key=KEY, forbid_extra_fields=False) as f:
        body = {"contents": [{"parts": [{"text": "hi", "cache_control": {}}]}], "foo": 1}
        status, raw, _ = await raw_post(f, GEN, body)
        assert status == 200
        assert json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"] == "echo: hi"
        f.assert_clean()


async def test_unknown_route_is_html_404_and_recorded(fake: FakeGemini) -> None:
    status, raw, ctype = await raw_post(fake, f"/v1beta/models/{MODEL}:generate", {"contents": HELLO})
    assert status == 404
    assert ctype.startswith("text/html")
    assert b"was not found on this server" in raw
    assert fake.invalid[0].kind == "unknown_route"


async def test_forbidden_headers_and_values_are_recorded() -> None:
    async with FakeGemini(api_key=KEY, forbidden_values=["sk-gw-secret"]) as f:
        headers = {"x-goog-api-key": KEY, "Authorization": "Bearer sk-gw-secret"}
        status, _, _ = await raw_post(f, GEN, {"contents": HELLO}, headers)
        assert status == 200  # recorded, not refused: the e2e test fails on assert_clean()
        details = sorted(v.detail for v in f.forbidden)
        assert details == ["Authorization carries 'sk-gw-secret'", "Authorization: Bearer sk-gw-secret"]


# --- switches --------------------------------------------------------------------------------


async def test_safety_finish_and_blocked_prompt(fake: FakeGemini, client: Any) -> None:
    fake.behavior.finish_reason = "SAFETY"
    resp = await client.models.generate_content(model=MODEL, contents="hi")
    cand = resp.candidates[0]
    assert cand.finish_reason == gt.FinishReason.SAFETY
    assert cand.content is None
    assert any(r.blocked for r in cand.safety_ratings)

    fake.behavior.finish_reason, fake.behavior.block_reason = None, "SAFETY"
    resp = await client.models.generate_content(model=MODEL, contents="hi")
    assert resp.candidates is None
    assert resp.prompt_feedback.block_reason == gt.BlockedReason.SAFETY


async def test_cached_and_usage_and_content_overrides(fake: FakeGemini, client: Any) -> None:
    fake.behavior.cached, fake.behavior.content = 1, "fixed reply"
    resp = await client.models.generate_content(model=MODEL, contents="a b c")
    assert resp.text == "fixed reply"
    assert resp.usage_metadata.cached_content_token_count == 1
    assert resp.usage_metadata.prompt_token_count == 3  # the cached tokens are part of it

    fake.behavior.usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120}
    resp = await client.models.generate_content(model=MODEL, contents="a b c")
    assert resp.usage_metadata.total_token_count == 120


async def test_first_byte_delay(fake: FakeGemini, client: Any) -> None:
    fake.behavior.first_byte_delay = 0.15
    started = time.monotonic()
    await client.models.count_tokens(model=MODEL, contents="x")
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("cut_after", [0, 2])
async def test_cut_after_makes_sdk_stream_raise(fake: FakeGemini, client: Any, cut_after: int) -> None:
    fake.behavior.cut_after = cut_after
    got: list[Any] = []
    stream = await client.models.generate_content_stream(model=MODEL, contents="a b c d e")
    with pytest.raises(aiohttp.ClientPayloadError):
        await collect(stream, got)
    assert len(got) == cut_after
    rec = fake.requests[0]
    assert (rec.events_sent, rec.completed) == (cut_after, False)
    assert fake.disconnects == 0  # the fake's own cut is not a client disconnect


async def test_cut_after_on_non_stream_truncates_body(fake: FakeGemini, client: Any) -> None:
    fake.behavior.cut_after = 0
    with pytest.raises(aiohttp.ClientPayloadError):
        await client.models.generate_content(model=MODEL, contents="hi")


async def test_error_after_sends_an_error_event(fake: FakeGemini, client: Any) -> None:
    fake.behavior.error_after = 2
    got: list[Any] = []
    stream = await client.models.generate_content_stream(model=MODEL, contents="a b c d")
    with pytest.raises(errors.ServerError) as err:
        await collect(stream, got)
    assert (err.value.code, err.value.status) == (500, "INTERNAL")
    assert len(got) == 2


async def test_error_after_in_a_json_array_stream_closes_the_array(fake: FakeGemini) -> None:
    fake.behavior.error_after = 1
    status, raw, _ = await raw_post(fake, STREAM, {"contents": HELLO})
    assert status == 200  # the failure comes after the 200, as an array element
    first, error = json.loads(raw)
    assert first["candidates"][0]["content"]["parts"][0]["text"] == "echo:"
    assert error["error"]["status"] == "INTERNAL"


# --- disconnects -----------------------------------------------------------------------------


async def test_client_closing_mid_stream_counts_one_disconnect_promptly(fake: FakeGemini) -> None:
    fake.behavior.chunk_delay = 0.5  # the fake sleeps between chunks when the client leaves
    body = {"contents": [{"parts": [{"text": "a b c d e f"}]}]}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(fake.base_url + STREAM + "?alt=sse", json=body, headers={"x-goog-api-key": KEY})
        assert (await resp.content.readline()).startswith(b"data: ")
        await fake.wait_for(lambda f: f.active_streams == 1, 1.0)
        resp.close()  # drops the connection, as a gateway cancelling its upstream read must
        closed_at = time.monotonic()

    assert await fake.wait_disconnect(1.0) == 1
    rec = fake.requests[0]
    assert rec.disconnected_at is not None
    assert rec.disconnected_at - closed_at < 0.2  # seen at once, not at the next write
    assert not rec.completed
    assert (fake.active_streams, fake.completed_streams) == (0, 0)


async def test_finished_stream_is_not_a_disconnect(fake: FakeGemini) -> None:
    status, _, _ = await raw_post(fake, STREAM + "?alt=sse", {"contents": HELLO})
    assert status == 200
    await fake.wait_for(lambda f: f.completed_streams == 1, 1.0)
    with pytest.raises(TimeoutError):
        await fake.wait_disconnect(0.05)


async def test_client_leaving_during_first_byte_delay_counts(fake: FakeGemini) -> None:
    fake.behavior.first_byte_delay = 5.0
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            await session.post(
                fake.base_url + GEN,
                json={"contents": HELLO},
                headers={"x-goog-api-key": KEY},
                timeout=aiohttp.ClientTimeout(total=0.1),
            )
    assert await fake.wait_disconnect(1.0) == 1


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [(7, "7s"), (0.5, "0.500s"), (1.25, "1.250s")])
def test_duration_is_proto3_json(seconds: float, text: str) -> None:
    assert wire.duration(seconds) == text


def test_usage_metadata_omits_zero_counts() -> None:
    assert wire.usage_metadata(0, 0) == {}
    assert wire.usage_metadata(2, 0, thoughts=5) == {
        "promptTokenCount": 2,
        "totalTokenCount": 7,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}],
        "thoughtsTokenCount": 5,
    }


def test_unsupported_table_matches_the_sdk_converters() -> None:
    """Every field the SDK refuses to send to the Developer API is refused by the fake too."""
    source = inspect.getsource(models)
    refused: dict[str, set[str]] = {}
    for func, body in re.findall(r"\ndef _(\w+)_to_mldev\((.*?)\n  return to_object", source, re.S):
        for name in re.findall(
            r"if getv\(from_object, \['(\w+)'\]\) is not None:\n    raise ValueError", body
        ):
            refused.setdefault(func, set()).add(name)
    ours = {cls.__name__.removeprefix("Wire"): names for cls, names in gemini_checks.UNSUPPORTED.items()}
    for cls_name in ("Tool", "FunctionCall", "FunctionCallingConfig", "SafetySetting", "GoogleSearch", "ImageConfig"):
        assert refused[cls_name] <= ours[cls_name], cls_name
    # GenerateContentConfig's refused fields that belong in generationConfig.
    in_generation_config = refused["GenerateContentConfig"] & set(gt.GenerationConfig.model_fields)
    assert in_generation_config <= ours["GenerationConfig"]
