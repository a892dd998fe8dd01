"""Structured logs: one JSON object per line on stdout, for journald and log shippers."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

__all__ = ["configure", "event", "logger"]

logger = logging.getLogger("sluice")


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
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JSONFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a lifecycle event; `fields` must never hold secrets (callers pass labels, not keys)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
