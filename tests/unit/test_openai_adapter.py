"""The OpenAI Chat Completions adapter: caller and provider side, answers, streams, errors.

What a provider receives is checked against the official SDK's request types (eagerly, through
the fake provider's validator); what a caller receives is parsed by the SDK's own models, and the
streams by the SDK itself over an in-memory transport (no sockets).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from adapters import canonical as c
from adapters.openai import (
    StreamDecoder,
    StreamEncoder,
    from_canonical_error,
    from_canonical_request,
    from_canonical_response,
    request_path,
    stream_error_event,
    to_canonical_error,
    to_canonical_request,
    to_canonical_response,
)
from adapters.sse import SSEDecoder, SSEEvent
from tests.fakes.openai_checks import validate_body

pytestmark = pytest.mark.timeout(10)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
PDF = base64.b64encode(b"%PDF-1.4 fake").decode()
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def body(**fields: Any) -> bytes:
    fields.setdefault("model", "gpt-4o")
    return json.dumps(fields).encode()


def decode(**fields: Any) -> c.Request:
    return to_canonical_request(body(**fields))


def refused(**fields: Any) -> c.TranslationError:
    with pytest.raises(c.TranslationError) as info:
        decode(**fields)
    return info.value


def assert_valid(raw: bytes, *, extra: bool = False) -> dict[str, Any]:
    """The body passes the SDK's request types; unknown fields too only when `extra`."""
    parsed, problem = validate_body("chat", raw, forbid_extra=not extra)
    assert problem is None, problem.detail
    assert isinstance(parsed, dict)
    return parsed


def sdk(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def answering(content: bytes, status: int = 200, *, stream: bool = False) -> openai.OpenAI:
    kind = "text/event-stream" if stream else "application/json"
    return sdk(lambda _: httpx2.Response(status, content=content,
                                         headers={"content-type": kind}))


# --- caller side: requests --------------------------------------------------------------------


def test_system_and_developer_messages_fold_into_the_system_prompt_in_order() -> None:
    req = decode(messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "salut"},
        {"role": "system", "content": "Now answer in German."},  # mid-history: folded too
        {"role": "user", "content": "again"},
    ])
    assert req.system == [c.Text("You are terse."), c.Text("Answer in French."),
                          c.Text("Now answer in German.")]
    assert req.messages == [
        c.Message("user", [c.Text("hi")]),
        c.Message("assistant", [c.Text("salut")]),
        c.Message("user", [c.Text("again")]),
    ]


def test_images_data_urls_become_base64_and_http_urls_stay_urls() -> None:
    req = decode(messages=[{"role": "user", "content": [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                            "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}])
    assert req.messages[0].content == [
        c.Text("compare"),
        c.Image(media_type="image/png", data=PNG),
        c.Image(url="https://example.com/cat.jpg"),
    ]


def test_pdf_file_parts_become_documents_and_file_ids_are_refused() -> None:
    req = decode(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf",
                                  "file_data": f"data:application/pdf;base64,{PDF}"}},
        {"type": "file", "file": {"filename": "b.pdf", "file_data": PDF}},  # bare base64
    ]}])
    assert req.messages[0].content == [
        c.Document(media_type="application/pdf", data=PDF, title="a.pdf"),
        c.Document(media_type="application/pdf", data=PDF, title="b.pdf"),
    ]
    err = refused(messages=[{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "file", "file": {"file_id": "file-abc"}}]}])
    assert isinstance(err, c.Unsupported)
    assert err.param == "messages[0].content[1]"


def test_audio_input_is_refused_naming_the_part() -> None:
    err = refused(messages=[{"role": "user", "content": [
        {"type": "text", "text": "listen"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert isinstance(err, c.Unsupported)
    assert err.param == "messages[0].content[1]"


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0]"),
])
def test_behaviour_no_other_dialect_can_express_is_refused(fields: dict[str, Any],
                                                           param: str) -> None:
    err = refused(messages=[{"role": "user", "content": "hi"}], **fields)
    assert isinstance(err, c.Unsupported)
    assert err.param == param


def test_hints_are_dropped_quietly_and_unknown_fields_never_fail() -> None:
    req = decode(messages=[{"role": "user", "content": "hi", "name": "ann"}], n=1,
                 logprobs=False, presence_penalty=0, user="u-1", metadata={"k": "v"},
                 store=True, service_tier="flex", prediction={"type": "content", "content": "x"},
                 prompt_cache_key="k", verbosity="low", some_future_field={"a": [1]})
    assert req.messages == [c.Message("user", [c.Text("hi")])]


def test_wrong_types_name_the_field() -> None:
    err = refused(messages=[{"role": "user", "content": 5}])
    assert err.param == "messages[0].content"
    assert refused(messages=[{"role": "robot", "content": "x"}]).param == "messages[0].role"
    assert refused().param == "messages"
    assert refused(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {}}]}]).param == "messages[0].content[0].image_url.url"
    with pytest.raises(c.TranslationError):
        to_canonical_request(b"{not json")


