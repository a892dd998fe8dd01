"""OpenAI request checks for the fake provider: the SDK's own request types. No IO.

Requests are validated against the official SDK's own request TypedDicts
(`openai.types.chat.CompletionCreateParams`, `openai.types.CompletionCreateParams`,
`openai.types.EmbeddingCreateParams`), rewritten once, at import, into eager twins
(`eager_types`: lists checked item by item, unknown keys refused as the API refuses them with
"Unrecognized request argument supplied"), and validated in pydantic's strict mode on the raw
JSON (`"5"` is not an integer on the wire).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, get_args

from openai.types import CompletionCreateParams as _LegacyParams
from openai.types import EmbeddingCreateParams as _EmbeddingParams
from openai.types.chat import CompletionCreateParams as _ChatParams
from pydantic import TypeAdapter, ValidationError

from tests.fakes.eager_types import EagerRewrite

__all__ = ["BodyProblem", "validate_body"]

JSON_PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON. If you have trouble figuring out how to fix this, please contact us through our "
    "help center at help.openai.com.)"
)


# ---------------------------------------------------------------------------------------------
# Request validation
# ---------------------------------------------------------------------------------------------


def _adapters(forbid: bool) -> dict[str, TypeAdapter[Any]]:
    eager = EagerRewrite(forbid=forbid)
    chat_plain, chat_stream = get_args(_ChatParams)
    legacy_plain, legacy_stream = get_args(_LegacyParams)
    # The SDK's unions are {stream absent/false/null} | {stream: true}; validating the branch the
    # body asks for is equivalent and keeps pydantic's error list free of the other branch.
    return {
        "chat": TypeAdapter(eager(chat_plain)),
        "chat+stream": TypeAdapter(eager(chat_stream)),
        "completions": TypeAdapter(eager(legacy_plain)),
        "completions+stream": TypeAdapter(eager(legacy_stream)),
        "embeddings": TypeAdapter(eager(_EmbeddingParams)),
    }


_STRICT = _adapters(forbid=True)
_LENIENT = _adapters(forbid=False)


@dataclass(frozen=True)
class BodyProblem:
    """Why a request body was refused: the OpenAI-style error fields plus the full detail."""

    message: str
    param: str | None
    code: str | None
    detail: str


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param_path(loc: tuple[int | str, ...]) -> str:
    # Union members show up in `loc` by type ('ChatCompletionUserMessageParam', 'list[int]',
    # 'str'); only the other names and the indexes are fields of the JSON body.
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[a-z_][a-z0-9_]*", part) and part not in _TYPE_TAGS:
            out += f".{part}" if out else part
    return out


def _problem_from(exc: ValidationError) -> BodyProblem:
    errors = exc.errors(include_url=False)
    # A message with role 'user' fails the 'developer', 'system', ... branches of the message
    # union on their `role` literal; those branches are not what the caller meant, so their
    # errors are dropped when another branch explains the failure.
    wrong_branches = [
        e["loc"][:-1]
        for e in errors
        if e["type"] == "literal_error" and e["loc"] and e["loc"][-1] in ("role", "type")
    ]
    telling = [
        e for e in errors if not any(e["loc"][: len(b)] == b for b in wrong_branches)
    ] or errors
    first = telling[0]
    param = _param_path(first["loc"]) or None
    detail = str(exc)
    match first["type"]:
        case "missing":
            return BodyProblem(
                f"Missing required parameter: '{param}'.",
                param,
                "missing_required_parameter",
                detail,
            )
        case "extra_forbidden":
            return BodyProblem(
                f"Unrecognized request argument supplied: {param}", None, None, detail
            )
        case kind if kind.endswith("_type"):
            msg = f"Invalid type for '{param}': {first['msg']}."
            return BodyProblem(msg, param, "invalid_type", detail)
        case _:
            msg = f"Invalid value for '{param}': {first['msg']}."
            return BodyProblem(msg, param, "invalid_value", detail)


def validate_body(
    endpoint: str, raw: bytes, *, forbid_extra: bool
) -> tuple[Any, BodyProblem | None]:
    """Parse and validate one request body for `endpoint` ('chat', 'completions', 'embeddings').

    Returns the parsed JSON (None when it is not JSON) and the problem, if any.
    """
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, BodyProblem(JSON_PARSE_ERROR, None, None, f"body is not JSON: {exc}")
    if not isinstance(parsed, dict):
        msg = "Invalid type for request body: expected an object."
        return parsed, BodyProblem(msg, None, "invalid_type", f"top-level JSON is {type(parsed)}")
    key = endpoint
    if endpoint != "embeddings" and parsed.get("stream") is True:
        key += "+stream"
    adapter = (_STRICT if forbid_extra else _LENIENT)[key]
    try:
        adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        return parsed, _problem_from(exc)
    if parsed.get("stream_options") is not None and parsed.get("stream") is not True:
        # The SDK's types allow it, the API does not (its body, quoted in BerriAI/litellm#5803).
        msg = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return parsed, BodyProblem(msg, "stream_options", None, msg)
    return parsed, None
