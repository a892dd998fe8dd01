"""The Gemini adapter: requests, answers, streams and errors, both ways, with no sockets.

Wire facts come from the Gemini API reference and the google-genai SDK itself: bodies the SDK
builds are captured through an `httpx.MockTransport`, and what we produce is parsed by the SDK
(the same transport answering with our bytes) or validated by its pydantic types, through
the fake provider's request checks (`tests/fakes/gemini_checks.validate_body`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from adapters import gemini
from adapters.canonical import (
    BlockStart,
    BlockStop,
    CanonicalError,
    Document,
    Event,
    Image,
    Message,
    Reasoning,
    Request,
    Response,
    ResponseFormat,
    StreamEnd,
    StreamError,
    StreamStart,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolArgsDelta,
    ToolCall,
    ToolChoice,
    ToolResult,
    TranslationError,
    Unsupported,
    Usage,
    pack_call_id,
)
from adapters.gemini import schema as gschema
from adapters.gemini.request import SKIP_SIGNATURE
from adapters.gemini.wire import unwrap_thinking, wrap_thinking
from adapters.sse import SSEDecoder, SSEEvent
from tests.fakes.gemini_checks import validate_body

MODEL = "gemini-2.5-flash"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --- the real SDK, over a mock transport --------------------------------------------------------


class MockGemini:
    """A google-genai client whose HTTP goes to `answer(request) -> httpx.Response`."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer or (lambda _: httpx.Response(200, content=b"{}"))
        self.http = httpx.Client(transport=httpx.MockTransport(self._handle))
        self.client = genai.Client(api_key="k", http_options=types.HttpOptions(
            base_url="http://gemini.test", api_version="v1beta", httpx_client=self.http))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request)

    def body(self, index: int = -1) -> bytes:
        return self.requests[index].content

    def __enter__(self) -> MockGemini:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()


def answer_with(body: bytes, status: int = 200, sse: bool = False
                ) -> Callable[[httpx.Request], httpx.Response]:
    content_type = "text/event-stream" if sse else "application/json"
    return lambda _: httpx.Response(status, content=body,
                                    headers={"content-type": content_type})


def check_provider_body(body: bytes, *, signatures: bool = True) -> dict[str, Any]:
    """What the fake provider checks: the SDK's pydantic types (camelCase aliases, unknown
    names refused), the Developer API's extra rules, the function-turn rules and Gemini 3's
    signature rule; then each content once more through `types.Content`."""
    parsed, req, problem = validate_body("generateContent", body, require_signatures=signatures)
    assert problem is None, problem.message
    assert req is not None
    for content in parsed["contents"]:
        types.Content.model_validate(content)
    return dict(parsed)


# --- schema cleaning ---------------------------------------------------------------------------


def test_schema_subset_uppercases_types_and_turns_null_unions_into_nullable() -> None:
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "file"},
            "limit": {"type": ["integer", "null"], "minimum": 1},
            "mode": {"anyOf": [{"type": "string", "enum": ["r", "w"]}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["path", "ghost"],
    }
    assert gschema.to_gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "path": {"type": "STRING", "description": "file"},
            "limit": {"type": "INTEGER", "nullable": True, "minimum": 1},
            "mode": {"nullable": True, "type": "STRING", "enum": ["r", "w"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3},
        },
        # a required name with no property is dropped: Gemini checks them against properties
        "required": ["path"],
    }


def test_schema_inlines_refs_and_drops_annotations() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "to": {"$ref": "#/$defs/Address", "description": "recipient"},
            "cc": {"type": "array", "items": {"$ref": "#/definitions/Address"}},
            "when": {"type": "string", "format": "date-time", "default": "now",
                     "examples": ["2025-01-01T00:00:00Z"]},
            "email": {"type": "string", "format": "email", "x-ui": "wide"},
            "kind": {"const": "mail"},
        },
        "$defs": {"Address": {"type": "object", "properties": {"addr": {"type": "string"}}}},
        "definitions": {"Address": {"type": "object",
                                    "properties": {"addr": {"type": "string"}}}},
    }
    address = {"type": "OBJECT", "properties": {"addr": {"type": "STRING"}}}
    assert gschema.to_gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "to": {**address, "description": "recipient"},
            "cc": {"type": "ARRAY", "items": address},
            "when": {"type": "STRING", "format": "date-time"},
            "email": {"type": "STRING"},
            "kind": {"enum": ["mail"], "type": "STRING"},
        },
    }


@pytest.mark.parametrize("schema", [
    # recursion: only JSON Schema can say it
    {"type": "object", "properties": {"node": {"$ref": "#/$defs/N"}},
     "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}},
    # a map of typed values
    {"type": "object", "properties": {"env": {"type": "object",
                                              "additionalProperties": {"type": "string"}}}},
    # a free-form nested object, an untyped value, a real type union
    {"type": "object", "properties": {"meta": {"type": "object"}}},
    {"type": "object", "properties": {"value": {"description": "anything"}}},
    {"type": "object", "properties": {"id": {"type": ["string", "integer"]}}},
    # constraints the subset lacks, numeric enums, an unknown $ref, allOf of several
    {"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 0}}},
    {"type": "object", "properties": {"xs": {"type": "array", "uniqueItems": True,
                                             "items": {"type": "string"}}}},
    {"type": "object", "properties": {"level": {"type": "integer", "enum": [1, 2, 3]}}},
    {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}},
    {"type": "object", "properties": {"a": {"allOf": [{"type": "string"}, {"minLength": 1}]}}},
    {"type": "object", "properties": {"t": {"type": "array", "items": [{"type": "string"}]}}},
])
def test_schema_outside_the_subset_is_refused(schema: dict[str, Any]) -> None:
    assert gschema.to_gemini_schema(schema) is None


def test_schema_ref_expansion_is_bounded() -> None:
    # Each level references the next twice: inlining doubles per level (2**20 nodes).
    defs = {f"L{i}": {"type": "object", "properties": {
        "a": {"$ref": f"#/$defs/L{i + 1}"}, "b": {"$ref": f"#/$defs/L{i + 1}"}}}
        for i in range(20)}
    defs["L20"] = {"type": "string"}
    schema = {"type": "object", "properties": {"root": {"$ref": "#/$defs/L0"}}, "$defs": defs}
    assert gschema.to_gemini_schema(schema) is None


def test_schema_oneof_reads_as_anyof_and_single_allof_merges() -> None:
    schema = {"type": "object", "properties": {
        "target": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "name": {"allOf": [{"type": "string", "minLength": 1}]},
    }}
    assert gschema.to_gemini_schema(schema) == {"type": "OBJECT", "properties": {
        "target": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
        "name": {"type": "STRING", "minLength": 1},
    }}


@pytest.mark.parametrize(("schema", "empty"), [
    ({"type": "object", "properties": {}}, True),
    ({"type": "object"}, True),
    ({"type": "object", "properties": {}, "additionalProperties": False,
      "$schema": "https://json-schema.org/draft/2020-12/schema"}, True),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, False),
    ({"type": "object", "additionalProperties": {"type": "string"}}, False),
])
def test_schema_object_without_properties(schema: dict[str, Any], empty: bool) -> None:
    assert gschema.object_without_properties(schema) is empty


def test_from_gemini_schema_reads_both_spellings() -> None:
    sdk_schema = {  # as the Python SDK serializes types.Schema: snake_case inside
        "type": "OBJECT",
        "properties": {
            "a": {"type": "STRING", "nullable": True, "format": "enum", "enum": ["x", "y"]},
            "b": {"any_of": [{"type": "STRING"}, {"type": "INTEGER"}], "max_items": 3},
            "c": {"type": "ARRAY", "items": {"type": "NUMBER"}, "minItems": 1,
                  "example": [1.5]},
        },
        "property_ordering": ["a", "b", "c"],
        "required": ["a"],
    }
    assert gschema.from_gemini_schema(sdk_schema) == {
        "type": "object",
        "properties": {
            "a": {"type": ["string", "null"], "enum": ["x", "y", None]},
            "b": {"anyOf": [{"type": "string"}, {"type": "integer"}], "maxItems": 3},
            "c": {"type": "array", "items": {"type": "number"}, "minItems": 1,
                  "examples": [[1.5]]},
        },
        "required": ["a"],
    }


# --- caller side: Gemini requests -> canonical -------------------------------------------------