def test_sampling_limits_and_stop() -> None:
    req = decode(messages=[], max_tokens=100, max_completion_tokens=200, temperature=0.2,
                 top_p=0.9, seed=7, stop="END", stream=True,
                 stream_options={"include_usage": True})
    assert (req.max_tokens, req.temperature, req.top_p, req.seed) == (200, 0.2, 0.9, 7)
    assert req.stop == ["END"]
    assert req.stream and req.stream_usage
    assert decode(messages=[], max_tokens=50, stop=["a", "b"]).stop == ["a", "b"]
    assert decode(messages=[], max_tokens=50).max_tokens == 50


def test_parallel_tool_call_history_makes_one_result_turn_with_names() -> None:
    req = decode(messages=[
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "24C"}]},
        {"role": "user", "content": "and Oslo?"},
    ], tools=[{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                 "parameters": WEATHER, "strict": True}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False)
    assert req.messages[1] == c.Message("assistant", [
        c.ToolCall("call_a", "get_weather", '{"city":"Paris"}'),
        c.ToolCall("call_b", "get_weather", '{"city":"Rome"}'),
    ])
    assert req.messages[2] == c.Message("user", [
        c.ToolResult("call_a", [c.Text("18C")], name="get_weather"),
        c.ToolResult("call_b", [c.Text("24C")], name="get_weather"),
        c.Text("and Oslo?"),
    ])
    assert len(req.messages) == 3
    assert req.tools == [c.Tool("get_weather", "Weather", WEATHER)]
    assert req.tool_choice == c.ToolChoice(mode="tool", name="get_weather", parallel=False)


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", c.ToolChoice(mode="auto")),
    ("none", c.ToolChoice(mode="none")),
    ("required", c.ToolChoice(mode="required")),
])
def test_tool_choice_modes(choice: str, expected: c.ToolChoice) -> None:
    assert decode(messages=[], tool_choice=choice).tool_choice == expected


def test_allowed_tools_choice_keeps_only_the_allowed_tools() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b", "c")]
    req = decode(messages=[], tools=tools, tool_choice={"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "b"}}]}})
    assert [t.name for t in req.tools] == ["b"]
    assert req.tool_choice == c.ToolChoice(mode="required")


def test_legacy_functions_pair_calls_and_results_by_name() -> None:
    req = decode(messages=[
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None,
         "function_call": {"name": "now", "arguments": "{}"}},
        {"role": "function", "name": "now", "content": "12:00"},
    ], functions=[{"name": "now", "parameters": {"type": "object"}}], function_call="auto")
    call = req.messages[1].content[0]
    assert isinstance(call, c.ToolCall)
    assert req.messages[2].content == [c.ToolResult(call.id, [c.Text("12:00")], name="now")]
    assert req.tool_choice == c.ToolChoice(mode="auto")


def test_tool_call_ids_give_back_the_provider_data_they_carry() -> None:
    packed = c.pack_call_id("call_1", {"thoughtSignature": "sig=="})
    req = decode(messages=[
        {"role": "assistant", "tool_calls": [
            {"id": packed, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": packed, "content": "ok"},
    ])
    assert req.messages[0].content == [
        c.ToolCall("call_1", "f", "{}", {"thoughtSignature": "sig=="})]
    assert req.messages[1].content == [c.ToolResult("call_1", [c.Text("ok")], name="f")]


def test_reasoning_echoed_back_as_thinking_blocks_keeps_signatures() -> None:
    req = decode(messages=[{"role": "assistant", "content": "4",
                            "reasoning_content": "2+2 is 4",
                            "thinking_blocks": [
                                {"type": "thinking", "thinking": "2+2 is 4", "signature": "EqQB"},
                                {"type": "redacted_thinking", "data": "ENCRYPTED"}]}])
    assert req.messages[0].content == [
        c.Thinking("2+2 is 4", "EqQB"), c.Thinking(redacted="ENCRYPTED"), c.Text("4")]
    plain = decode(messages=[{"role": "assistant", "content": "4", "reasoning_content": "hmm"}])
    assert plain.messages[0].content == [c.Thinking("hmm"), c.Text("4")]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"reasoning_effort": "low"}, c.Reasoning(effort="low")),
    ({"reasoning_effort": "minimal"}, c.Reasoning(effort="minimal")),
    ({"reasoning_effort": "xhigh"}, c.Reasoning(effort="high")),
    ({"reasoning_effort": "none"}, c.Reasoning(enabled=False)),
    ({"reasoning": {"effort": "medium", "exclude": True}},
     c.Reasoning(effort="medium", include_thoughts=False)),
    ({"reasoning": {"max_tokens": 2000}}, c.Reasoning(budget_tokens=2000)),
    ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, c.Reasoning(budget_tokens=4096)),
    ({"thinking": {"type": "disabled"}}, c.Reasoning(enabled=False)),
    ({}, None),
])
def test_reasoning_controls(fields: dict[str, Any], expected: c.Reasoning | None) -> None:
    assert decode(messages=[], **fields).reasoning == expected


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "required": ["a"], "additionalProperties": False}
    req = decode(messages=[], response_format={"type": "json_schema", "json_schema": {
        "name": "answer", "schema": schema, "strict": True}})
    assert req.response_format == c.ResponseFormat("json_schema", schema, "answer", True)
    assert decode(messages=[], response_format={"type": "json_object"}).response_format \
        == c.ResponseFormat("json_object")
    assert decode(messages=[], response_format={"type": "text"}).response_format is None


