"""Structured logs: one JSON object per line on stdout, for journald and log shippers.

Lifecycle events go through `logging`; the per-request lines, one per usage record, are
encoded in batches by the usage writer and written straight to the same stream, which costs a
fraction of a `logging` call. Every configured secret is masked in every line, whatever field
or exception text it turns up in, and so are the credential forms a provider or client might
echo (`Authorization`, `x-api-key`, `x-goog-api-key`, `?key=`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import orjson

if TYPE_CHECKING:
    from proxy.records import UsageRecord

__all__ = ["configure", "configure_level", "event", "logger", "redact", "redact_url",
           "request_lines"]

logger = logging.getLogger("sluice")

_MASK = "***"
_CREDENTIAL_FORMS = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?|x-api-key[\"']?\s*[:=]\s*[\"']?|"
    r"x-goog-api-key[\"']?\s*[:=]\s*[\"']?|[?&]key=|bearer\s+)([^\s\"'&,;}]+)")


class _Redactor:
    """Masks the configured secrets and credential-shaped values in a line of text."""

    def __init__(self) -> None:
        self._secrets: re.Pattern[str] | None = None
        self._encoded: list[bytes] = []

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        words = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, words))) if words else None
        self._encoded = [w.encode() for w in words]

    def has_secret(self, data: bytes | bytearray) -> bool:
        return self._secrets is not None and any(w in data for w in self._encoded)

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(_MASK, text)
        return _CREDENTIAL_FORMS.sub(lambda m: m.group(1) + _MASK, text)


redact = _Redactor()


def redact_url(url: str) -> str:
    """The URL with its password, if any, replaced by `***` (stores and proxies name theirs
    in URLs; logs, errors and views show them this way)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    # libpq also takes the password as a query parameter.
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
_stream: IO[str] = sys.stdout


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


def configure(level: str = "info", secrets: Iterable[str] = (), stream: IO[str] | None = None
              ) -> None:
    """Log to `stream` (stdout) at `level`, masking `secrets` (every key the config holds)."""
    global _stream
    _stream = stream or sys.stdout
    handler = logging.StreamHandler(_stream)
    handler.setFormatter(_JSONFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    redact.set_secrets(secrets)


def configure_level(level: str) -> None:
    logger.setLevel(level.upper())


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a lifecycle event; `fields` should hold labels, not secrets (those are masked)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def request_lines(records: Sequence[UsageRecord],
                  bodies: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """One `request` line per record, at info level, written in one go; `bodies` adds the
    prompt and completion of the requests it holds (`log.bodies: true`)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    out = bytearray()
    for rec in records:
        if bodies and rec.request_id in bodies:
            # Prompts may hold anything, credentials included: these lines get the full mask.
            line = _REQUEST_HEAD + _ENCODER.encode(rec)[1:-1] + b","
            line += orjson.dumps(bodies[rec.request_id])[1:]
            out += redact(line.decode()).encode() + b"\n"
            continue
        # The record's JSON object is encoded straight after the line's head, over the head's
        # last comma, which is then put back: no intermediate bytes per line.
        comma = len(out) + len(_REQUEST_HEAD) - 1
        out += _REQUEST_HEAD
        _ENCODER.encode_into(rec, out, comma)
        out[comma] = 0x2C  # ","
        out += b"\n"
    # A record holds names, labels and counts, never a header or a body, so only a configured
    # secret could turn up (a caller who put one in a model name); the credential-pattern scan,
    # ~30 µs a line, is kept for lines with bodies and for lifecycle events.
    if redact.has_secret(out):
        out = bytearray(redact(out.decode()).encode())
    buffer = getattr(_stream, "buffer", None)
    if buffer is not None:
        _stream.flush()
        buffer.write(out)
        buffer.flush()
    else:
        _stream.write(out.decode())
        _stream.flush()


_ENCODER = msgspec.json.Encoder()
_REQUEST_HEAD = b'{"level":"info","event":"request",'
