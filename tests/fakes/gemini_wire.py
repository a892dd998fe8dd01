"""Gemini API (generativelanguage v1beta/v1) wire format for the fake provider: answers,
errors, framing. No IO.

Answers follow `GenerateContentResponse` as the API sends it (recorded streams of
gemini-2.5-flash in junjihashimoto/louter test-data): every chunk carries the cumulative
`usageMetadata`, `modelVersion` and the same `responseId`; zero counts are omitted (proto3
JSON); `totalTokenCount = prompt + candidates + thoughts`. What the fake accepts is in
`gemini_checks`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from google.genai import types as gt

from tests.fakes.gemini_checks import BodyProblem, GenerateContentRequest
from tests.fakes.text import split_text, words

__all__ = [
    "API_KEY_INVALID", "STREAM_ERROR", "UNREGISTERED_CALLER", "Reply", "array_close",
    "array_element", "count_tokens_response", "duration", "error_body", "finish_text",
    "generate_response", "invalid_argument", "list_models", "model_not_found", "model_object",
    "not_found_html", "prompt_tokens", "reply_text", "sse", "status_error", "stream_chunks",
    "thought_signature", "usage_metadata", "words",
]

API_KEY_INVALID = "API key not valid. Please pass a valid API key."
UNREGISTERED_CALLER = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
INTERNAL_MESSAGE = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
RPC = "type.googleapis.com/google.rpc."
RATE_LIMITS = "https://ai.google.dev/gemini-api/docs/rate-limits"
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)


# ---------------------------------------------------------------------------------------------
# Deterministic content and token counts
# ---------------------------------------------------------------------------------------------


def _text(content: gt.Content | None) -> str:
    if content is None:
        return ""
    return " ".join(p.text for p in content.parts or [] if p.text is not None)


def prompt_tokens(req: GenerateContentRequest | None, contents: list[gt.Content] | None = None) -> int:
    """Words of the system instruction and of every text part (thought text included)."""
    total = sum(words(_text(c)) for c in (contents or []))
    if req is not None:
        total += words(_text(req.system_instruction)) + sum(words(_text(c)) for c in req.contents or [])
    return total


def reply_text(req: GenerateContentRequest) -> str:
    """`"echo: <text of the last user turn>"`; a function-response turn echoes the responses."""
    last = next((c for c in reversed(req.contents or []) if c.role != "model"), None)
    said = " ".join(p.text for p in (last.parts or []) if p.text is not None and not p.thought) if last else ""
    if not said and last is not None:
        said = " ".join(
            f"{p.function_response.name} {_compact(p.function_response.response)}"
            for p in last.parts or []
            if p.function_response is not None
        )
    return f"echo: {said}"


def finish_text(text: str, config: gt.GenerationConfig | None) -> tuple[str, str]:
    """Apply `stopSequences` (cut, STOP) then `maxOutputTokens` (in words, MAX_TOKENS)."""
    finish = "STOP"
    if config is not None and config.stop_sequences:
        cuts = [text.find(s) for s in config.stop_sequences if s and s in text]
        if cuts:
            text = text[: min(cuts)]
    limit = config.max_output_tokens if config is not None else None
    if limit is not None and words(text) > limit:
        text, finish = " ".join(text.split()[:limit]), "MAX_TOKENS"
    return text, finish


def thought_signature(seed: str) -> str:
    """A deterministic, opaque base64 signature, as opaque as the real ones."""
    return base64.b64encode(hashlib.sha256(f"sig|{seed}".encode()).digest()).decode()


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def usage_metadata(prompt: int, candidates: int, thoughts: int = 0, cached: int = 0) -> dict[str, Any]:
    """Counts in field-number order, zeros omitted (proto3 JSON), as the API sends them."""
    # cachedContentTokenCount is a part of promptTokenCount, not added to it.
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "cachedContentTokenCount": cached,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}] if prompt else 0,
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": cached}] if cached else 0,
        "thoughtsTokenCount": thoughts,
    }
    return {k: v for k, v in usage.items() if v}


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------

# Finish reasons after which the candidate carries no content.
CONTENT_BLOCKED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "MALFORMED_FUNCTION_CALL",
})


def _ratings() -> list[dict[str, Any]]:
    """Safety ratings of a blocked answer or prompt: one category HIGH and `blocked`."""
    cats = ("SEXUALLY_EXPLICIT", "HATE_SPEECH", "HARASSMENT", "DANGEROUS_CONTENT")
    out: list[dict[str, Any]] = []
    for cat in cats:
        rating: dict[str, Any] = {"category": f"HARM_CATEGORY_{cat}", "probability": "NEGLIGIBLE"}
        if cat == "HARASSMENT":
            rating.update(probability="HIGH", blocked=True)
        out.append(rating)
    return out


@dataclass(frozen=True)
class Reply:
    """Everything one answer says, streamed or not."""

    model: str
    response_id: str
    text: str  # the answer; "" with function calls only
    finish_reason: str
    prompt_tokens: int
    thoughts: str | None = None  # thought text shown (thinkingConfig.includeThoughts)
    thoughts_tokens: int = 0
    cached: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)  # functionCall objects
    signature: str | None = None  # on the first functionCall part, else on the (last) text part
    block_reason: str | None = None  # promptFeedback.blockReason: no candidates at all
    usage: dict[str, Any] | None = None  # replaces every usageMetadata
    chunks: int | None = None  # text deltas in a stream; None: one per word

    def said(self) -> int:
        """candidatesTokenCount: words of the text, and of `name + " " + args` per call."""
        calls = (f"{c['name']} {_compact(c.get('args', {}))}" for c in self.calls)
        return words(self.text) + sum(words(c) for c in calls)

    def usage_at(self, candidates: int) -> dict[str, Any]:
        if self.usage is not None:
            return self.usage
        return usage_metadata(self.prompt_tokens, candidates, self.thoughts_tokens, self.cached)


def _envelope(r: Reply, candidate: dict[str, Any] | None, candidates: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if candidate is not None:
        body["candidates"] = [candidate]
    body["usageMetadata"] = r.usage_at(candidates)
    body["modelVersion"] = r.model
    body["responseId"] = r.response_id
    return body


def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    # A candidate with nothing to say keeps its role and loses `parts` (seen with MAX_TOKENS
    # spent on thinking): a reader must not assume `content.parts` exists.
    content: dict[str, Any] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    candidate: dict[str, Any] = {"content": content}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    return candidate


def _call_parts(r: Reply) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for i, call in enumerate(r.calls):
        part: dict[str, Any] = {"functionCall": call}
        if i == 0 and r.signature:
            part["thoughtSignature"] = r.signature  # parallel calls: the first one only
        parts.append(part)
    return parts


def _special(r: Reply) -> dict[str, Any] | None:
    if r.block_reason is not None:
        feedback: dict[str, Any] = {"blockReason": r.block_reason}
        if r.block_reason == "SAFETY":
            feedback["safetyRatings"] = _ratings()
        body = _envelope(r, None, 0)
        return {"promptFeedback": feedback, **body}
    if r.finish_reason in CONTENT_BLOCKED:
        candidate = {"finishReason": r.finish_reason, "index": 0}
        if r.finish_reason == "SAFETY":
            candidate["safetyRatings"] = _ratings()
        return _envelope(r, candidate, 0)
    return None


def generate_response(r: Reply) -> dict[str, Any]:
    """The one `GenerateContentResponse` of a `generateContent` call."""
    if (special := _special(r)) is not None:
        return special
    parts: list[dict[str, Any]] = []
    if r.thoughts:
        parts.append({"text": r.thoughts, "thought": True})
    if r.text:
        text_part: dict[str, Any] = {"text": r.text}
        if r.signature and not r.calls:
            text_part["thoughtSignature"] = r.signature
        parts.append(text_part)
    parts += _call_parts(r)
    return _envelope(r, _candidate(parts, r.finish_reason), r.said())


def stream_chunks(r: Reply) -> list[dict[str, Any]]:
    """The `GenerateContentResponse` chunks of a `streamGenerateContent` call.

    Thought parts first, then one text delta per word (or `chunks` deltas), the last one with
    `finishReason` (and the signature, where real streams put it for a text answer); function
    calls come whole, all in one chunk, the first with the signature. Every chunk carries the
    usage so far: a reader keeps the last one, it must not add them up.
    """
    if (special := _special(r)) is not None:
        return [special]
    out: list[dict[str, Any]] = []
    for piece in split_text(r.thoughts, None) if r.thoughts else []:
        out.append(_envelope(r, _candidate([{"text": piece, "thought": True}], None), 0))
    pieces = split_text(r.text, r.chunks) if (r.text or not r.calls) else []
    said = 0
    for i, piece in enumerate(pieces):
        said += words(piece)
        last = i == len(pieces) - 1 and not r.calls
        part: dict[str, Any] = {"text": piece}
        if last and r.signature:
            part["thoughtSignature"] = r.signature
        out.append(_envelope(r, _candidate([part], r.finish_reason if last else None), said))
    if not pieces and not r.calls:
        out.append(_envelope(r, _candidate([], r.finish_reason), 0))
    if r.calls:
        out.append(_envelope(r, _candidate(_call_parts(r), r.finish_reason), r.said()))
    return out


def count_tokens_response(total: int) -> dict[str, Any]:
    body: dict[str, Any] = {"totalTokens": total}  # "always non-negative"; 0 is still sent
    if total:
        body["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": total}]
    return body


def model_object(model_id: str) -> dict[str, Any]:
    name = model_id if model_id.startswith("models/") else f"models/{model_id}"
    short = name.removeprefix("models/")
    return {
        "name": name, "version": "001", "displayName": short.replace("-", " ").title(),
        "description": f"Fake {short}", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": True,
    }


def list_models(ids: list[str], page_size: int | None, page_token: str | None) -> dict[str, Any]:
    start = int(page_token.removeprefix("p")) if page_token and page_token.startswith("p") else 0
    size = page_size if page_size and page_size > 0 else 50  # the API's documented default
    page = ids[start : start + size]
    body: dict[str, Any] = {"models": [model_object(m) for m in page]}
    if start + size < len(ids):
        body["nextPageToken"] = f"p{start + size}"
    return body


# ---------------------------------------------------------------------------------------------
# Errors, in Google's words
# ---------------------------------------------------------------------------------------------

STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
# The canonical google.rpc messages, and the Gemini-specific ones seen in the wild.
_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: QUOTA_MESSAGE,
    500: INTERNAL_MESSAGE,
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


def error_body(code: int, message: str, status: str, details: list[Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def duration(seconds: float) -> str:
    """proto3 JSON Duration: "7s", "0.500s" (0, 3, 6 or 9 fractional digits)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s" if round(seconds, 3) == seconds else f"{seconds:.9f}s"