# --- provider side: requests ------------------------------------------------------------------


def full_request(**overrides: Any) -> c.Request:
    fields: dict[str, Any] = {
        "model": "claude-opus-4-8",
        "system": [c.Text("You are Claude Code."), c.Text("Be brief.")],
        "messages": [
            c.Message("user", [c.Text("look"), c.Image(media_type="image/png", data=PNG),
                               c.Image(url="https://example.com/a.png"),
                               c.Document(media_type="application/pdf", data=PDF, title="r.pdf"),
                               c.Document(text="plain notes")]),
            c.Message("assistant", [
                c.Thinking("anthropic thoughts", "sig", "anthropic"),
                c.Text("Checking."),
                c.ToolCall("toolu_1", "get_weather", '{"city":"Paris"}'),
                c.ToolCall("toolu_2", "get_weather", '{"city":"Rome"}'),
            ]),
            c.Message("user", [
                c.ToolResult("toolu_1", [c.Text("18C")]),
                c.ToolResult("toolu_2", [c.Text("no such city")], is_error=True),
                c.Text("thanks"),
            ]),
        ],
        "max_tokens": 1024,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n\nHuman:"],
        "tools": [c.Tool("get_weather", "Weather of a city", WEATHER)],
        "tool_choice": c.ToolChoice(mode="tool", name="get_weather", parallel=False),
        "response_format": c.ResponseFormat("json_schema", WEATHER, None, True),
        "reasoning": c.Reasoning(budget_tokens=31999),
        "seed": 3,
    }
    fields.update(overrides)
    return c.Request(**fields)