SHELL_SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "description": "Exact bash command to execute"},
        "directory": {"type": "string"},
    },
    "required": ["command"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}

# The shape Gemini CLI 0.x streams (`:streamGenerateContent?alt=sse`, key in x-goog-api-key):
# systemInstruction, parametersJsonSchema declarations, thinkingConfig with includeThoughts,
# and the model's thoughtSignature echoed on the functionCall it made.
GEMINI_CLI_BODY = {
    "contents": [
        {"role": "user", "parts": [{"text": "This is the Gemini CLI. Context: ..."}]},
        {"role": "model", "parts": [{"text": "Got it. Thanks for the context!"}]},
        {"role": "user", "parts": [{"text": "list the files here"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "run_shell_command",
                              "args": {"command": "ls -la", "directory": "."}},
             "thoughtSignature": "CiQB0e2Kb8s9hJYcT2MzQk1sZ2F0dXJlX29uZQ=="},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"id": "run_shell_command-1759999999999-abc",
                                  "name": "run_shell_command",
                                  "response": {"output": "a.txt\nb.txt"}}},
        ]},
    ],
    "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent."}]},
    "tools": [{"functionDeclarations": [
        {"name": "run_shell_command", "description": "Executes a shell command.",
         "parametersJsonSchema": SHELL_SCHEMA},
        {"name": "read_file", "description": "Reads a file.",
         "parametersJsonSchema": {"type": "object", "properties": {
             "absolute_path": {"type": "string"}}, "required": ["absolute_path"]}},
    ]}],
    "generationConfig": {"temperature": 0, "topP": 1,
                         "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192}},
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    "cachedContent": "cachedContents/abc",
}


def test_gemini_cli_request_keeps_what_matters() -> None:
    req = gemini.to_canonical_request(dumps(GEMINI_CLI_BODY), model="gemini-2.5-pro",
                                      stream=True)
    assert (req.model, req.stream, req.stream_usage) == ("gemini-2.5-pro", True, True)
    assert req.system == [Text("You are an interactive CLI agent.")]
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant", "user"]
    call = req.messages[3].content[0]
    assert isinstance(call, ToolCall)
    assert call.name == "run_shell_command"
    assert json.loads(call.arguments) == {"command": "ls -la", "directory": "."}
    assert call.provider_data == {"thoughtSignature": "CiQB0e2Kb8s9hJYcT2MzQk1sZ2F0dXJlX29uZQ=="}
    result = req.messages[4].content[0]
    # Gemini CLI mints an id for a call the model sent without one and puts it on its
    # response only; the pair must still share one id, or another provider refuses the result.
    assert result == ToolResult(call.id, [Text("a.txt\nb.txt")], False, "run_shell_command")
    assert [t.name for t in req.tools] == ["run_shell_command", "read_file"]
    assert req.tools[0].parameters == SHELL_SCHEMA  # JSON Schema kept as the caller wrote it
    assert (req.temperature, req.top_p) == (0, 1)
    assert req.reasoning == Reasoning(budget_tokens=8192, include_thoughts=True)
    assert req.tool_choice is None


def test_gemini_cli_classifier_call_gives_a_json_schema_format() -> None:
    schema = {"type": "object", "properties": {
        "reasoning": {"type": "string"},
        "model_choice": {"type": "string", "enum": ["flash", "pro"]}},
        "required": ["reasoning", "model_choice"]}
    body = {"contents": [{"role": "user", "parts": [{"text": "route this"}]}],
            "generationConfig": {"responseMimeType": "application/json",
                                 "responseJsonSchema": schema, "temperature": 0,
                                 "thinkingConfig": {"thinkingBudget": 0}}}
    req = gemini.to_canonical_request(dumps(body), model="gemini-2.5-flash-lite", stream=False)
    assert req.response_format == ResponseFormat("json_schema", schema, name="response")
    assert req.reasoning == Reasoning(enabled=False, include_thoughts=False)
    assert req.stream is False


def test_response_schema_and_plain_json_mode() -> None:
    body = {"contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
                "type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}}}
    req = gemini.to_canonical_request(dumps(body), model=MODEL)
    assert req.response_format == ResponseFormat(
        "json_schema", {"type": "object", "properties": {"n": {"type": "integer"}}},
        name="response")
    body["generationConfig"] = {"responseMimeType": "application/json"}
    req = gemini.to_canonical_request(dumps(body), model=MODEL)
    assert req.response_format == ResponseFormat("json_object")


def test_sdk_built_request_with_snake_case_objects_decodes() -> None:
    # The Python SDK passes some objects through whole, in snake_case (inlineData.mime_type,
    # thinkingConfig.include_thoughts, parameters_json_schema, Schema.any_of) and topK as a float.
    with MockGemini(answer_with(dumps({"candidates": []}))) as sdk:
        sdk.client.models.generate_content(
            model=MODEL,
            contents=[types.Content(role="user", parts=[
                types.Part(text="what is in this picture?"),
                types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG")),
                types.Part(file_data=types.FileData(
                    file_uri="https://generativelanguage.googleapis.com/v1beta/files/abc",
                    mime_type="application/pdf")),
            ])],
            config=types.GenerateContentConfig(
                system_instruction="be brief", top_k=3, max_output_tokens=100,
                stop_sequences=["END"], seed=7,
                thinking_config=types.ThinkingConfig(include_thoughts=True,
                                                     thinking_level=types.ThinkingLevel.LOW),
                tools=[types.Tool(function_declarations=[
                    types.FunctionDeclaration(name="lookup", description="Look up",
                                              parameters_json_schema=SHELL_SCHEMA),
                    types.FunctionDeclaration(name="pick", parameters=types.Schema(
                        type=types.Type.OBJECT, properties={"v": types.Schema(
                            any_of=[types.Schema(type=types.Type.STRING),
                                    types.Schema(type=types.Type.INTEGER)])}))])],
                tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
                    mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["pick"])),
            ),
        )
        body = sdk.body()
    raw = json.loads(body)
    assert "mime_type" in raw["contents"][0]["parts"][1]["inlineData"]  # the fact under test
    assert raw["generationConfig"]["topK"] == 3.0
    req = gemini.to_canonical_request(body, model=MODEL)
    assert req.messages[0].content == [
        Text("what is in this picture?"),
        Image(media_type="image/png", data=base64.b64encode(b"\x89PNG").decode()),
        Document(media_type="application/pdf",
                 url="https://generativelanguage.googleapis.com/v1beta/files/abc"),
    ]
    assert req.system == [Text("be brief")]
    assert (req.top_k, req.max_tokens, req.stop, req.seed) == (3, 100, ["END"], 7)
    assert req.reasoning == Reasoning(effort="low", include_thoughts=True)
    assert req.tools == [
        Tool("lookup", "Look up", SHELL_SCHEMA),
        Tool("pick", None, {"type": "object", "properties": {
            "v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}),
    ]
    assert req.tool_choice == ToolChoice("tool", "pick")


def _history(*contents: dict[str, Any]) -> bytes:
    return dumps({"contents": list(contents)})


USER = {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]}
PARALLEL = {"role": "model", "parts": [
    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    {"functionCall": {"name": "get_time", "args": {}}},
]}
ANSWERS = {"role": "user", "parts": [
    {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
    {"functionResponse": {"name": "get_weather", "response": {"error": "no station"}}},
]}


def test_calls_without_ids_get_stable_ids_and_responses_pair_by_name() -> None:
    first = gemini.to_canonical_request(_history(USER, PARALLEL, ANSWERS), model=MODEL)
    calls = [b for b in first.messages[1].content if isinstance(b, ToolCall)]
    assert len({c.id for c in calls}) == 3
    assert all(c.id.startswith("call_") for c in calls)
    results = first.messages[2].content
    assert all(isinstance(r, ToolResult) for r in results)
    by_id = {c.id: c for c in calls}
    # get_time answers the get_time call; the two get_weather answers take the get_weather
    # calls in order.
    assert [by_id[r.call_id].arguments for r in results  # type: ignore[union-attr]
            ] == ["{}", '{"city": "Paris"}', '{"city": "Rome"}']
    assert results[1] == ToolResult(calls[0].id, [Text('{"temp":21}')], False, "get_weather")
    assert results[2] == ToolResult(calls[1].id, [Text("no station")], True, "get_weather")
    # The next request repeats the history: the same calls get the same ids.
    more = [{"role": "model", "parts": [{"text": "Paris 21C; Rome unknown."}]},
            {"role": "user", "parts": [{"text": "thanks"}]}]
    second = gemini.to_canonical_request(_history(USER, PARALLEL, ANSWERS, *more), model=MODEL)
    assert second.messages[:3] == first.messages


def test_response_without_a_matching_name_takes_the_next_unanswered_call() -> None:
    call = {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}}]}
    answer = {"role": "user", "parts": [{"functionResponse": {"name": "b", "response": {}}}]}
    req = gemini.to_canonical_request(_history(USER, call, answer), model=MODEL)
    tool_call = req.messages[1].content[0]
    result = req.messages[2].content[0]
    assert isinstance(tool_call, ToolCall) and isinstance(result, ToolResult)
    assert result.call_id == tool_call.id
    assert result.content == []
    # A response with nothing to answer still gets an id of its own.
    alone = gemini.to_canonical_request(_history(answer), model=MODEL).messages[0].content[0]
    assert isinstance(alone, ToolResult) and alone.call_id.startswith("call_")


