"""`make run` with no config and no key: the offline `echo` model answers the SDK and curl."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from tests.harness import PROVIDER_ENV, Gateway


def test_echo_answers_without_any_key(default_gateway: Gateway, sdk: Callable[..., openai.OpenAI]) -> None:
    client = sdk(f"{default_gateway.url}/v1", api_key="unused")
    messages = [{"role": "system", "content": "you repeat"},
                {"role": "user", "content": "the quick brown fox"}]
    raw = client.chat.completions.with_raw_response.create(model="echo", messages=messages)
    done = raw.parse()
    assert done.choices[0].message.content == "the quick brown fox"
    assert done.usage is not None
    # Honest counts: echo's tokens are words, 6 in the prompt and 4 in the answer.
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (6, 4)
    assert raw.headers["x-sluice-provider"] == "echo"


def test_echo_streams_word_by_word(default_gateway: Gateway, sdk: Callable[..., openai.OpenAI]) -> None:
    client = sdk(f"{default_gateway.url}/v1", api_key="unused")
    chunks = list(client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True}))
    words = [c.choices[0].delta.content for c in chunks if c.choices and
             c.choices[0].delta.content]
    assert words == ["one ", "two ", "three"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    plain = list(client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two"}], stream=True))
    assert all(c.usage is None and c.choices for c in plain)


def test_echo_honours_max_tokens_and_other_endpoints(default_gateway: Gateway, sdk: Callable[..., openai.OpenAI]) -> None:
    client = sdk(f"{default_gateway.url}/v1", api_key="unused")
    cut = client.chat.completions.create(
        model="echo", max_tokens=2, messages=[{"role": "user", "content": "a b c d"}])
    assert cut.choices[0].message.content == "a b"
    assert cut.choices[0].finish_reason == "length"
    assert client.completions.create(model="echo", prompt="x y").choices[0].text == "x y"
    emb = client.embeddings.create(model="echo", input="x")
    assert len(emb.data[0].embedding) == 16
    assert [m.id for m in client.models.list()] == ["echo"]


def test_curl_style_request_and_health(default_gateway: Gateway) -> None:
    resp = httpx.post(f"{default_gateway.url}/v1/chat/completions",
                      headers={"Content-Type": "application/json"},
                      content=b'{"model":"echo","messages":[{"role":"user","content":"hi"}]}')
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "hi"
    health = httpx.get(f"{default_gateway.url}/health").json()
    assert health["status"] == "ok"
    assert httpx.get(f"{default_gateway.url}/ping").text == "OK"


def test_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in Gateway(tmp_path).env.items() if k not in PROVIDER_ENV}
    proc = subprocess.run([sys.executable, "-m", "proxy", "serve", "--host", "0.0.0.0"],
                          capture_output=True, text=True, env=env, timeout=30,
                          cwd=Path(__file__).parent.parent.parent)
    assert proc.returncode == 2
    assert "no gateway keys" in proc.stderr


def test_bad_config_stops_the_start_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("providers:\n  openai: {kind: openai, api_key: env:NOPE_KEY, rpmm: 5}\n")
    proc = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).parent.parent.parent)
    assert proc.returncode == 2
    assert "providers.openai.rpmm: unknown field" in proc.stderr