def test_provider_body_validates_against_the_sdk_types() -> None:
    raw = from_canonical_request(full_request(), model="gpt-5")
    sent = assert_valid(raw)
    assert sent["model"] == "gpt-5"
    assert sent["messages"][0] == {"role": "system",
                                   "content": "You are Claude Code.\n\nBe brief."}
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "file", "file": {"filename": "r.pdf",
                                  "file_data": f"data:application/pdf;base64,{PDF}"}},
        {"type": "text", "text": "plain notes"},
    ]
    assistant = sent["messages"][2]
    assert assistant["content"] == "Checking."
    assert "reasoning_content" not in assistant  # Anthropic's signed thinking stays home
    assert [t["id"] for t in assistant["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert sent["messages"][3:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": "thanks"},
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": WEATHER, "strict": True}}
    assert sent["reasoning_effort"] == "high"
    assert (sent["max_tokens"], sent["stop"], sent["seed"]) == (1024, ["\n\nHuman:"], 3)
    assert "stream" not in sent
    assert "stream_options" not in sent


def test_a_stream_always_asks_for_usage() -> None:
    sent = assert_valid(from_canonical_request(full_request(stream=True), model="m"))
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_unsigned_thinking_goes_back_as_reasoning_content() -> None:
    # DeepSeek answers 400 when a tool-call turn's reasoning_content is not passed back.
    req = full_request(messages=[
        c.Message("user", [c.Text("q")]),
        c.Message("assistant", [c.Thinking("let me call"), c.ToolCall("call_1", "f", "")]),
        c.Message("user", [c.ToolResult("call_1", [c.Text("r")])]),
    ], tools=[c.Tool("f")], tool_choice=None, response_format=None, reasoning=None)
    sent = assert_valid(from_canonical_request(req, model="deepseek-reasoner"), extra=True)
    assert sent["messages"][2] == {"role": "assistant", "reasoning_content": "let me call",
                                   "tool_calls": [{"id": "call_1", "type": "function",
                                                   "function": {"name": "f",
                                                                "arguments": "{}"}}]}


def test_tool_results_images_follow_the_tool_message() -> None:
    req = c.Request(model="m", messages=[
        c.Message("assistant", [c.ToolCall("c1", "screenshot", "{}")]),
        c.Message("user", [c.ToolResult("c1", [c.Text("here"),
                                               c.Image(media_type="image/jpeg", data=PNG)])]),
    ])
    sent = assert_valid(from_canonical_request(req, model="m"))
    assert sent["messages"][1:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "here"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": f"data:image/jpeg;base64,{PNG}"}}]},
    ]


def test_provider_data_stays_out_of_upstream_ids() -> None:
    """A Gemini thought signature means nothing to an OpenAI-dialect provider, and OpenAI
    refuses tool call ids over 40 characters (regression: string_above_max_length)."""
    data = {"thoughtSignature": "abc" * 40}
    req = c.Request(model="m", messages=[
        c.Message("assistant", [c.ToolCall("c1", "f", "{}", data)]),
        c.Message("user", [c.ToolResult("c1", [c.Text("ok")])]),
    ])
    sent = assert_valid(from_canonical_request(req, model="m"))
    assert sent["messages"][0]["tool_calls"][0]["id"] == "c1"
    assert sent["messages"][1]["tool_call_id"] == "c1"


def test_a_document_by_url_is_refused_rather_than_fetched() -> None:
    req = c.Request(model="m", messages=[
        c.Message("user", [c.Text("read"), c.Document(url="https://example.com/x.pdf")])])
    with pytest.raises(c.Unsupported) as info:
        from_canonical_request(req, model="m")
    assert info.value.param == "messages[0].content[1]"


def test_base64_text_documents_become_text() -> None:
    data = base64.b64encode(b"hello doc").decode()
    req = c.Request(model="m", messages=[
        c.Message("user", [c.Document(media_type="text/plain", data=data)])])
    sent = assert_valid(from_canonical_request(req, model="m"))
    assert sent["messages"][0]["content"] == "hello doc"


@pytest.mark.parametrize(("reasoning", "effort"), [
    (c.Reasoning(budget_tokens=128), "minimal"),
    (c.Reasoning(budget_tokens=1024), "low"),
    (c.Reasoning(budget_tokens=2048), "medium"),
    (c.Reasoning(budget_tokens=4096), "high"),
    (c.Reasoning(effort="low", budget_tokens=9999), "low"),
    (c.Reasoning(), None),
    (c.Reasoning(enabled=False, budget_tokens=4096), None),
])
def test_reasoning_effort_buckets(reasoning: c.Reasoning, effort: str | None) -> None:
    sent = assert_valid(from_canonical_request(
        c.Request(model="m", messages=[], reasoning=reasoning), model="o4"))
    assert sent.get("reasoning_effort") == effort


def test_tool_choice_is_only_sent_with_tools() -> None:
    req = c.Request(model="m", messages=[c.Message("user", [c.Text("hi")])],
                    tool_choice=c.ToolChoice(mode="none", parallel=False))
    sent = assert_valid(from_canonical_request(req, model="m"))
    assert "tool_choice" not in sent
    assert "parallel_tool_calls" not in sent


def test_request_path() -> None:
    assert request_path(model="gpt-4o", stream=True) == b"/chat/completions"


# --- answers ----------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str | None = "stop", **extra: Any) -> bytes:
    return json.dumps({
        "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", **message},
                     "logprobs": None, "finish_reason": finish}],
        **extra}).encode()


@pytest.mark.parametrize(("finish", "expected"), [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
    ("content_filter", "content_filter"), ("function_call", "tool_calls"), ("error", "error"),
    (None, "stop"),
])
def test_every_finish_reason_maps(finish: str | None, expected: c.FinishReason) -> None:
    assert to_canonical_response(completion({"content": "x"}, finish), model="m").finish \
        == expected