def test_call_ids_given_by_the_caller_are_kept() -> None:
    call = {"role": "model", "parts": [
        {"functionCall": {"id": "fc_1", "name": "a", "args": {"x": 1}}},
        {"functionCall": {"id": "fc_2", "name": "a", "args": {"x": 2}}}]}
    answer = {"role": "user", "parts": [
        {"functionResponse": {"id": "fc_2", "name": "a", "response": {"output": "two"}}},
        {"functionResponse": {"name": "a", "response": {"output": "one"}}}]}
    req = gemini.to_canonical_request(_history(USER, call, answer), model=MODEL)
    assert [(r.call_id, r.content) for r in req.messages[2].content  # type: ignore[union-attr]
            ] == [("fc_2", [Text("two")]), ("fc_1", [Text("one")])]


def test_multimodal_function_response_parts_become_result_media() -> None:
    answer = {"role": "user", "parts": [{"functionResponse": {
        "name": "shot", "response": {"output": "see image"},
        "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "/9j/AA=="}}]}}]}
    call = {"role": "model", "parts": [{"functionCall": {"name": "shot", "args": {}}}]}
    req = gemini.to_canonical_request(_history(USER, call, answer), model=MODEL)
    result = req.messages[2].content[0]
    assert isinstance(result, ToolResult)
    assert result.content == [Text("see image"), Image(media_type="image/jpeg", data="/9j/AA==")]


def test_thought_parts_and_text_signatures_become_gemini_thinking() -> None:
    model_turn = {"role": "model", "parts": [
        {"text": "**Planning** the answer", "thought": True},
        {"text": "Hello"},
        {"text": "", "thoughtSignature": "c2ln"},
    ]}
    req = gemini.to_canonical_request(_history(USER, model_turn), model=MODEL)
    assert req.messages[1].content == [
        Thinking("**Planning** the answer", None, "gemini"),
        Text("Hello"),
        Thinking("", "c2ln", "gemini"),
    ]


@pytest.mark.parametrize(("config", "reasoning"), [
    ({"thinkingBudget": -1}, Reasoning(include_thoughts=False)),
    ({"thinkingBudget": 0, "includeThoughts": True}, Reasoning(enabled=False,
                                                               include_thoughts=False)),
    ({"thinkingBudget": 1024, "includeThoughts": True}, Reasoning(budget_tokens=1024)),
    ({"thinkingLevel": "HIGH"}, Reasoning(effort="high", include_thoughts=False)),
    ({"thinkingLevel": "minimal", "includeThoughts": True}, Reasoning(effort="minimal")),
    ({"thinkingLevel": "XHIGH"}, Reasoning(effort="high", include_thoughts=False)),
    ({"thinking_level": "MEDIUM", "include_thoughts": True}, Reasoning(effort="medium")),
])
def test_thinking_config_maps_to_reasoning(config: dict[str, Any], reasoning: Reasoning) -> None:
    body = {"contents": [USER], "generationConfig": {"thinkingConfig": config}}
    assert gemini.to_canonical_request(dumps(body), model=MODEL).reasoning == reasoning


@pytest.mark.parametrize(("config", "tools", "choice"), [
    ({"mode": "AUTO"}, ["a", "b"], ToolChoice("auto")),
    ({"mode": "VALIDATED"}, ["a", "b"], ToolChoice("auto")),
    ({"mode": "NONE"}, ["a", "b"], ToolChoice("none")),
    ({"mode": "ANY"}, ["a", "b"], ToolChoice("required")),
    ({"mode": "ANY", "allowedFunctionNames": ["b"]}, ["a", "b"], ToolChoice("tool", "b")),
    ({"mode": "ANY", "allowed_function_names": ["a", "b"]}, ["a", "b"], ToolChoice("required")),
])
def test_function_calling_config_maps_to_tool_choice(
        config: dict[str, Any], tools: list[str], choice: ToolChoice) -> None:
    decls = [{"name": n, "parameters": {"type": "OBJECT", "properties": {
        "q": {"type": "STRING"}}}} for n in ("a", "b", "c")]
    body = {"contents": [USER], "tools": [{"functionDeclarations": decls}],
            "toolConfig": {"functionCallingConfig": config}}
    req = gemini.to_canonical_request(dumps(body), model=MODEL)
    assert req.tool_choice == choice
    if "allowed_function_names" in config:  # several allowed: the offer is cut to them
        assert [t.name for t in req.tools] == tools


@pytest.mark.parametrize(("body", "param"), [
    ({"contents": [USER], "generationConfig": {"candidateCount": 2}},
     "generationConfig.candidateCount"),
    ({"contents": [USER], "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}},
     "generationConfig.responseModalities"),
    ({"contents": [USER], "generationConfig": {"responseLogprobs": True}},
     "generationConfig.responseLogprobs"),
    ({"contents": [USER], "generationConfig": {"responseMimeType": "text/x.enum"}},
     "generationConfig.responseMimeType"),
    ({"contents": [USER], "tools": [{"googleSearch": {}}]}, "tools[0].googleSearch"),
    ({"contents": [USER], "tools": [{"functionDeclarations": []}, {"code_execution": {}}]},
     "tools[1].code_execution"),
    ({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}]}]},
     "contents[0].parts[0].inlineData"),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}, {"fileData": {
        "mimeType": "video/mp4", "fileUri": "https://www.youtube.com/watch?v=1"}}]}]},
     "contents[0].parts[1].fileData"),
    ({"contents": [USER, {"role": "model", "parts": [
        {"executableCode": {"language": "PYTHON", "code": "print(1)"}}]}]},
     "contents[1].parts[0]"),
    ({"contents": [USER], "systemInstruction": {"parts": [
        {"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}},
     "systemInstruction.parts[0]"),
])
def test_what_no_other_provider_can_do_is_unsupported(body: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as info:
        gemini.to_canonical_request(dumps(body), model=MODEL)
    assert info.value.param == param


@pytest.mark.parametrize(("body", "param"), [
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "contents[0].role"),
    ({"contents": [{"role": "user", "parts": [{"text": 5}]}]}, "contents[0].parts[0].text"),
    ({"contents": [{"role": "user", "parts": [{"functionCall": {"name": "f"}}]}]},
     "contents[0].parts[0]"),
    ({"contents": [USER], "tools": [{"functionDeclarations": [{"description": "x"}]}]},
     "tools[0].functionDeclarations[0]"),
    ({"contents": [USER], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
     "toolConfig.functionCallingConfig.mode"),
])
def test_malformed_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        gemini.to_canonical_request(dumps(body), model=MODEL)
    assert info.value.param == param


def test_model_comes_from_the_url_and_hints_are_dropped_quietly() -> None:
    body = {**GEMINI_CLI_BODY, "model": "models/other",
            "generationConfig": {"presencePenalty": 0.5, "frequencyPenalty": 0.1,
                                 "mediaResolution": "MEDIA_RESOLUTION_LOW"},
            "labels": {"team": "x"}, "serviceTier": "standard", "unknownField": {"a": 1}}
    assert gemini.to_canonical_request(dumps(body), model=MODEL).model == MODEL
    assert gemini.to_canonical_request(dumps(body)).model == "other"
    with pytest.raises(TranslationError):
        gemini.to_canonical_request(dumps({"contents": [USER]}))


# --- provider side: canonical -> Gemini requests -----------------------------------------------

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 8).decode()
SIG = base64.b64encode(b"gemini-signature-bytes").decode()


def conversation() -> Request:
    """An Anthropic- or OpenAI-shaped conversation: images, parallel tools, results (one an
    error), thinking from Gemini and from Anthropic, a packed call id."""
    packed = pack_call_id("toolu_01", {"thoughtSignature": SIG})
    return Request(
        model="claude-sonnet-4",
        system=[Text("You are terse."), Text("Answer in English.")],
        messages=[
            Message("user", [Text("What is in this image, and the weather?"),
                             Image(media_type="image/png", data=PNG),
                             Image(url=f"data:image/png;base64,{PNG}")]),
            Message("assistant", [
                Thinking("Claude thought", "anthropic-sig", "anthropic"),
                Thinking("Gemini thought", SIG, "gemini"),
                Text("Let me check."),
                ToolCall(packed, "get_weather", '{"city": "Paris"}'),
                ToolCall("toolu_02", "get_time", ""),
            ]),
            Message("user", [
                ToolResult(packed, [Text("21C")]),
                ToolResult("toolu_02", [Text("no clock")], is_error=True),
            ]),
            Message("assistant", [Text("Paris: 21C.")]),
            Message("user", [Text("Thanks!")]),
        ],
        max_tokens=512, temperature=0.2, top_p=0.9, top_k=40, stop=["\n\nHuman:"], seed=3,
        tools=[Tool("get_weather", "Weather for a city", {
            "type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"], "additionalProperties": False}),
            Tool("get_time", "The time", {"type": "object", "properties": {}})],
        tool_choice=ToolChoice("auto"),
        reasoning=Reasoning(budget_tokens=2048),
    )


def test_provider_body_is_what_the_sdk_types_and_the_api_rules_accept() -> None:
    body = gemini.from_canonical_request(conversation(), model=MODEL)
    parsed = check_provider_body(body)
    assert parsed["systemInstruction"] == {"parts": [{"text": "You are terse."},
                                                     {"text": "Answer in English."}]}
    contents = parsed["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    assert contents[0]["parts"][1:] == [{"inlineData": {"mimeType": "image/png", "data": PNG}}] * 2
    model_parts = contents[1]["parts"]
    assert model_parts[0] == {"text": "Gemini thought", "thought": True, "thoughtSignature": SIG}
    assert "Claude thought" not in json.dumps(contents)  # another dialect's thinking is dropped
    assert model_parts[1] == {"text": "Let me check."}
    assert model_parts[2] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"},
                                               "id": "toolu_01"}, "thoughtSignature": SIG}
    assert model_parts[3] == {"functionCall": {"name": "get_time", "args": {}, "id": "toolu_02"}}
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "21C"},
                              "id": "toolu_01"}},
        {"functionResponse": {"name": "get_time", "response": {"error": "no clock"},
                              "id": "toolu_02"}},
    ]
    assert parsed["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city", "parameters": {
            "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
        {"name": "get_time", "description": "The time"},
    ]}]
    assert parsed["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert parsed["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 512,
        "stopSequences": ["\n\nHuman:"], "seed": 3,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048}}


