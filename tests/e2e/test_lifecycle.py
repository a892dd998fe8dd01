"""The gateway as a service: live reload under load, an invalid reload refused, graceful drain
on SIGTERM (streams finish, or end with the dialect's error event when the drain time is over),
usage flushed, and systemd's notify protocol on a real datagram socket."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import ADMIN_KEY, GATEWAY_ENV, GATEWAY_KEY, UPSTREAM_KEY
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway, ThreadLoop, stored_request_ids

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HELLO = [{"role": "user", "content": "one two three four five six seven eight"}]


@pytest.fixture(scope="module")
def pair(fake_loop: ThreadLoop) -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    fakes = (FakeOpenAI(api_key=UPSTREAM_KEY), FakeOpenAI(api_key=UPSTREAM_KEY))
    for fake in fakes:
        fake_loop.run(fake.start())
    yield fakes
    for fake in fakes:
        fake_loop.run(fake.stop())


@pytest.fixture(autouse=True)
def _reset(pair: tuple[FakeOpenAI, FakeOpenAI]) -> Iterator[None]:
    yield
    for fake in pair:
        fake.reset()


def config(a: FakeOpenAI, b: FakeOpenAI, *, m_on: str = "pa", extra: str = "",
           server: str = "") -> str:
    return textwrap.dedent(f"""\
        server: {{drain_timeout: 10s{server}}}
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys: [{{name: team-a, key: env:SLUICE_KEY_TEAM_A}}]
        usage: {{flush_interval: 50ms}}
        providers:
          pa: {{kind: openai, base_url: "{a.base_url}", api_key: env:UP_OPENAI_KEY}}
          pb: {{kind: openai, base_url: "{b.base_url}", api_key: env:UP_OPENAI_KEY}}
        models:
          m: {{targets: [{{provider: {m_on}, model: gpt-4o-mini}}]}}
        {extra}""")


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0,
                         timeout=30)


def streamed_text(c: openai.OpenAI, model: str = "m") -> str:
    stream = c.chat.completions.create(model=model, messages=HELLO,  # type: ignore[arg-type]
                                       stream=True)
    return "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)


def open_streams(gw: Gateway, fake: FakeOpenAI, n: int
                 ) -> tuple[list[threading.Thread], list[str], list[BaseException]]:
    """`n` SDK streams in threads, returned once the fake has seen every one of them arrive:
    (threads, texts of those that completed, errors of those that failed)."""
    texts: list[str] = []
    failures: list[BaseException] = []

    def one() -> None:
        try:
            texts.append(streamed_text(client(gw)))
        except BaseException as err:  # every failure counts, whatever it is
            failures.append(err)
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(fake.requests) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return threads, texts, failures


def test_reload_under_streaming_load_fails_nothing_and_new_routes_take_effect(
        tmp_path: Path, pair: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    a, b = pair
    for fake in pair:
        fake.behavior.chunk_delay = 0.02  # a stream takes ~0.2 s: several straddle each reload
    gw = Gateway(tmp_path, config(a, b), GATEWAY_ENV).start()
    path = next(tmp_path.glob("config-*.yaml"))
    failures: list[BaseException] = []
    texts: list[str] = []
    stop = threading.Event()

    def load() -> None:
        c = client(gw)
        while not stop.is_set():
            try:
                texts.append(streamed_text(c))
            except BaseException as err:  # every failure counts, whatever it is
                failures.append(err)
    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        time.sleep(0.5)
        path.write_text(config(a, b, m_on="pb", extra=(
            "  m2: {targets: [{provider: pa, model: gpt-4o-mini}]}\n")))
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGHUP)
        time.sleep(0.6)
        path.write_text(config(a, b, m_on="pa"))
        r = httpx.post(f"{gw.url}/v0/management/reload", headers=ADMIN)
        assert r.status_code == 200, r.text
        time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
        gw.stop()
    assert not failures, failures[:3]
    assert len(texts) >= 8 and all(t == "echo: " + HELLO[0]["content"] for t in texts)
    assert b.requests, "after the SIGHUP reload, model m went to provider pb"
    assert '"event":"config reloaded","trigger":"SIGHUP"' in gw.log()
    assert '"event":"config reloaded","trigger":"api"' in gw.log()


def test_new_route_after_reload_and_an_invalid_reload_keeps_the_old_config(
        tmp_path: Path, pair: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    a, b = pair
    gw = Gateway(tmp_path, config(a, b), GATEWAY_ENV).start()
    path = next(tmp_path.glob("config-*.yaml"))
    c = client(gw)
    try:
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="m2", messages=HELLO)  # type: ignore[arg-type]
        # A cooldown on pa survives a reload that keeps pa; pb's is dropped with pb.
        for name in ("pa", "pb"):
            r = httpx.post(f"{gw.url}/v0/operations/providers/{name}/cooldown", headers=ADMIN,
                           json={"duration": "10m", "reason": "manual"})
            assert r.status_code == 200
        path.write_text(config(a, b, extra="  m2: {targets: [{provider: pa, model: x}]}\n")
                        .replace(f'  pb: {{kind: openai, base_url: "{b.base_url}", '
                                 'api_key: env:UP_OPENAI_KEY}\n', ""))
        assert httpx.post(f"{gw.url}/v0/management/reload", headers=ADMIN).status_code == 200
        cooling = httpx.get(f"{gw.url}/v0/operations/cooldown/status", headers=ADMIN).json()
        assert cooling["providers_in_cooldown"] == ["pa"]
        httpx.post(f"{gw.url}/v0/operations/providers/pa/recover", headers=ADMIN)
        assert c.chat.completions.create(model="m2", messages=HELLO)  # type: ignore[arg-type]

        path.write_text("models: {m: {targets: [{provider: nowhere}]}}\nbogus_key: 1\n")
        r = httpx.post(f"{gw.url}/v0/management/reload", headers=ADMIN)
        assert r.status_code == 422
        assert "bogus_key: unknown field" in r.json()["error"]["message"]
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGHUP)
        time.sleep(0.3)
        assert '"event":"config reload refused' in gw.log()
        assert c.chat.completions.create(model="m2", messages=HELLO)  # still the old config
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'sluice_config_reloads_total{result="error"} 2.0' in metrics
        assert 'sluice_config_reloads_total{result="ok"} 1.0' in metrics
    finally:
        gw.stop()


def test_sigterm_drains_fifty_open_streams_and_flushes_their_usage(
        tmp_path: Path, pair: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    a, b = pair
    a.behavior.chunk_delay = 0.1  # each stream lasts ~1 s
    gw = Gateway(tmp_path, config(a, b), GATEWAY_ENV).start()
    threads, texts, failures = open_streams(gw, a, 50)
    assert gw.proc is not None
    os.kill(gw.proc.pid, signal.SIGTERM)
    time.sleep(0.1)
    health = httpx.get(f"{gw.url}/health")
    assert health.status_code == 503 and health.json()["status"] == "draining"
    refused = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "m", "messages": HELLO},
                         headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "gateway_shutting_down"
    for t in threads:
        t.join(20)
    assert gw.proc.wait(20) == 0
    assert not failures, failures[:3]
    assert len(texts) == 50 and all(t == "echo: " + HELLO[0]["content"] for t in texts)
    assert len(stored_request_ids(gw.data_dir)) == 51  # the 50 streams and the refused request


def test_streams_past_the_drain_time_end_with_the_dialects_error_event(
        tmp_path: Path, pair: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    a, b = pair
    a.behavior.chunk_delay = 1.0  # ~8 s a stream, past a 1 s drain
    gw = Gateway(tmp_path, config(a, b).replace("drain_timeout: 10s", "drain_timeout: 1s"),
                 GATEWAY_ENV).start()
    threads, _, errors = open_streams(gw, a, 3)
    time.sleep(0.3)
    assert gw.proc is not None
    started = time.monotonic()
    os.kill(gw.proc.pid, signal.SIGTERM)
    for t in threads:
        t.join(20)
    assert gw.proc.wait(20) == 0
    assert time.monotonic() - started < 5
    assert len(errors) == 3
    assert all(isinstance(e, openai.APIError) and "shutting down" in str(e) for e in errors)
    records = stored_request_ids(gw.data_dir)
    assert len(records) == 3


def test_notify_protocol_ready_reloading_stopping_and_watchdog(
        tmp_path: Path, pair: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    a, b = pair
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    env = {**GATEWAY_ENV, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
    gw = Gateway(tmp_path, config(a, b), env).start()
    seen: list[str] = []

    def until(word: str) -> None:
        while not any(word in m for m in seen):
            seen.append(sock.recv(4096).decode())
    try:
        until("READY=1")
        until("WATCHDOG=1")
        assert gw.proc is not None
        seen.clear()
        os.kill(gw.proc.pid, signal.SIGHUP)
        until("RELOADING=1")
        reloading = next(m for m in seen if "RELOADING=1" in m)
        assert "MONOTONIC_USEC=" in reloading
        until("READY=1")
        os.kill(gw.proc.pid, signal.SIGTERM)
        until("STOPPING=1")
        assert gw.proc.wait(20) == 0
    finally:
        gw.stop()
        sock.close()


def test_a_changed_config_file_is_reloaded_when_watched(
        tmp_path: Path, pair: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    a, b = pair
    gw = Gateway(tmp_path, config(a, b, server=", watch_config: true"), GATEWAY_ENV).start()
    path = next(tmp_path.glob("config-*.yaml"))
    try:
        path.write_text(config(a, b, server=", watch_config: true",
                               extra="  m2: {targets: [{provider: pb, model: x}]}\n"))
        deadline = time.monotonic() + 10
        while '"trigger":"file changed"' not in gw.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client(gw).chat.completions.create(model="m2", messages=HELLO)  # type: ignore[arg-type]
        assert b.requests
    finally:
        gw.stop()
