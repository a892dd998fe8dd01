"""Nothing is lost: every record reaches a real PostgreSQL server, through an outage of it, and
the SQLite file through a SIGTERM under load; budgets survive a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.store import open_store
from tests.e2e.conftest import ADMIN_KEY, GATEWAY_ENV, GATEWAY_KEY
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway, stored_request_ids
from tests.services.postgres import PostgresServer

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
HELLO = [{"role": "user", "content": "hello there"}]


def config(fake: FakeOpenAI, store: str = "sqlite", extra_keys: str = "") -> str:
    return textwrap.dedent(f"""\
        admin: {{key: env:SLUICE_ADMIN_KEY}}
        keys:
          - {{name: team-a, key: env:SLUICE_KEY_TEAM_A}}
          {extra_keys}
        usage: {{store: "{store}", flush_interval: 50ms}}
        providers:
          oai: {{kind: openai, base_url: "{fake.base_url}", api_key: env:UP_OPENAI_KEY}}
        models:
          m: {{targets: [{{provider: oai, model: gpt-4o-mini, price: 1.0}}]}}
        """)


def count_in(store_url: str, data_dir: Path) -> int:
    async def count() -> int:
        store = open_store(store_url, data_dir)
        await store.open()
        try:
            return await store.count()
        finally:
            await store.close()
    return asyncio.run(count())


def metric(gw: Gateway, name: str) -> float:
    body = httpx.get(f"{gw.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def burst(client: httpx.Client, n: int) -> list[str]:
    """`n` chat calls, each answered 200; their request ids."""
    ids = []
    for _ in range(n):
        r = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
        assert r.status_code == 200
        ids.append(r.headers["x-request-id"])
    return ids


@pytest.fixture
def pg_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"usage_{request.node.name.lower()}"[:60]
    yield postgres.create_database(name)
    if not postgres.running:
        postgres.start()
    postgres.drop_database(name)


def test_postgres_receives_every_record_through_an_outage(
        tmp_path: Path, upstream: FakeOpenAI, postgres: PostgresServer, pg_url: str) -> None:
    gw = Gateway(tmp_path, config(upstream, pg_url), GATEWAY_ENV).start()
    try:
        with httpx.Client(base_url=gw.url, headers=AUTH) as client:
            burst(client, 40)
            postgres.stop()  # the store goes away mid-load; callers must not notice
            burst(client, 60)
            time.sleep(0.3)
            assert metric(gw, "sluice_usage_records_spilled_total") > 0
            assert (gw.data_dir / "usage-spill.jsonl").exists()
            postgres.start()
            burst(client, 20)
            deadline = time.monotonic() + 30  # the store is retried with backoff (<= 30 s)
            while count_in(pg_url, gw.data_dir) < 120 and time.monotonic() < deadline:
                time.sleep(0.2)
        assert count_in(pg_url, gw.data_dir) == 120
        assert metric(gw, "sluice_usage_records_replayed_total") > 0
        assert metric(gw, "sluice_usage_records_dropped_total") == 0
        report = httpx.get(f"{gw.url}/v0/management/usage", headers=ADMIN,
                           params={"group_by": "key", "from": 0}).json()
        assert report["totals"]["requests"] == 120
        assert report["groups"][0]["group"] == "team-a"
        assert "usage store unavailable" in gw.log()
        assert "password" not in gw.log()
    finally:
        gw.stop()


def test_sigterm_under_load_loses_no_record(tmp_path: Path, upstream: FakeOpenAI) -> None:
    upstream.behavior.first_byte_delay = 0.3
    gw = Gateway(tmp_path, config(upstream), GATEWAY_ENV).start()
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={**AUTH, "x-request-id": "first"},
                   json={"model": "m", "messages": HELLO}, timeout=10)
    assert r.status_code == 200  # its record starts the writer
    answered: list[str] = []
    failed: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        rid = f"sigterm-{i}"
        try:
            r = httpx.post(f"{gw.url}/v1/chat/completions", headers={**AUTH, "x-request-id": rid},
                           json={"model": "m", "messages": HELLO}, timeout=10)
        except httpx.HTTPError:
            with lock:
                failed.append(rid)
            return
        with lock:
            answered.append(r.headers["x-request-id"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(upstream.requests) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)  # until all 30 are in flight, waiting on the upstream
    assert gw.proc is not None
    # As systemd stops a unit (and a terminal's Ctrl-C), the SQLite writer is signalled too;
    # it must still take the gateway's last flush.
    writer = gw.sqlite_writer()
    os.kill(gw.proc.pid, signal.SIGTERM)
    os.kill(writer, signal.SIGTERM)
    for t in threads:
        t.join(15)
    assert gw.proc.wait(15) == 0
    assert answered, "no request was answered before the gateway stopped"

    ids = set(stored_request_ids(gw.data_dir)) - {"first"}
    assert set(answered) <= ids, "an answered request has no usage record"
    assert len(ids) == 30 - len([f for f in failed if f not in ids])


def test_a_killed_sqlite_writer_loses_no_record(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gw = Gateway(tmp_path, config(upstream), GATEWAY_ENV).start()
    answered: list[str] = []
    try:
        with httpx.Client(base_url=gw.url, headers=AUTH) as client:
            answered += burst(client, 30)
            first = gw.sqlite_writer()
            os.kill(first, signal.SIGKILL)
            answered += burst(client, 30)  # callers must not notice
            deadline = time.monotonic() + 10
            while gw.sqlite_writer() == first and time.monotonic() < deadline:
                answered += burst(client, 1)
            assert gw.sqlite_writer() != first
    finally:
        gw.stop()
    assert sorted(stored_request_ids(gw.data_dir)) == sorted(answered)


def test_budget_totals_survive_a_restart(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # 1 USD per 1M tokens; the fake counts 2 words in and 3 out: 5 µUSD a call, so the third
    # call (10 µUSD spent) is over the 9 µUSD budget, restart or not.
    keys = "- {name: capped, key: env:KEY_CAPPED, budget: {usd: {day: 0.000009}}}"
    env: dict[str, Any] = {**GATEWAY_ENV, "KEY_CAPPED": "sk-capped-key-123",
                           "SLUICE_DATA_DIR": str(tmp_path / "data")}
    capped = {"Authorization": "Bearer sk-capped-key-123"}
    body = {"model": "m", "messages": HELLO}
    gw = Gateway(tmp_path, config(upstream, extra_keys=keys), env).start()
    try:
        codes = [httpx.post(f"{gw.url}/v1/chat/completions", headers=capped, json=body)
                 .status_code for _ in range(2)]
        assert codes == [200, 200]
    finally:
        gw.stop()
    gw = Gateway(tmp_path, config(upstream, extra_keys=keys), env).start()
    try:
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers=capped, json=body)
        assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
    finally:
        gw.stop()


def test_a_hard_kill_loses_at_most_the_last_flush_interval(tmp_path: Path,
                                                           upstream: FakeOpenAI) -> None:
    """SIGKILL under load: every request answered more than one flush interval (50 ms here)
    before the kill is in the store; only the last interval's may be lost."""
    gw = Gateway(tmp_path, config(upstream), GATEWAY_ENV).start()
    answered: list[tuple[float, str]] = []
    with httpx.Client(base_url=gw.url, headers=AUTH) as client:
        stop = time.monotonic() + 1.0
        while time.monotonic() < stop:
            r = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
            assert r.status_code == 200
            answered.append((time.monotonic(), r.headers["x-request-id"]))
    assert gw.proc is not None
    writer = gw.sqlite_writer()
    os.kill(gw.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    gw.proc.wait(10)
    # Its input closed with the gateway, the writer exits by itself: no orphan.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{writer}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{writer}").exists(), "the SQLite writer outlived the gateway"

    ids = set(stored_request_ids(gw.data_dir))
    lost = [(at, rid) for at, rid in answered if rid not in ids]
    # The writer wakes every 50 ms and a batch takes a few ms: allow two intervals of slack.
    assert all(killed_at - at < 0.1 for at, _ in lost), \
        f"{len(lost)} of {len(answered)} lost, oldest {killed_at - lost[0][0]:.3f} s before"
    assert len(ids) >= len(answered) - len(lost)


def test_usage_cli_prints_the_report_and_bodies_are_logged_when_asked(
        tmp_path: Path, upstream: FakeOpenAI) -> None:
    cfg = config(upstream).replace("flush_interval: 50ms}", "flush_interval: 50ms}\n"
                                   "log: {bodies: true}")
    gw = Gateway(tmp_path, cfg, GATEWAY_ENV).start()
    try:
        for _ in range(3):
            r = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH,
                           json={"model": "m", "messages": HELLO})
            assert r.status_code == 200
    finally:
        gw.stop()
    lines = [json.loads(x) for x in gw.log().splitlines() if '"event":"request"' in x]
    assert len(lines) == 3 and "hello there" in lines[0]["request_body"]
    assert "echo: hello there" in lines[0]["response_body"]
    assert GATEWAY_KEY not in gw.log()
    config_file = next(tmp_path.glob("config-*.yaml"))
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "usage", "--config", str(config_file), "--group-by",
         "key"], capture_output=True, text=True, timeout=30,
        env={**os.environ, **GATEWAY_ENV, "SLUICE_DATA_DIR": str(gw.data_dir)})
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.strip()}
    assert rows["team-a"][1] == "3"  # requests
    assert rows["team-a"][3:5] == ["6", "9"]  # input and output tokens: 2 and 3 a call
    assert rows["total"][1] == "3"