def test_answer_with_reasoning_tool_calls_and_usage_details() -> None:
    packed = c.pack_call_id("call_7", {"thoughtSignature": "t"})
    resp = to_canonical_response(completion(
        {"content": None, "reasoning_content": "I should look it up",
         "tool_calls": [{"id": packed, "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        "tool_calls",
        usage={"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
               "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 25}}), model="m")
    assert resp.id == "chatcmpl-9"
    assert resp.model == "gpt-4o-2024"
    assert resp.content == [
        c.Thinking("I should look it up"),
        c.ToolCall("call_7", "get_weather", '{"city": "Oslo"}', {"thoughtSignature": "t"}),
    ]
    assert resp.finish == "tool_calls"
    assert resp.usage == c.Usage(input_tokens=100, output_tokens=40, cached_tokens=64,
                                 reasoning_tokens=25)


def test_deepseek_and_openrouter_extensions() -> None:
    deepseek = to_canonical_response(completion(
        {"content": "hi", "reasoning_content": "think"},
        usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
               "prompt_cache_hit_tokens": 8, "prompt_cache_miss_tokens": 2}), model="m")
    assert deepseek.content == [c.Thinking("think"), c.Text("hi")]
    assert deepseek.usage.cached_tokens == 8
    openrouter = to_canonical_response(completion({"content": "hi", "reasoning": "hmm"}),
                                       model="m")
    assert openrouter.content == [c.Thinking("hmm"), c.Text("hi")]


def test_refusals_and_tool_calls_under_stop() -> None:
    refusal = to_canonical_response(completion({"content": None, "refusal": "I can't."}),
                                    model="m")
    assert (refusal.content, refusal.finish) == ([c.Text("I can't.")], "refusal")
    ollama = to_canonical_response(completion({"content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        model="m")
    assert ollama.finish == "tool_calls"
    with pytest.raises(c.TranslationError):
        to_canonical_response(b"<html>", model="m")


@pytest.mark.parametrize(("finish", "expected"), [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
    ("content_filter", "content_filter"), ("refusal", "content_filter"), ("error", "stop"),
])
def test_caller_answer_parses_with_the_sdk(finish: c.FinishReason, expected: str) -> None:
    resp = c.Response(id="msg_01", model="claude", content=[c.Text("Hello")], finish=finish,
                      usage=c.Usage(10, 5, 4, 2, 1))
    parsed = ChatCompletion.model_validate_json(
        from_canonical_response(resp, model="gpt-4o", created=1_700_000_000))
    assert parsed.id == "chatcmpl-msg_01"
    assert (parsed.model, parsed.created) == ("gpt-4o", 1_700_000_000)
    choice = parsed.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("Hello", expected)
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens,
            parsed.usage.total_tokens) == (10, 5, 15)
    assert parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 4
    assert parsed.usage.completion_tokens_details is not None
    assert parsed.usage.completion_tokens_details.reasoning_tokens == 1


def test_caller_answer_with_tool_calls_and_signed_thinking() -> None:
    data = {"thoughtSignature": "x"}
    resp = c.Response(id="r", model="m", finish="tool_calls", content=[
        c.Thinking("plan", "SIG", "anthropic"), c.Thinking(redacted="RED"),
        c.ToolCall("toolu_1", "f", '{"a":1}', data), c.ToolCall("toolu_2", "g", "{}")])
    raw = from_canonical_response(resp, model="gpt-4o")
    client = answering(raw)
    got = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                     "content": "x"}])
    message = got.choices[0].message
    assert message.content is None
    assert message.refusal is None
    assert message.tool_calls is not None
    assert [(t.id, t.function.name, t.function.arguments) for t in message.tool_calls  # type: ignore[union-attr]
            ] == [(c.pack_call_id("toolu_1", data), "f", '{"a":1}'), ("toolu_2", "g", "{}")]
    wire = json.loads(raw)["choices"][0]["message"]
    assert wire["reasoning_content"] == "plan"
    assert wire["thinking_blocks"] == [
        {"type": "thinking", "thinking": "plan", "signature": "SIG"},
        {"type": "redacted_thinking", "data": "RED"}]
    # The client echoes the message back: the signature and the call data return.
    again = decode(messages=[wire])
    assert again.messages[0].content == [
        c.Thinking("plan", "SIG"), c.Thinking(redacted="RED"),
        c.ToolCall("toolu_1", "f", '{"a":1}', data), c.ToolCall("toolu_2", "g", "{}")]


def test_unsigned_thinking_has_no_thinking_blocks() -> None:
    resp = c.Response(id="r", model="m", content=[c.Thinking("hmm"), c.Text("ok")])
    wire = json.loads(from_canonical_response(resp, model="m"))["choices"][0]["message"]
    assert wire["reasoning_content"] == "hmm"
    assert "thinking_blocks" not in wire


# --- streams: provider side -------------------------------------------------------------------

HEAD = '"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1,"model":"deepseek-v4"'


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]
    return "{" + HEAD + ',"choices":' + json.dumps(choices) + ',"usage":' \
        + json.dumps(usage) + "}"


def call(index: int, id_: str | None = None, name: str | None = None,
         args: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index}
    if id_ is not None:
        out.update(id=id_, type="function")
    out["function"] = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
    return {"tool_calls": [out]}


USAGE = {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50,
         "prompt_tokens_details": {"cached_tokens": 16},
         "completion_tokens_details": {"reasoning_tokens": 7}}

TRANSCRIPT = [
    chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
    chunk({"reasoning_content": "User wants "}),
    chunk({"reasoning_content": "two cities."}),
    chunk({"content": "Let me check "}),
    chunk({"content": "both."}),
    chunk(call(0, "call_p", "get_weather", "")),
    chunk(call(0, args='{"ci')),
    chunk(call(0, args='ty": "Par')),
    chunk(call(0, args='is"}')),
    chunk(call(1, "call_r", "get_weather", '{"city"')),
    chunk(call(1, args=': "Rome"}')),
    chunk({}, "tool_calls"),
    chunk(None, usage=USAGE),
    "[DONE]",
]

EXPECTED = [
    c.StreamStart("chatcmpl-s1", "deepseek-v4"),
    c.BlockStart(0, "thinking"),
    c.ThinkingDelta(0, "User wants "),
    c.ThinkingDelta(0, "two cities."),
    c.BlockStop(0),
    c.BlockStart(1, "text"),
    c.TextDelta(1, "Let me check "),
    c.TextDelta(1, "both."),
    c.BlockStop(1),
    c.BlockStart(2, "tool_call", "call_p", "get_weather"),
    c.ToolArgsDelta(2, '{"ci'),
    c.ToolArgsDelta(2, 'ty": "Par'),
    c.ToolArgsDelta(2, 'is"}'),
    c.BlockStop(2),
    c.BlockStart(3, "tool_call", "call_r", "get_weather"),
    c.ToolArgsDelta(3, '{"city"'),
    c.ToolArgsDelta(3, ': "Rome"}'),
    c.BlockStop(3),
    c.StreamEnd("tool_calls", usage=c.Usage(input_tokens=30, output_tokens=20,
                                            cached_tokens=16, reasoning_tokens=7)),
]


def run_decoder(datas: list[str], *, close: bool = True) -> list[c.Event]:
    decoder = StreamDecoder(model="deepseek-v4")
    events: list[c.Event] = []
    for data in datas:
        events += decoder.feed(SSEEvent(data))
    if close:
        events += decoder.close()
    return events


def test_decoder_reads_a_recorded_stream_event_by_event() -> None:
    assert run_decoder(TRANSCRIPT) == EXPECTED


@pytest.mark.parametrize("split", ["whole", "byte"])
def test_decoder_behind_the_sse_decoder_whatever_the_network_chunks(split: str) -> None:
    raw = "".join(f"data: {d}\n\n" for d in TRANSCRIPT).encode()
    pieces = [raw] if split == "whole" else [raw[i:i + 1] for i in range(len(raw))]
    sse, decoder = SSEDecoder(), StreamDecoder(model="deepseek-v4")
    events: list[c.Event] = []
    for piece in pieces:
        for event in sse.feed(piece):
            events += decoder.feed(event)
    assert events + decoder.close() == EXPECTED


def test_openrouter_reasoning_field_and_comments() -> None:
    events = run_decoder([chunk({"role": "assistant", "reasoning": "hmm"}),
                          chunk({"content": "ok"}, "stop"), "[DONE]"])
    assert events[1:4] == [c.BlockStart(0, "thinking"), c.ThinkingDelta(0, "hmm"),
                           c.BlockStop(0)]
    assert events[-1] == c.StreamEnd("stop")


def test_an_error_event_mid_stream() -> None:
    events = run_decoder([chunk({"content": "The"}),
                          '{"error": {"message": "The server had an error", '
                          '"type": "server_error"}}', "[DONE]"])
    assert events[-1] == c.StreamError(c.CanonicalError(500, "The server had an error",
                                                        "server"))
    openrouter = run_decoder([chunk({"content": "x"}),
                              "{" + HEAD + ',"error":{"code":429,"message":"Provider rate '
                              'limited"},"choices":[{"index":0,"delta":{"content":""},'
                              '"finish_reason":"error"}]}'])
    assert openrouter[-1] == c.StreamError(c.CanonicalError(429, "Provider rate limited",
                                                            "rate_limit"))


def test_a_truncated_stream_is_an_error_but_a_finished_one_without_done_is_not() -> None:
    cut = run_decoder(TRANSCRIPT[:8])
    assert isinstance(cut[-1], c.StreamError)
    assert cut[-1].error.status == 502
    finished = run_decoder(TRANSCRIPT[:12])
    assert finished[-1] == c.StreamEnd("tool_calls")


def test_interleaved_parallel_call_arguments_fail_loudly() -> None:
    events = run_decoder([chunk(call(0, "a", "f", "{")), chunk(call(1, "b", "g", "{")),
                          chunk(call(0, args="}"))])
    assert isinstance(events[-1], c.StreamError)


def test_decoder_unpacks_provider_data_from_ids() -> None:
    packed = c.pack_call_id("call_x", {"k": "v"})
    events = run_decoder([chunk(call(0, packed, "f", "{}")), chunk({}, "tool_calls"), "[DONE]"])
    assert events[1] == c.BlockStart(0, "tool_call", "call_x", "f", {"k": "v"})


# --- streams: caller side ---------------------------------------------------------------------

CANONICAL_STREAM: list[c.Event] = [
    c.StreamStart("msg_01", "claude-opus-4-8"),
    c.BlockStart(0, "thinking"),
    c.ThinkingDelta(0, "Two cities, "),
    c.ThinkingDelta(0, "two calls."),
    c.ThinkingDelta(0, signature="EqQBsig", source="anthropic"),
    c.BlockStop(0),
    c.BlockStart(1, "text"),
    c.TextDelta(1, "Checking "),
    c.TextDelta(1, "both."),
    c.BlockStop(1),
    c.BlockStart(2, "tool_call", "toolu_p", "get_weather", {"thoughtSignature": "g"}),
    c.ToolArgsDelta(2, '{"city": '),
    c.ToolArgsDelta(2, '"Paris"}'),
    c.BlockStop(2),
    c.BlockStart(3, "tool_call", "toolu_r", "get_weather"),
    c.ToolArgsDelta(3, '{"city": "Rome"}'),
    c.BlockStop(3),
    c.StreamEnd("tool_calls", usage=c.Usage(30, 20, 16, 0, 7)),
]


def encode_all(events: list[c.Event], **kwargs: Any) -> bytes:
    encoder = StreamEncoder(model="gpt-4o", **kwargs)
    return b"".join(encoder.feed(e) for e in events) + encoder.close()


def datas(raw: bytes) -> list[str]:
    return [e.data for e in SSEDecoder().feed(raw)]


@pytest.mark.parametrize("include_usage", [True, False])
def test_encoded_chunks_parse_and_reassemble(include_usage: bool) -> None:
    raw = encode_all(CANONICAL_STREAM, include_usage=include_usage, created=1_700_000_000)
    events = datas(raw)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in events[:-1]]
    for data in events[:-1]:
        assert ('"usage"' in data) is include_usage
    assert {(k.id, k.model, k.created) for k in chunks} == {
        ("chatcmpl-msg_01", "gpt-4o", 1_700_000_000)}
    assert chunks[0].choices[0].delta.role == "assistant"
    body = [k for k in chunks if k.choices]
    text = "".join(k.choices[0].delta.content or "" for k in body)
    reasoning = "".join(getattr(k.choices[0].delta, "reasoning_content", None) or ""
                        for k in body)
    calls: dict[int, dict[str, str]] = {}
    for k in body:
        for tc in k.choices[0].delta.tool_calls or ():
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += tc.id or ""
            assert tc.function is not None
            entry["name"] += tc.function.name or ""
            entry["arguments"] += tc.function.arguments or ""
    assert text == "Checking both."
    assert reasoning == "Two cities, two calls."
    assert calls == {
        0: {"id": c.pack_call_id("toolu_p", {"thoughtSignature": "g"}), "name": "get_weather",
            "arguments": '{"city": "Paris"}'},
        1: {"id": "toolu_r", "name": "get_weather", "arguments": '{"city": "Rome"}'},
    }
    assert [k.choices[0].finish_reason for k in body][-1] == "tool_calls"
    if include_usage:
        last = chunks[-1]
        assert last.choices == []
        assert last.usage is not None
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (30, 20)
        assert last.usage.completion_tokens_details is not None
        assert last.usage.completion_tokens_details.reasoning_tokens == 7
    else:
        assert body[-1] is chunks[-1]


def test_signature_goes_out_as_a_whole_thinking_block() -> None:
    raw = encode_all(CANONICAL_STREAM)
    blocks = [json.loads(d)["choices"][0]["delta"]["thinking_blocks"]
              for d in datas(raw) if "thinking_blocks" in d]
    assert blocks == [[{"type": "thinking", "thinking": "Two cities, two calls.",
                        "signature": "EqQBsig"}]]


def test_the_sdk_streams_our_chunks_and_assembles_the_answer() -> None:
    client = answering(encode_all(CANONICAL_STREAM, include_usage=True), stream=True)
    with client.chat.completions.stream(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking both."
    assert message.tool_calls is not None
    assert [(t.function.name, t.function.arguments) for t in message.tool_calls] == [
        ("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
    assert final.usage is not None
    assert final.usage.total_tokens == 50


def test_a_mid_stream_error_reaches_the_sdk_as_an_api_error() -> None:
    events: list[c.Event] = [
        c.StreamStart("m", "x"), c.BlockStart(0, "text"), c.TextDelta(0, "The"),
        c.StreamError(c.CanonicalError(529, "Overloaded", "overloaded"))]
    raw = encode_all(events)
    assert not raw.endswith(b"data: [DONE]\n\n")  # OpenAI ends the stream with the error
    client = answering(raw, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="Overloaded"):  # noqa: PT012
        for k in client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True):
            got.append(k.choices[0].delta.content)
    assert got == ["", "The"]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request"), (401, "authentication"), (403, "permission"),
    (404, "not_found"), (413, "request_too_large"), (422, "invalid_request"),
    (429, "rate_limit"), (500, "server"), (502, "server"), (503, "overloaded"),
    (504, "timeout"), (418, "invalid_request"), (599, "server"),
])
def test_upstream_status_to_kind(status: int, kind: str) -> None:
    err = to_canonical_error(status, b'{"error": {"message": "boom", "type": "x", '
                                     b'"param": "messages", "code": null}}')
    assert (err.status, err.kind, err.message, err.param) == (status, kind, "boom", "messages")


def test_openrouter_rate_limit_wrapped_in_a_500() -> None:
    err = to_canonical_error(500, b'{"error": {"code": 429, "message": "Rate limit exceeded: '
                                  b'free-models-per-min."}}')
    assert (err.status, err.kind) == (429, "rate_limit")


def test_error_shapes_of_compatible_servers() -> None:
    vllm = to_canonical_error(400, b'{"object": "error", "message": "max_tokens too large", '
                                   b'"type": "BadRequestError", "code": 400}')
    assert (vllm.kind, vllm.message) == ("invalid_request", "max_tokens too large")
    html = to_canonical_error(502, b"<html>Bad Gateway</html>")
    assert (html.status, html.kind) == (502, "server")
    assert "502" in html.message


@pytest.mark.parametrize(("kind", "status", "type_", "code"), [
    ("invalid_request", 400, "invalid_request_error", None),
    ("request_too_large", 413, "invalid_request_error", None),
    ("authentication", 401, "authentication_error", "invalid_api_key"),
    ("permission", 403, "permission_error", None),
    ("not_found", 404, "not_found_error", None),
    ("rate_limit", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("overloaded", 503, "server_error", None),
    ("server", 500, "server_error", None),
    ("timeout", 504, "server_error", None),
])
def test_canonical_error_to_openai(kind: Any, status: int, type_: str,
                                   code: str | None) -> None:
    given = 529 if kind == "overloaded" else status
    got_status, raw = from_canonical_error(c.CanonicalError(given, "msg", kind, "model"))
    assert got_status == status
    assert json.loads(raw) == {"error": {"message": "msg", "type": type_, "param": "model",
                                         "code": code}}


def test_the_sdk_raises_the_class_its_status_names() -> None:
    status, raw = from_canonical_error(c.CanonicalError(429, "slow down", "rate_limit"))
    with pytest.raises(openai.RateLimitError, match="slow down"):
        answering(raw, status).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}])