def test_schemas_outside_the_subset_go_as_json_schema() -> None:
    recursive = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                 "properties": {"tree": {"$ref": "#/$defs/Node"}},
                 "$defs": {"Node": {"type": "object", "properties": {
                     "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}}}
    env = {"type": "object", "properties": {"env": {
        "type": "object", "additionalProperties": {"type": "string"}}}}
    req = Request(model="m", messages=[Message("user", [Text("hi")])],
                  tools=[Tool("walk", None, recursive), Tool("run", "Run", env)],
                  response_format=ResponseFormat("json_schema", env, "out"))
    parsed = check_provider_body(gemini.from_canonical_request(req, model=MODEL))
    decls = parsed["tools"][0]["functionDeclarations"]
    assert decls[0] == {"name": "walk", "parametersJsonSchema": {
        k: v for k, v in recursive.items() if k != "$schema"}}
    assert decls[1] == {"name": "run", "description": "Run", "parametersJsonSchema": env}
    assert parsed["generationConfig"] == {"responseMimeType": "application/json",
                                          "responseJsonSchema": env}


def test_response_formats() -> None:
    simple = {"type": "object", "properties": {"answer": {"type": "string"}}}
    base = Request(model="m", messages=[Message("user", [Text("hi")])])
    cases = [
        (ResponseFormat("json_schema", simple, "a"),
         {"responseMimeType": "application/json",
          "responseSchema": {"type": "OBJECT", "properties": {"answer": {"type": "STRING"}}}}),
        (ResponseFormat("json_object"), {"responseMimeType": "application/json"}),
        (ResponseFormat("text"), None),
    ]
    for fmt, config in cases:
        base.response_format = fmt
        parsed = check_provider_body(gemini.from_canonical_request(base, model=MODEL))
        assert parsed.get("generationConfig") == config


@pytest.mark.parametrize(("choice", "config"), [
    (ToolChoice("none"), {"mode": "NONE"}),
    (ToolChoice("required"), {"mode": "ANY"}),
    (ToolChoice("tool", "get_weather"), {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    (ToolChoice("auto", parallel=False), {"mode": "AUTO"}),
])
def test_tool_choice_maps_to_function_calling_config(choice: ToolChoice,
                                                      config: dict[str, Any]) -> None:
    req = conversation()
    req.tool_choice = choice
    parsed = check_provider_body(gemini.from_canonical_request(req, model=MODEL))
    assert parsed["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize(("model", "reasoning", "config"), [
    (MODEL, Reasoning(effort="high"), {"includeThoughts": True, "thinkingBudget": 24576}),
    (MODEL, Reasoning(effort="low", include_thoughts=False), {"thinkingBudget": 1024}),
    (MODEL, Reasoning(enabled=False), {"thinkingBudget": 0}),
    (MODEL, Reasoning(), {"includeThoughts": True}),
    ("gemini-3-pro-preview", Reasoning(effort="high"),
     {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3-flash-preview", Reasoning(enabled=False), {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", Reasoning(budget_tokens=4096, include_thoughts=False),
     {"thinkingBudget": 4096}),
    ("gemini-flash-latest", Reasoning(effort="medium", include_thoughts=False),
     {"thinkingBudget": 8192}),
])
def test_reasoning_maps_to_thinking_config_by_model_generation(
        model: str, reasoning: Reasoning, config: dict[str, Any]) -> None:
    req = Request(model="m", messages=[Message("user", [Text("hi")])], reasoning=reasoning)
    parsed = check_provider_body(gemini.from_canonical_request(req, model=model))
    assert parsed["generationConfig"]["thinkingConfig"] == config


def test_results_are_gathered_first_into_one_user_turn_after_the_calls() -> None:
    # OpenAI-shaped: each tool result its own message, and text alongside.
    req = Request(model="m", messages=[
        Message("user", [Text("go")]),
        Message("assistant", [Text("calling")]),
        Message("assistant", [ToolCall("c1", "a", "{}"), ToolCall("c2", "b", '{"x":1}')]),
        Message("user", [Text("(both done)"), ToolResult("c1", [Text("A")])]),
        Message("user", [ToolResult("c2", [Text("B"), Image(media_type="image/png",
                                                              data=PNG)])]),
    ])
    parsed = check_provider_body(gemini.from_canonical_request(req, model=MODEL))
    contents = parsed["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert [next(iter(p)) for p in contents[1]["parts"]] == ["text", "functionCall",
                                                            "functionCall"]
    assert contents[1]["parts"][1]["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in contents[1]["parts"][2]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "a", "response": {"output": "A"}, "id": "c1"}},
        {"functionResponse": {"name": "b", "response": {"output": "B"}, "id": "c2",
                              "parts": [{"inlineData": {"mimeType": "image/png",
                                                        "data": PNG}}]}},
        {"text": "(both done)"},
    ]


def test_dummy_signatures_only_in_the_current_turn() -> None:
    old_turn = [Message("user", [Text("first")]),
                Message("assistant", [ToolCall("o1", "a", "{}")]),
                Message("user", [ToolResult("o1", [Text("ok")])]),
                Message("assistant", [Text("done")])]
    new_turn = [Message("user", [Text("second")]),
                Message("assistant", [ToolCall("n1", "a", "{}")]),
                Message("user", [ToolResult("n1", [Text("ok")])]),
                Message("assistant", [ToolCall("n2", "a", "{}", {"thoughtSignature": SIG})]),
                Message("user", [ToolResult("n2", [Text("ok")])])]
    req = Request(model="m", messages=old_turn + new_turn)
    parsed = check_provider_body(gemini.from_canonical_request(req, model="gemini-3-pro"))
    sigs = [p.get("thoughtSignature") for c in parsed["contents"] for p in c["parts"]
            if "functionCall" in p]
    assert sigs == [None, SKIP_SIGNATURE, SIG]


def test_signature_only_thinking_goes_back_on_its_part() -> None:
    req = Request(model="m", messages=[
        Message("user", [Text("hi")]),
        Message("assistant", [Text("Hello"), Thinking("", SIG, "gemini")]),
        Message("user", [Text("again")]),
        Message("assistant", [Thinking("", SIG, "gemini"), Text("Hi again")]),
    ])
    parsed = check_provider_body(gemini.from_canonical_request(req, model=MODEL))
    assert parsed["contents"][1]["parts"] == [{"text": "Hello", "thoughtSignature": SIG}]
    assert parsed["contents"][3]["parts"] == [{"text": "Hi again", "thoughtSignature": SIG}]


def test_documents_and_files() -> None:
    files_uri = "https://generativelanguage.googleapis.com/v1beta/files/abc123"
    req = Request(model="m", messages=[Message("user", [
        Document(media_type="application/pdf", data="JVBERi0xLjQ="),
        Document(text="plain notes", title="notes.txt"),
        Image(url=files_uri, media_type="image/jpeg"),
        Image(data="/9j/4AAQ"),
    ])])
    parsed = check_provider_body(gemini.from_canonical_request(req, model=MODEL))
    assert parsed["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQ="}},
        {"text": "notes.txt\n\nplain notes"},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": files_uri}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},  # sniffed
    ]


@pytest.mark.parametrize(("messages", "param"), [
    ([Message("user", [Text("look"), Image(url="https://example.com/cat.png")])],
     "messages[0].content[1]"),
    ([Message("user", [Document(url="http://example.com/a.pdf")])], "messages[0].content[0]"),
    ([Message("user", [Image(url="data:image/svg+xml,%3Csvg%3E")])], "messages[0].content[0]"),
])
def test_urls_are_never_fetched(messages: list[Message], param: str) -> None:
    with pytest.raises(Unsupported) as info:
        gemini.from_canonical_request(Request(model="m", messages=messages), model=MODEL)
    assert info.value.param == param
    assert "does not fetch" in str(info.value) or "base64" in str(info.value)


def test_a_result_for_an_unknown_call_is_refused_and_too_many_stops_too() -> None:
    req = Request(model="m", messages=[Message("user", [ToolResult("nope", [Text("x")])])])
    with pytest.raises(TranslationError) as info:
        gemini.from_canonical_request(req, model=MODEL)
    assert info.value.param == "messages[0].content[0]"
    named = Request(model="m", messages=[Message("user", [
        ToolResult("nope", [Text("x")], name="f")])])
    parsed = json.loads(gemini.from_canonical_request(named, model=MODEL))
    assert parsed["contents"][0]["parts"][0]["functionResponse"]["name"] == "f"
    too_many = Request(model="m", messages=[Message("user", [Text("x")])], stop=list("abcdef"))
    with pytest.raises(Unsupported) as info:
        gemini.from_canonical_request(too_many, model=MODEL)
    assert info.value.param == "stop"


def test_broken_tool_arguments_go_as_an_empty_object() -> None:
    req = Request(model="m", messages=[Message("user", [Text("x")]), Message(
        "assistant", [ToolCall("c", "f", '{"a": 1')])])
    parsed = check_provider_body(gemini.from_canonical_request(req, model=MODEL))
    assert parsed["contents"][1]["parts"][0]["functionCall"]["args"] == {}


@pytest.mark.parametrize(("model", "stream", "path"), [
    (MODEL, False, b"/v1beta/models/gemini-2.5-flash:generateContent"),
    (MODEL, True, b"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
    ("models/gemini-3-pro-preview", False, b"/v1beta/models/gemini-3-pro-preview:generateContent"),
    ("odd/name:x?y", False, b"/v1beta/models/odd%2Fname%3Ax%3Fy:generateContent"),
])
def test_request_path(model: str, stream: bool, path: bytes) -> None:
    assert gemini.request_path(model=model, stream=stream) == path


def test_canonical_to_gemini_to_canonical_round_trip() -> None:
    original = conversation()
    body = gemini.from_canonical_request(original, model=MODEL)
    back = gemini.to_canonical_request(body, model=MODEL, stream=False)
    assert back.system == original.system
    assert back.messages[0] == Message("user", [
        Text("What is in this image, and the weather?"),
        Image(media_type="image/png", data=PNG), Image(media_type="image/png", data=PNG)])
    assert back.messages[1].content == [
        Thinking("Gemini thought", SIG, "gemini"),
        Text("Let me check."),
        ToolCall("toolu_01", "get_weather", '{"city": "Paris"}', {"thoughtSignature": SIG}),
        ToolCall("toolu_02", "get_time", "{}"),
    ]
    assert back.messages[2].content == [
        ToolResult("toolu_01", [Text("21C")], False, "get_weather"),
        ToolResult("toolu_02", [Text("no clock")], True, "get_time"),
    ]
    assert back.messages[3:] == original.messages[3:]
    assert [(t.name, t.description) for t in back.tools] == [
        (t.name, t.description) for t in original.tools]
    assert back.tools[0].parameters == {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}
    assert back.tool_choice == ToolChoice("auto")
    assert (back.max_tokens, back.temperature, back.top_p, back.top_k, back.stop, back.seed) == (
        512, 0.2, 0.9, 40, ["\n\nHuman:"], 3)
    assert back.reasoning == Reasoning(budget_tokens=2048)


# --- answers -----------------------------------------------------------------------------------

USAGE = {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 250,
         "cachedContentTokenCount": 100, "thoughtsTokenCount": 100,
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}]}


def gemini_answer(parts: list[dict[str, Any]] | None, finish: str | None = "STOP",
                  **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"index": 0}
    if parts is not None:
        candidate["content"] = {"parts": parts, "role": "model"}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": USAGE, "modelVersion": MODEL,
            "responseId": "resp-1", **extra}


def test_answer_with_thoughts_text_and_usage() -> None:
    body = gemini_answer([{"text": "**Weighing** options", "thought": True},
                          {"text": "Paris.", "thoughtSignature": SIG}])
    resp = gemini.to_canonical_response(dumps(body), model="alias")
    assert resp == Response(
        id="resp-1", model=MODEL, finish="stop",
        content=[Thinking("**Weighing** options", None, "gemini"), Text("Paris."),
                 Thinking("", SIG, "gemini")],
        usage=Usage(input_tokens=120, output_tokens=130, cached_tokens=100,
                    reasoning_tokens=100))


def test_answer_with_parallel_calls_synthesizes_stable_ids() -> None:
    body = gemini_answer([
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
         "thoughtSignature": SIG},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
        {"functionCall": {"id": "given", "name": "noop"}},
    ])
    resp = gemini.to_canonical_response(dumps(body), model=MODEL)
    assert resp.finish == "tool_calls"
    calls = resp.content
    assert all(isinstance(c, ToolCall) for c in calls)
    assert calls[0].provider_data == {"thoughtSignature": SIG}  # type: ignore[union-attr]
    assert calls[1].provider_data is None  # type: ignore[union-attr]
    assert calls[2] == ToolCall("given", "noop", "{}")
    assert calls[0].id != calls[1].id  # type: ignore[union-attr]
    assert gemini.to_canonical_response(dumps(body), model=MODEL).content == calls