def status_error(status: int, retry_delay: float | None = None) -> dict[str, Any]:
    name = STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    message = _MESSAGES.get(status, f"Fake error {status}.")
    details: list[Any] = []
    if status == 429:
        # QuotaFailure, Help, RetryInfo, in this order (as quoted in google/langextract#50).
        violation = {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
            "quotaValue": "10",
        }
        link = {"description": "Learn more about Gemini API quotas", "url": RATE_LIMITS}
        details = [
            {"@type": RPC + "QuotaFailure", "violations": [violation]},
            {"@type": RPC + "Help", "links": [link]},
        ]
        if retry_delay is not None:
            details.append({"@type": RPC + "RetryInfo", "retryDelay": duration(retry_delay)})
    return error_body(status, message, name, details)


def invalid_argument(problem: BodyProblem) -> dict[str, Any]:
    # A violation of the whole body (an unknown top-level name) has no "field".
    violations = [
        {"field": f, "description": d} if f else {"description": d} for f, d in problem.violations
    ]
    details = [{"@type": RPC + "BadRequest", "fieldViolations": violations}] if violations else []
    return error_body(400, problem.message, "INVALID_ARGUMENT", details)


def bad_key_error() -> dict[str, Any]:
    # Quoted in continuedev/continue#8516: a wrong key is a 400, not a 401.
    info = {
        "@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
    localized = {"@type": RPC + "LocalizedMessage", "locale": "en-US", "message": API_KEY_INVALID}
    return error_body(400, API_KEY_INVALID, "INVALID_ARGUMENT", [info, localized])


def no_key_error() -> dict[str, Any]:
    # No key at all is a 403 (PublicAffairs/openai-gemini#92).
    return error_body(403, UNREGISTERED_CALLER, "PERMISSION_DENIED")


def model_not_found(model: str, version: str, method: str) -> dict[str, Any]:
    msg = (
        f"models/{model} is not found for API version {version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their supported "
        "methods."
    )
    return error_body(404, msg, "NOT_FOUND")


def not_found_html(path: str) -> str:
    # A path no API method binds to is answered by Google's front end, in HTML, not JSON.
    return (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1"
        f"</title>\n  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n  <p>The requested URL "
        f"<code>{path}</code> was not found on this server.  <ins>That\u2019s all we know.</ins>\n"
    )


STREAM_ERROR = error_body(500, INTERNAL_MESSAGE, "INTERNAL")


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------


def _dumps(obj: Any, indent: int | None = None) -> str:
    # The API writes `"key": value` pairs joined by a bare "," on one line, escapes < and >
    # as \u003c / \u003e (louter test-data), and pretty-prints with 2 spaces outside SSE.
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ": "), indent=indent)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def dumps(obj: Any) -> bytes:
    """A whole JSON answer or error, pretty-printed as the API sends them."""
    return _dumps(obj, indent=2).encode()


def sse(obj: Any) -> bytes:
    """One `?alt=sse` event: a single `data:` line, events separated by CRLF CRLF."""
    return f"data: {_dumps(obj)}\r\n\r\n".encode()


def array_element(obj: Any, first: bool) -> bytes:
    """One element of the streamed JSON array that `streamGenerateContent` sends without
    `alt=sse`: `[{...}` first, then `\\r\\n,\\r\\n{...}` for each further element."""
    return (("[" if first else "\r\n,\r\n") + _dumps(obj, indent=2)).encode()


def array_close(empty: bool) -> bytes:
    return b"[]" if empty else b"\r\n]"