def test_stream_error_event_round_trips() -> None:
    err = c.CanonicalError(429, "slow down", "rate_limit")
    raw = stream_error_event(err)
    assert raw.startswith(b"data: {") and raw.endswith(b"\n\n")
    decoder = StreamDecoder(model="m")
    decoder.feed(SSEEvent(chunk({"content": "x"})))
    assert decoder.feed(SSEEvent(datas(raw)[0])) == [c.StreamError(err)]


# --- round trips ------------------------------------------------------------------------------


def test_request_round_trip() -> None:
    req = full_request(
        system=[c.Text("Be brief.")],
        messages=[
            c.Message("user", [c.Text("look"), c.Image(media_type="image/png", data=PNG),
                               c.Image(url="https://example.com/a.png"),
                               c.Document(media_type="application/pdf", data=PDF,
                                          title="r.pdf")]),
            c.Message("assistant", [c.Thinking("plan"), c.Text("Checking."),
                                    c.ToolCall("c1", "get_weather", '{"city":"Paris"}'),
                                    c.ToolCall("c2", "get_weather", '{"city":"Rome"}')]),
            c.Message("user", [c.ToolResult("c1", [c.Text("18C")], name="get_weather"),
                               c.ToolResult("c2", [c.Text("24C")], name="get_weather"),
                               c.Text("thanks")]),
        ],
        top_k=None, reasoning=c.Reasoning(effort="medium"),
        response_format=c.ResponseFormat("json_schema", WEATHER, "weather", True),
        stream=True, stream_usage=True)
    assert to_canonical_request(from_canonical_request(req, model=req.model)) == req