@pytest.mark.parametrize(("finish", "parts", "expected"), [
    ("STOP", [{"text": "ok"}], "stop"),
    ("MAX_TOKENS", [{"text": "cut"}], "length"),
    ("MAX_TOKENS", None, "length"),  # all of it spent on thinking: no parts at all
    ("SAFETY", None, "content_filter"),
    ("RECITATION", None, "content_filter"),
    ("BLOCKLIST", None, "content_filter"),
    ("PROHIBITED_CONTENT", None, "content_filter"),
    ("SPII", None, "content_filter"),
    ("IMAGE_SAFETY", None, "content_filter"),
    ("MALFORMED_FUNCTION_CALL", None, "error"),
    ("OTHER", [{"text": "?"}], "stop"),
    ("SOMETHING_NEW", [{"text": "?"}], "stop"),
    (None, [{"text": "no reason given"}], "stop"),
])
def test_every_finish_reason(finish: str | None, parts: list[dict[str, Any]] | None,
                             expected: str) -> None:
    resp = gemini.to_canonical_response(dumps(gemini_answer(parts, finish)), model=MODEL)
    assert resp.finish == expected


def test_a_blocked_prompt_is_a_content_filter_with_no_content() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": MODEL, "responseId": "r"}
    resp = gemini.to_canonical_response(dumps(body), model=MODEL)
    assert (resp.finish, resp.content, resp.usage.input_tokens) == ("content_filter", [], 9)


