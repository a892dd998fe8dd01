"""systemd notifications: the exact datagrams on a real AF_UNIX socket (a path and an abstract
name), the watchdog settings systemd passes, the watchdog loop's pace, and silence without
NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.log import logger
from proxy.notify import Notifier


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Catches the gateway's lifecycle events on its own logger, which `proxy.log.configure`
    detaches from the root one."""
    level, propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # caught once, whether or not configure() ran in this process
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    return [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """systemd's end: a datagram socket bound in tmp_path, and the NOTIFY_SOCKET naming it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def _pending(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    try:
        got = []
        while True:
            try:
                got.append(sock.recv(4096))
            except BlockingIOError:
                return got
    finally:
        sock.settimeout(2.0)


def test_each_message_is_one_datagram_of_exact_lines(receiver: tuple[socket.socket, str]
                                                     ) -> None:
    sock, path = receiver
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    n.ready()
    assert _received(sock) == ["READY=1", "STATUS=serving"]
    n.ready("serving 3 models")
    assert _received(sock) == ["READY=1", "STATUS=serving 3 models"]
    n.stopping()
    assert _received(sock) == ["STOPPING=1", "STATUS=draining"]
    n.status("42 requests in flight")
    assert _received(sock) == ["STATUS=42 requests in flight"]
    n.watchdog()
    assert _received(sock) == ["WATCHDOG=1"]
    n.close()


def test_reloading_carries_the_monotonic_clock_in_microseconds(
        receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    before = time.monotonic_ns() // 1000
    n.reloading()
    after = time.monotonic_ns() // 1000
    reloading, usec, status = _received(sock)
    assert reloading == "RELOADING=1"
    assert status == "STATUS=reloading configuration"
    key, _, value = usec.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after  # CLOCK_MONOTONIC, as systemd compares it
    n.close()


def test_abstract_socket_name() -> None:
    name = f"sluice-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert repr(n) == f"Notifier(socket='@{name}', watchdog=None)"
        n.ready()
        assert _received(sock) == ["READY=1", "STATUS=serving"]
        n.close()
    finally:
        sock.close()


def test_no_socket_is_a_silent_no_op(tmp_path: Path) -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_interval() is None  # nobody to ping
    n.ready()
    n.reloading()
    n.stopping()
    n.watchdog()
    assert repr(n) == "Notifier(socket=None, watchdog=None)"
    assert not Notifier.from_env({"NOTIFY_SOCKET": ""}).enabled
    assert not Notifier.from_env({}).enabled


def test_from_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch,
                                                      receiver: tuple[socket.socket, str]
                                                      ) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier.from_env()
    n.watchdog()
    assert _received(sock) == ["WATCHDOG=1"]
    n.close()


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # not ours
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "250000"}, 0.25),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_from_env(env: dict[str, str], expected: float | None) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert n.watchdog_interval() == expected


async def test_watchdog_loop_pings_at_half_the_interval(receiver: tuple[socket.socket, str]
                                                        ) -> None:
    sock, path = receiver
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # 0.2 s
    task = asyncio.create_task(n.watchdog_loop())
    await asyncio.sleep(0.45)  # pings at 0, 0.1, 0.2, 0.3, 0.4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pings = _pending(sock)
    assert set(pings) == {b"WATCHDOG=1"}
    # Half of 0.2 s: 5 pings; at the full interval there would be 3, at a quarter 9.
    assert 4 <= len(pings) <= 6
    n.close()


async def test_watchdog_loop_returns_without_a_watchdog() -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify"})
    await asyncio.wait_for(n.watchdog_loop(), 1.0)


def test_a_failed_send_never_raises_and_is_logged_once(
        tmp_path: Path, events: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "nobody-listens")
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    n.ready()
    n.watchdog()
    n.stopping()
    [(name, fields)] = _events(events)
    assert name == "notify_failed"
    assert fields["socket"] == path
    assert fields["message"] == "READY=1"
    assert "No such file" in fields["error"]
    n.close()


def test_an_unsupported_socket_kind_is_ignored(events: pytest.LogCaptureFixture) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_interval() is None
    assert _events(events) == [("notify_unsupported_socket", {"socket": "vsock:2:1234"})]
