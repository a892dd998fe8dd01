"""The OpenAI dialect: wire shapes the gateway reads, and the same-dialect fast path.

Same-dialect traffic is never decoded whole. `decode_envelope` reads the top level of a request
into `Raw` slices of the caller's bytes (msgspec validates and skips the nested values in C),
picks out the few fields the gateway acts on, and `Envelope.patch` re-emits the body with only
`model` and `stream_options` changed; every other byte is copied through untouched.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters import canonical

__all__ = [
    "Envelope",
    "ErrorInfo",
    "RequestError",
    "Usage",
    "canonical_usage",
    "decode_envelope",
    "decode_object",
    "decode_usage",
    "encode_error",
    "parse_error",
]


class RequestError(ValueError):
    """The caller's body is not a usable OpenAI request; `param` names the field at fault."""

    def __init__(self, message: str, param: str | None = None, *, missing: bool = False) -> None:
        super().__init__(message)
        self.param = param
        self.missing = missing


# --- wire shapes ------------------------------------------------------------------------------


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class _UsageCarrier(msgspec.Struct):
    """Any response object or stream chunk; only its `usage` is decoded, the rest skipped."""

    usage: Usage | None = None
    choices: list[msgspec.Raw] | None = None


class _ErrorObject(msgspec.Struct):
    message: Any = None
    type: Any = None
    param: Any = None
    code: Any = None


class _ErrorBody(msgspec.Struct):
    # OpenAI nests the object under "error"; vLLM and some others put the fields at the top
    # level ({"object":"error","message":...}); a few send {"error": "text"} or {"detail": ...}.
    error: _ErrorObject | str | None = None
    message: Any = None
    type: Any = None
    code: Any = None
    detail: Any = None


class _ErrorOut(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None
    code: str | None


class _ErrorEnvelopeOut(msgspec.Struct):
    error: _ErrorOut


_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STR = msgspec.json.Decoder(str)
_STREAM = msgspec.json.Decoder(bool | None)
_STREAM_OPTIONS = msgspec.json.Decoder(_StreamOptions)
_USAGE = msgspec.json.Decoder(_UsageCarrier)
_ERROR = msgspec.json.Decoder(_ErrorBody)
_ENCODE = msgspec.json.Encoder()
_INCLUDE_USAGE = msgspec.Raw(b'{"include_usage":true}')


class Envelope:
    """The top level of an OpenAI request, fields kept as raw JSON slices."""

    __slots__ = ("fields", "include_usage", "model", "stream")

    def __init__(self, fields: dict[str, msgspec.Raw], model: str, stream: bool,
                 include_usage: bool) -> None:
        self.fields = fields
        self.model = model
        self.stream = stream
        # The caller asked for the usage chunk itself (so it must not be stripped).
        self.include_usage = include_usage

    def require(self, name: str) -> None:
        if name not in self.fields:
            raise RequestError(f"Missing required parameter: '{name}'.", name, missing=True)

    def patch(self, body: bytes, model: str, *, want_usage: bool) -> bytes:
        """The body to send upstream: `model` renamed, usage chunk requested when `want_usage`.

        Returns `body` itself when nothing changes, so the common case copies nothing.
        """
        add_usage = want_usage and self.stream and not self.include_usage
        if model == self.model and not add_usage:
            return body
        fields = dict(self.fields)
        fields["model"] = msgspec.Raw(_ENCODE.encode(model))
        if add_usage:
            fields["stream_options"] = _with_include_usage(fields.get("stream_options"))
        return _ENCODE.encode(fields)


def _with_include_usage(raw: msgspec.Raw | None) -> msgspec.Raw:
    # Keep whatever else the caller put in stream_options (e.g. include_obfuscation).
    if raw is None or bytes(raw) == b"null":
        return _INCLUDE_USAGE
    options = _FIELDS.decode(raw)
    options["include_usage"] = msgspec.Raw(b"true")
    return msgspec.Raw(_ENCODE.encode(options))


def decode_envelope(body: bytes) -> Envelope:
    fields = decode_object(body)
    raw_model = fields.get("model")
    if raw_model is None:
        raise RequestError("Missing required parameter: 'model'.", "model", missing=True)
    try:
        model = _STR.decode(raw_model)
    except msgspec.ValidationError:
        raise RequestError("'model' must be a string.", "model") from None
    raw_stream = fields.get("stream")
    try:
        stream = bool(_STREAM.decode(raw_stream)) if raw_stream is not None else False
    except msgspec.ValidationError:
        raise RequestError("'stream' must be a boolean.", "stream") from None
    if not model:
        raise RequestError("'model' must not be empty.", "model")
    include_usage = False
    raw_options = fields.get("stream_options")
    if raw_options is not None:
        try:
            options = _STREAM_OPTIONS.decode(raw_options)
        except msgspec.ValidationError as err:
            raise RequestError(f"Invalid 'stream_options': {err}", "stream_options") from None
        include_usage = bool(options and options.include_usage)
    return Envelope(fields, model, stream, include_usage)


def canonical_usage(usage: Usage) -> canonical.Usage:
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
    reasoning = (usage.completion_tokens_details.reasoning_tokens
                 if usage.completion_tokens_details else None)
    return canonical.Usage(input_tokens=usage.prompt_tokens,
                           output_tokens=usage.completion_tokens,
                           cached_tokens=cached or 0, reasoning_tokens=reasoning or 0)


def decode_object(body: bytes) -> dict[str, msgspec.Raw]:
    """The top level of a JSON object body, values left raw (Gemini bodies carry no model)."""
    try:
        return _FIELDS.decode(body)
    except msgspec.ValidationError as err:
        raise RequestError(f"The body must be a JSON object: {err}") from None
    except msgspec.DecodeError as err:
        raise RequestError(f"The body is not valid JSON: {err}") from None


def decode_usage(data: bytes) -> tuple[Usage | None, bool]:
    """(usage, has_choices) of a response body or one stream chunk's JSON.

    (None, True) when unreadable, so nothing is ever cut on a guess.
    """
    try:
        carrier = _USAGE.decode(data)
    except msgspec.MsgspecError:
        return None, True
    return carrier.usage, bool(carrier.choices)


class ErrorInfo(msgspec.Struct, frozen=True):
    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def parse_error(body: bytes) -> ErrorInfo | None:
    """The error an OpenAI-compatible provider answered with, however it shaped it."""
    try:
        err = _ERROR.decode(body)
    except msgspec.MsgspecError:
        return None
    if isinstance(err.error, _ErrorObject) and err.error.message is not None:
        e = err.error
        return ErrorInfo(_text(e.message) or "", _text(e.type), _text(e.code), _text(e.param))
    if isinstance(err.error, str):
        return ErrorInfo(err.error, _text(err.type), _text(err.code))
    if err.message is not None:
        return ErrorInfo(_text(err.message) or "", _text(err.type), _text(err.code))
    if err.detail is not None:
        return ErrorInfo(_text(err.detail) or "")
    return None


def encode_error(message: str, type: str, param: str | None, code: str | None) -> bytes:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    return _ENCODE.encode(_ErrorEnvelopeOut(_ErrorOut(message, type, param, code)))
