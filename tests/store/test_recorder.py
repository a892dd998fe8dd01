"""The recorder between the request path and a real store: batches written, a full queue or a
store outage spilled to disk and replayed, a torn spill line skipped, nothing dropped unless
the disk refuses too, and then loudly."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import pytest

from proxy import log
from proxy.config.settings import UsageSettings
from proxy.ledger import Ledger
from proxy.metrics import Metrics
from proxy.records import UsageRecord
from proxy.store import open_store
from proxy.usage import Recorder
from tests.services.postgres import PostgresServer


def rec(i: int) -> UsageRecord:
    return UsageRecord(ts=1_800_000_000.0 + i, request_id=f"r{i:05d}", key="team-a",
                       dialect="openai", operation="chat", model="m", provider="p",
                       credential="p#0", upstream_model="m", status=200, outcome="ok",
                       error=None, attempts=1, input_tokens=3, output_tokens=2, cost_usd=1e-6)


def counts(metrics: Metrics) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    body = metrics.render()[0].decode()
    return {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples
            if s.name.startswith("sluice_usage_records_")}


@pytest.fixture(autouse=True)
def quiet_log() -> io.StringIO:
    out = io.StringIO()
    log.configure("info", stream=out)
    return out


def recorder(tmp_path: Path, store_url: str = "sqlite", **settings: object) -> Recorder:
    usage = UsageSettings(store=store_url, data_dir=tmp_path, flush_interval=0.05,
                          **settings)  # type: ignore[arg-type]
    return Recorder(usage, open_store(store_url, tmp_path), Metrics(), Ledger(),
                    log_requests=True)


async def stored(url: str, data_dir: Path) -> int:
    store = open_store(url, data_dir)
    await store.open()
    try:
        return await store.count()
    finally:
        await store.close()


async def test_records_are_written_in_batches_and_logged_once(tmp_path: Path,
                                                              quiet_log: io.StringIO) -> None:
    r = recorder(tmp_path, batch_max=7)
    await r.start()
    for i in range(20):
        r.add(rec(i))
    await asyncio.sleep(0.3)
    await r.close()
    assert await stored("sqlite", tmp_path) == 20
    lines = [json.loads(x) for x in quiet_log.getvalue().splitlines()]
    requests = [x for x in lines if x["event"] == "request"]
    assert sorted(x["request_id"] for x in requests) == [f"r{i:05d}" for i in range(20)]
    assert counts(r.metrics)["sluice_usage_records_written_total"] == 20


async def test_a_full_queue_spills_to_disk_and_loses_nothing(tmp_path: Path) -> None:
    r = recorder(tmp_path, queue_max=5)
    await r.start()
    for i in range(12):  # no await: the writer cannot run, the queue overflows
        r.add(rec(i))
    assert len(r.queue) == 5 and r.spill.pending()
    await r.close()
    assert await stored("sqlite", tmp_path) == 12
    c = counts(r.metrics)
    assert c["sluice_usage_records_spilled_total"] == 7
    assert c["sluice_usage_records_replayed_total"] == 7
    assert c["sluice_usage_records_dropped_total"] == 0 and not r.spill.pending()


def tear(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b'{"ts":1800000003.0,"request_id":"r000')  # a write cut by a hard kill


async def test_a_torn_spill_line_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    r = recorder(tmp_path)
    assert r.spill.append([rec(1), rec(2)])
    tear(r.spill.path)
    await r.start()
    await r.close()
    assert await stored("sqlite", tmp_path) == 2


async def test_when_queue_and_disk_both_refuse_the_drop_is_counted_and_logged(
        tmp_path: Path, quiet_log: io.StringIO) -> None:
    r = recorder(tmp_path, queue_max=1, spill_max=1)
    r.add(rec(1))
    r.add(rec(2))
    assert r.dropped == 1
    assert counts(r.metrics)["sluice_usage_records_dropped_total"] == 1
    assert '"event":"usage records dropped"' in quiet_log.getvalue()
    assert '"level":"critical"' in quiet_log.getvalue()


async def test_a_store_down_at_start_and_mid_run_replays_everything(
        tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.create_database(f"recorder_{uuid.uuid4().hex[:8]}")
    postgres.stop()
    try:
        r = recorder(tmp_path, url)
        await r.start()  # the store is down: not fatal
        for i in range(30):
            r.add(rec(i))
        await r.flush()
        assert r.spill.pending()
        postgres.start()
        r._retry_at = 0.0  # skip the backoff wait; the next flush tries the store again
        for i in range(30, 40):
            r.add(rec(i))
        await r.flush()
        await r.close()
        assert await stored(url, tmp_path) == 40
        c = counts(r.metrics)
        assert c["sluice_usage_records_spilled_total"] == 30
        assert c["sluice_usage_records_dropped_total"] == 0
    finally:
        if not postgres.running:
            postgres.start()
        postgres.drop_database(url.rsplit("/", 1)[1])