def test_unreadable_answers_raise_translation_errors() -> None:
    with pytest.raises(TranslationError):
        gemini.to_canonical_response(b"<html>", model=MODEL)
    with pytest.raises(TranslationError):
        gemini.to_canonical_response(dumps({"candidates": "no"}), model=MODEL)
    with pytest.raises(TranslationError):
        gemini.to_canonical_response(dumps({"error": {"code": 500, "message": "x"}}),
                                     model=MODEL)


def canonical_answer() -> Response:
    return Response(
        id="msg_01", model="claude-sonnet-4", finish="tool_calls",
        content=[Thinking("I should look it up.", "anthropic-sig==", "anthropic"),
                 Text("Checking."),
                 ToolCall("toolu_01", "get_weather", '{"city":"Paris"}'),
                 ToolCall("toolu_02", "get_time", "")],
        usage=Usage(input_tokens=50, output_tokens=40, cached_tokens=10, reasoning_tokens=15))


def test_answer_for_a_gemini_caller_is_what_the_sdk_reads() -> None:
    body = gemini.from_canonical_response(canonical_answer(), model="gemini-2.5-pro")
    with MockGemini(answer_with(body)) as sdk:
        resp = sdk.client.models.generate_content(model="gemini-2.5-pro", contents="weather?")
    assert resp.response_id == "msg_01"
    assert resp.model_version == "gemini-2.5-pro"
    cand = resp.candidates[0]  # type: ignore[index]
    assert cand.finish_reason == types.FinishReason.STOP
    calls = resp.function_calls or []
    assert [(c.id, c.name, c.args) for c in calls] == [
        ("toolu_01", "get_weather", {"city": "Paris"}), ("toolu_02", "get_time", {})]
    parts = cand.content.parts  # type: ignore[union-attr]
    assert parts[0].thought and parts[0].text == "I should look it up."  # type: ignore[index]
    usage = resp.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count,
            usage.cached_content_token_count, usage.total_token_count) == (50, 25, 15, 10, 90)


def test_other_dialects_thinking_round_trips_through_a_gemini_client() -> None:
    """An Anthropic answer reaches a Gemini caller; the SDK keeps the answer's content in its
    history and sends it back; the Anthropic thinking block and its signature come back."""
    answer = gemini.from_canonical_response(canonical_answer(), model="gemini-2.5-pro")
    with MockGemini(answer_with(answer)) as sdk:
        first = sdk.client.models.generate_content(model="gemini-2.5-pro", contents="weather?")
        model_turn = first.candidates[0].content  # type: ignore[index]
        assert model_turn is not None and model_turn.parts is not None
        # As Gemini CLI does: thought parts out of the history, the rest kept as received.
        kept = types.Content(role="model", parts=[p for p in model_turn.parts if not p.thought])
        results = types.Content(role="user", parts=[
            types.Part(function_response=types.FunctionResponse(
                id=c.id, name=c.name, response={"output": "ok"}))
            for c in first.function_calls or []])
        sdk.client.models.generate_content(model="gemini-2.5-pro", contents=[
            types.Content(role="user", parts=[types.Part(text="weather?")]), kept, results])
        body = sdk.body()
    req = gemini.to_canonical_request(body, model="claude-sonnet-4")
    assert req.messages[1].content == [
        Thinking("I should look it up.", "anthropic-sig==", "anthropic"),
        Text("Checking."),
        ToolCall("toolu_01", "get_weather", '{"city": "Paris"}'),  # the SDK re-serialized it
        ToolCall("toolu_02", "get_time", "{}"),
    ]
    assert [r.call_id for r in req.messages[2].content  # type: ignore[union-attr]
            ] == ["toolu_01", "toolu_02"]


def test_thinking_wrapper_tolerates_base64url_and_ignores_real_signatures() -> None:
    blocks = [Thinking("t", "s", "anthropic"), Thinking("", None, None, redacted="r")]
    wrapped = wrap_thinking(blocks)
    urlsafe = wrapped.replace("+", "-").replace("/", "_").rstrip("=")
    assert unwrap_thinking(wrapped) == blocks
    assert unwrap_thinking(urlsafe) == blocks
    assert unwrap_thinking(SIG) is None
    assert unwrap_thinking(wrapped[:20] + "!!") is None


def test_response_round_trip_canonical_gemini_canonical() -> None:
    original = Response(
        id="r1", model="m", finish="length",
        content=[Thinking("hmm", SIG, "gemini"), Text("partial"),
                 Image(media_type="image/png", data=PNG)],
        usage=Usage(input_tokens=7, output_tokens=9, cached_tokens=2, reasoning_tokens=4))
    body = gemini.from_canonical_response(original, model="gemini-2.5-flash")
    back = gemini.to_canonical_response(body, model="x")
    assert back == Response(id="r1", model="gemini-2.5-flash", finish="length",
                            content=original.content, usage=original.usage)
    blocked = Response(id="r2", model="m", content=[], finish="content_filter")
    raw = json.loads(gemini.from_canonical_response(blocked, model="g"))
    assert raw["candidates"] == [{"finishReason": "SAFETY", "index": 0}]
    assert gemini.to_canonical_response(json.dumps(raw).encode(), model="g").finish == (
        "content_filter")


# --- streams from a Gemini provider ------------------------------------------------------------