def test_response_round_trip() -> None:
    resp = c.Response(id="chatcmpl-1", model="gpt-4o", finish="tool_calls", content=[
        c.Thinking("plan", "SIG"), c.Text("Checking."),
        c.ToolCall("c1", "f", '{"a": 1}', {"thoughtSignature": "s"})],
        usage=c.Usage(10, 5, 4, 2, 1))
    back = to_canonical_response(from_canonical_response(resp, model="gpt-4o"), model="gpt-4o")
    assert back == resp


def test_stream_round_trip() -> None:
    raw = encode_all(CANONICAL_STREAM, include_usage=True)
    decoder = StreamDecoder(model="gpt-4o")
    events: list[c.Event] = []
    for event in SSEDecoder().feed(raw):
        events += decoder.feed(event)
    events += decoder.close()
    # Ids gain OpenAI's prefix and a signature loses its source (this dialect cannot say it);
    # the rest survives as it was.
    expected = [c.ThinkingDelta(e.index, signature=e.signature)
                if isinstance(e, c.ThinkingDelta) and e.signature else e
                for e in CANONICAL_STREAM]
    expected[0] = c.StreamStart("chatcmpl-msg_01", "gpt-4o")
    expected[-1] = c.StreamEnd("tool_calls", usage=c.Usage(30, 20, 16, 0, 7))
    assert events == expected
