"""Log lines: one JSON object per line, every configured secret and credential form masked."""

from __future__ import annotations

import io
import json
import logging

from proxy import log
from proxy.records import UsageRecord

SECRET = "sk-configured-secret-42"


def record(rid: str, model: str = "gpt-4o") -> UsageRecord:
    return UsageRecord(1.8e9, rid, "team-a", "openai", "chat", model, "oai", "oai#0 (env:K)",
                       "gpt-4o", 200, "ok", None, 1, 11, 7)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.getvalue().splitlines()]


def test_request_lines_carry_the_record_and_mask_a_configured_secret() -> None:
    out = io.StringIO()
    log.configure("info", secrets=[SECRET], stream=out)
    log.request_lines([record("r1"), record("r2", model=f"x-{SECRET}")])
    first, second = lines(out)
    assert first["event"] == "request" and first["level"] == "info"
    assert (first["request_id"], first["key"], first["input_tokens"]) == ("r1", "team-a", 11)
    assert second["model"] == "x-***" and SECRET not in out.getvalue()


def test_bodies_and_lifecycle_events_get_the_credential_pattern_mask() -> None:
    out = io.StringIO()
    log.configure("info", secrets=[SECRET], stream=out)
    log.request_lines([record("r1")], {"r1": {"request_body": "use Bearer abc.def-123 and "
                                              "https://x/?key=AIzaSyXYZ"}})
    log.event("upstream said", logging.WARNING, detail="x-api-key: sk-ant-999 " + SECRET)
    body, event = lines(out)
    assert body["request_body"] == "use Bearer *** and https://x/?key=***"
    assert event["detail"] == "x-api-key: *** ***"


def test_nothing_is_written_below_the_level() -> None:
    out = io.StringIO()
    log.configure("warning", stream=out)
    log.request_lines([record("r1")])
    log.event("listening")
    assert out.getvalue() == ""