def chunk(parts: list[dict[str, Any]] | None, *, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One streamGenerateContent chunk as Gemini sends it: new parts only, the usage so far,
    modelVersion and responseId on every chunk."""
    cand: dict[str, Any] = {"index": 0}
    if parts is not None:
        cand["content"] = {"parts": parts, "role": "model"}
    if finish is not None:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": usage or {"promptTokenCount": 10,
                                                             "totalTokenCount": 10},
            "modelVersion": MODEL, "responseId": "stream-1"}


def sse_bytes(chunks: list[dict[str, Any]]) -> bytes:
    # One `data:` line per chunk, events separated by CRLF CRLF, as the API frames them.
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def decode_stream(raw: bytes, *, split: int | None = None, close: bool = True) -> list[Event]:
    """Raw SSE bytes through our SSE decoder and the Gemini stream decoder, in pieces."""
    sse, decoder = SSEDecoder(), gemini.StreamDecoder(model="alias")
    step = split or len(raw) or 1
    events: list[Event] = []
    for i in range(0, len(raw), step):
        for event in sse.feed(raw[i:i + step]):
            events += decoder.feed(event)
    return events + (decoder.close() if close else [])


FINAL_USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 20,
               "totalTokenCount": 32}
TEXT_STREAM = [
    chunk([{"text": "**Planning**", "thought": True}]),
    chunk([{"text": " the reply", "thought": True}]),
    chunk([{"text": "Hello"}]),
    chunk([{"text": " world", "thoughtSignature": SIG}], finish="STOP", usage=FINAL_USAGE),
]


def test_stream_of_thoughts_then_text() -> None:
    events = decode_stream(sse_bytes(TEXT_STREAM))
    assert events == [
        StreamStart("stream-1", MODEL, Usage(input_tokens=10)),
        BlockStart(0, "thinking"),
        ThinkingDelta(0, "**Planning**", None, "gemini"),
        ThinkingDelta(0, " the reply", None, "gemini"),
        BlockStop(0),
        BlockStart(1, "text"),
        TextDelta(1, "Hello"),
        TextDelta(1, " world"),
        BlockStop(1),
        BlockStart(2, "thinking"),
        ThinkingDelta(2, "", SIG, "gemini"),
        BlockStop(2),
        StreamEnd("stop", usage=Usage(input_tokens=10, output_tokens=22, reasoning_tokens=20)),
    ]
    # The same events whatever the network chunking: byte by byte, and in odd pieces.
    assert decode_stream(sse_bytes(TEXT_STREAM), split=1) == events
    assert decode_stream(sse_bytes(TEXT_STREAM), split=7) == events


def test_stream_with_parallel_function_calls() -> None:
    calls: list[dict[str, Any]] = [
             {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
              "thoughtSignature": SIG},
             {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]
    raw = sse_bytes([chunk([{"text": "Checking."}]), chunk(calls, finish="STOP")])
    events = decode_stream(raw)
    starts = [e for e in events if isinstance(e, BlockStart)]
    assert [(s.index, s.kind, s.tool_name, s.provider_data) for s in starts] == [
        (0, "text", None, None),
        (1, "tool_call", "get_weather", {"thoughtSignature": SIG}),
        (2, "tool_call", "get_weather", None)]
    assert starts[1].tool_id != starts[2].tool_id
    assert [e.partial_json for e in events if isinstance(e, ToolArgsDelta)] == [
        '{"city": "Paris"}', '{"city": "Rome"}']
    assert isinstance(events[-1], StreamEnd) and events[-1].finish == "tool_calls"
    # The non-stream decoder names the same calls the same way for the same response id.
    whole = gemini.to_canonical_response(dumps(gemini_answer(calls) | {
        "responseId": "stream-1"}), model=MODEL)
    assert [c.id for c in whole.content] == [starts[1].tool_id, starts[2].tool_id]  # type: ignore[union-attr]


@pytest.mark.parametrize(("last", "finish"), [
    (chunk(None, finish="SAFETY"), "content_filter"),
    (chunk([{"text": " and"}], finish="MAX_TOKENS"), "length"),
    (chunk(None, finish="RECITATION"), "content_filter"),
    (chunk([{"text": ""}], finish="STOP"), "stop"),
])
def test_stream_stop_reasons(last: dict[str, Any], finish: str) -> None:
    events = decode_stream(sse_bytes([chunk([{"text": "Sure,"}]), last]))
    assert isinstance(events[-1], StreamEnd) and events[-1].finish == finish
    assert isinstance(events[-2], BlockStop)


def test_a_blocked_prompt_ends_the_stream_at_once() -> None:
    raw = sse_bytes([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                      "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
                      "modelVersion": MODEL, "responseId": "b"}])
    assert decode_stream(raw) == [StreamStart("b", MODEL, Usage(input_tokens=5)),
                                  StreamEnd("content_filter", usage=Usage(input_tokens=5))]


def test_a_cut_stream_is_an_error() -> None:
    events = decode_stream(sse_bytes(TEXT_STREAM[:3]))
    assert isinstance(events[-1], StreamError)
    assert events[-1].error.status == 502 and "finishReason" in events[-1].error.message
    nothing = gemini.StreamDecoder(model=MODEL)
    assert [type(e) for e in nothing.close()] == [StreamError]


def test_an_error_event_midstream_becomes_a_stream_error() -> None:
    error = {"error": {"code": 429, "message": "Resource exhausted.",
                       "status": "RESOURCE_EXHAUSTED", "details": [
                           {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": "12s"}]}}
    decoder = gemini.StreamDecoder(model=MODEL)
    events = decoder.feed(SSEEvent(json.dumps(TEXT_STREAM[2])))
    events += decoder.feed(SSEEvent(json.dumps(error)))
    assert events[-1] == StreamError(CanonicalError(429, "Resource exhausted.", "rate_limit",
                                                    retry_after=12.0))
    assert decoder.feed(SSEEvent(json.dumps(TEXT_STREAM[3]))) == []  # nothing after the end
    assert decoder.close() == []
    assert "done=True" in repr(decoder)


def test_an_unreadable_chunk_is_a_stream_error() -> None:
    decoder = gemini.StreamDecoder(model=MODEL)
    events = decoder.feed(SSEEvent('{"candidates": 5}'))
    assert [type(e) for e in events] == [StreamError]
    assert decoder.feed(SSEEvent("")) == [] and decoder.close() == []


# --- streams to a Gemini caller ----------------------------------------------------------------


def caller_events() -> list[Event]:
    """What an Anthropic provider's stream decodes to: thinking with a signature, text, a tool
    call with its arguments in pieces, the end with usage."""
    return [
        StreamStart("msg_01", "claude-sonnet-4", Usage(input_tokens=25)),
        BlockStart(0, "thinking"),
        ThinkingDelta(0, "Look it up", None, "anthropic"),
        ThinkingDelta(0, ".", None, "anthropic"),
        ThinkingDelta(0, "", "sig-anthropic", "anthropic"),
        BlockStop(0),
        BlockStart(1, "text"),
        TextDelta(1, "Checking"),
        TextDelta(1, " now."),
        BlockStop(1),
        BlockStart(2, "tool_call", "toolu_01", "get_weather"),
        ToolArgsDelta(2, '{"ci'),
        ToolArgsDelta(2, 'ty": "Paris"}'),
        BlockStop(2),
        StreamEnd("tool_calls", usage=Usage(input_tokens=25, output_tokens=40,
                                            reasoning_tokens=12)),
    ]


def encode(events: list[Event], *, sse: bool = True) -> list[bytes]:
    encoder = gemini.StreamEncoder(model="gemini-2.5-pro", sse=sse)
    return [encoder.feed(e) for e in events] + [encoder.close()]


def test_encoded_sse_stream_is_what_the_sdk_reads() -> None:
    pieces = encode(caller_events())
    raw = b"".join(pieces)
    for piece in filter(None, pieces):
        assert piece.startswith(b"data: ") and piece.endswith(b"\r\n\r\n")
        assert piece.count(b"\r\n\r\n") == 1
    with MockGemini(answer_with(raw, sse=True)) as sdk:
        chunks = list(sdk.client.models.generate_content_stream(model="gemini-2.5-pro",
                                                                contents="weather?"))
    parts = [p for c in chunks for p in c.candidates[0].content.parts or []  # type: ignore[index,union-attr]
             ] if chunks else []
    assert "".join(p.text or "" for p in parts if p.thought) == "Look it up."
    assert "".join(p.text or "" for p in parts if not p.thought) == "Checking now."
    calls = [p.function_call for p in parts if p.function_call]
    assert [(c.id, c.name, c.args) for c in calls] == [("toolu_01", "get_weather",
                                                        {"city": "Paris"})]
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert last.usage_metadata is not None
    assert (last.usage_metadata.prompt_token_count, last.usage_metadata.candidates_token_count,
            last.usage_metadata.thoughts_token_count) == (25, 28, 12)
    assert {c.response_id for c in chunks} == {"msg_01"}
    # The other dialect's thinking rides on the first text part after it (the first text
    # part is the one Gemini CLI keeps when it joins streamed text).
    carrier = next(p for p in parts if p.text == "Checking")
    assert carrier.thought_signature is not None
    assert unwrap_thinking(base64.b64encode(carrier.thought_signature).decode()) == [
        Thinking("Look it up.", "sig-anthropic", "anthropic")]


def test_encoded_json_array_stream_is_framed_as_gemini_frames_it() -> None:
    pieces = [p for p in encode(caller_events(), sse=False) if p]
    assert pieces[0].startswith(b"[{")
    assert all(p.startswith(b"\r\n,\r\n{") for p in pieces[1:-1])
    assert pieces[-1] == b"\r\n]"
    elements = json.loads(b"".join(pieces))
    for element in elements:
        types.GenerateContentResponse.model_validate(element)
    assert elements[-1]["candidates"][0]["finishReason"] == "STOP"
    assert elements[-1]["usageMetadata"]["totalTokenCount"] == 65
    empty = gemini.StreamEncoder(model="g", sse=False)
    assert empty.close() == b"[]"
    assert json.loads(empty.close()) == []


def test_stream_errors_reach_the_sdk_as_api_errors() -> None:
    error = CanonicalError(429, "Slow down.", "rate_limit", retry_after=7)
    events: list[Event] = [StreamStart("r", "m"), BlockStart(0, "text"), TextDelta(0, "Hi"),
                           StreamError(error)]
    raw = b"".join(encode(events))
    assert raw.endswith(gemini.stream_error_event(error))
    with MockGemini(answer_with(raw, sse=True)) as sdk, pytest.raises(
            genai_errors.ClientError) as info:
        list(sdk.client.models.generate_content_stream(model="g", contents="x"))
    assert info.value.code == 429
    assert info.value.status == "RESOURCE_EXHAUSTED"
    array = json.loads(b"".join(encode(events, sse=False)))
    assert array[-1]["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]


def test_a_blocked_answer_streams_a_safety_chunk_without_content() -> None:
    pieces = encode([StreamStart("r", "m"), StreamEnd("content_filter")])
    assert len([p for p in pieces if p]) == 1
    data = json.loads(pieces[1].removeprefix(b"data: "))
    assert data["candidates"] == [{"finishReason": "SAFETY", "index": 0}]


def test_gemini_stream_through_canonical_and_back() -> None:
    """A Gemini provider's stream re-encoded for a Gemini caller keeps text, thoughts,
    signatures and calls (the path is not used, same-dialect traffic is piped, but it checks
    that decoder and encoder agree)."""
    events = decode_stream(sse_bytes(TEXT_STREAM))
    raw = b"".join(encode(events))
    again = decode_stream(raw)
    assert [e for e in again if not isinstance(e, StreamStart)] == [
        e for e in events if not isinstance(e, StreamStart)]


# --- errors ------------------------------------------------------------------------------------

RPC = "type.googleapis.com/google.rpc."
QUOTA_429: dict[str, Any] = {"error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
        {"@type": RPC + "QuotaFailure", "violations": [{"quotaMetric": "m", "quotaId": "q"}]},
        {"@type": RPC + "Help", "links": [{"description": "d", "url": "u"}]},
        {"@type": RPC + "RetryInfo", "retryDelay": "7s"},
    ]}}
BAD_KEY = {"error": {
    "code": 400, "message": "API key not valid. Please pass a valid API key.",
    "status": "INVALID_ARGUMENT",
    "details": [{"@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com"}]}}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, dumps(QUOTA_429), CanonicalError(
        429, QUOTA_429["error"]["message"], "rate_limit", retry_after=7.0)),
    (400, dumps(BAD_KEY), CanonicalError(
        401, "API key not valid. Please pass a valid API key.", "authentication")),
    (503, dumps({"error": {"code": 503, "message": "The model is overloaded.",
                           "status": "UNAVAILABLE"}}),
     CanonicalError(503, "The model is overloaded.", "overloaded")),
    (403, dumps({"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}),
     CanonicalError(403, "denied", "permission")),
    (404, dumps({"error": {"code": 404, "message": "models/x is not found",
                           "status": "NOT_FOUND"}}),
     CanonicalError(404, "models/x is not found", "not_found")),
    (500, dumps({"error": {"code": 500, "message": "An internal error has occurred.",
                           "status": "INTERNAL"}}),
     CanonicalError(500, "An internal error has occurred.", "server")),
    (504, dumps({"error": {"code": 504, "message": "Deadline expired",
                           "status": "DEADLINE_EXCEEDED"}}),
     CanonicalError(504, "Deadline expired", "timeout")),
    (400, dumps({"error": {"code": 400, "message": "The input token count (2000000) exceeds "
                           "the maximum number of tokens allowed (1048576).",
                           "status": "INVALID_ARGUMENT"}}),
     CanonicalError(400, "The input token count (2000000) exceeds the maximum number of "
                    "tokens allowed (1048576).", "request_too_large")),
    (400, dumps({"error": {"code": 400, "message": "Invalid value", "status": "INVALID_ARGUMENT",
                           "details": [{"@type": RPC + "BadRequest", "fieldViolations": [
                               {"field": "generation_config.temperature",
                                "description": "out of range"}]}]}}),
     CanonicalError(400, "Invalid value", "invalid_request",
                    param="generation_config.temperature")),
    # streamGenerateContent without alt=sse wraps its error in an array
    (429, dumps([QUOTA_429]), CanonicalError(
        429, QUOTA_429["error"]["message"], "rate_limit", retry_after=7.0)),
    # Google's front end answers an unknown path in HTML
    (404, b"<!DOCTYPE html><title>Error 404 (Not Found)!!1</title>",
     CanonicalError(404, "<!DOCTYPE html><title>Error 404 (Not Found)!!1</title>", "not_found")),
    (502, b"", CanonicalError(502, "Gemini answered HTTP 502.", "server")),
    (429, dumps({"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED",
                           "details": [{"@type": RPC + "RetryInfo", "retryDelay": "0.5s"}]}}),
     CanonicalError(429, "slow", "rate_limit", retry_after=0.5)),
])
def test_gemini_errors_to_canonical(status: int, body: bytes, expected: CanonicalError) -> None:
    assert gemini.to_canonical_error(status, body) == expected


@pytest.mark.parametrize(("err", "status", "name"), [
    (CanonicalError(400, "bad", "invalid_request", param="messages[0]"), 400,
     "INVALID_ARGUMENT"),
    (CanonicalError(413, "too big", "request_too_large"), 400, "INVALID_ARGUMENT"),
    (CanonicalError(401, "no key", "authentication"), 401, "UNAUTHENTICATED"),
    (CanonicalError(403, "no", "permission"), 403, "PERMISSION_DENIED"),
    (CanonicalError(404, "none", "not_found"), 404, "NOT_FOUND"),
    (CanonicalError(429, "slow", "rate_limit", retry_after=7), 429, "RESOURCE_EXHAUSTED"),
    (CanonicalError(429, "slow", "rate_limit"), 429, "RESOURCE_EXHAUSTED"),
    (CanonicalError(529, "busy", "overloaded"), 503, "UNAVAILABLE"),
    (CanonicalError(500, "boom", "server"), 500, "INTERNAL"),
    (CanonicalError(504, "late", "timeout"), 504, "DEADLINE_EXCEEDED"),
])
def test_canonical_errors_to_gemini_as_the_sdk_reads_them(
        err: CanonicalError, status: int, name: str) -> None:
    code, body = gemini.from_canonical_error(err)
    assert code == status
    parsed = json.loads(body)
    assert parsed["error"]["code"] == status and parsed["error"]["status"] == name
    assert parsed["error"]["message"] == err.message
    with MockGemini(answer_with(body, status=code)) as sdk, pytest.raises(
            genai_errors.APIError) as info:
        sdk.client.models.generate_content(model="g", contents="x")
    assert (info.value.code, info.value.status, info.value.message) == (status, name,
                                                                        err.message)
    back = gemini.to_canonical_error(code, body)
    assert back.kind == (err.kind if err.kind != "request_too_large" else "invalid_request")
    assert back.retry_after == err.retry_after
    assert back.param == err.param


def test_stream_error_event_is_one_crlf_framed_data_event() -> None:
    event = gemini.stream_error_event(CanonicalError(500, "cut", "server"))
    assert event.startswith(b'data: {"error":{') and event.endswith(b"}}\r\n\r\n")
    sse_events = SSEDecoder().feed(event)
    assert json.loads(sse_events[0].data) == {"error": {"code": 500, "message": "cut",
                                                        "status": "INTERNAL"}}


def test_text_before_results_in_one_message_still_puts_the_results_first() -> None:
    req = Request(model="m", messages=[
        Message("user", [Text("go")]),
        Message("assistant", [ToolCall("c1", "a", "{}")]),
        Message("user", [Text("here you are"), ToolResult("c1", [Text("A")])]),
    ])
    parsed = check_provider_body(gemini.from_canonical_request(req, model=MODEL))
    assert [next(iter(p)) for p in parsed["contents"][2]["parts"]] == ["functionResponse", "text"]


def test_uppercase_openapi_type_names_become_json_schema_ones() -> None:
    """Regression: Gemini CLI's router sends responseJsonSchema typed "OBJECT"/"STRING",
    which OpenAI and Anthropic refuse."""
    from adapters.gemini import schema as gschema

    raw = {"type": "OBJECT", "properties": {
        "type": {"type": "STRING", "enum": ["A", "B"]},
        "n": {"type": ["INTEGER", "null"]}}, "required": ["type"]}
    assert gschema.lower_types(raw) == {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["A", "B"]},
        "n": {"type": ["integer", "null"]}}, "required": ["type"]}
