"""systemd's readiness protocol (sd_notify), spoken directly: one datagram per state change.

systemd passes `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) to a `Type=notify`
service; each message is `KEY=value` lines in one AF_UNIX datagram (sd_notify(3)). Without the
variable every call is a no-op, so the gateway behaves the same outside systemd. A failed send
never raises: the gateway keeps serving, and the first failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

from proxy.log import event

__all__ = ["Notifier"]

# A send blocks only while systemd's receive queue is full; bounded so a wedged manager cannot
# stall the event loop for longer than this (the message is then dropped and logged).
_SEND_TIMEOUT = 1.0


class Notifier:
    """Sends service state to systemd: `ready()`, `reloading()`, `stopping()`, `status()`,
    `watchdog()`; `watchdog_loop()` keeps the watchdog fed while the event loop runs."""

    __slots__ = ("_address", "_sock", "_warned", "_watchdog")

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        # "@name" is an abstract socket: a leading NUL byte on the wire (sd_notify(3)).
        self._address = "\0" + address[1:] if address and address[0] == "@" else address
        self._watchdog = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (see sd_watchdog_enabled(3)):
        the watchdog is ours only when `WATCHDOG_PID` is unset or names this process."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address[0] not in "/@":
            # systemd >= 254 may also pass vsock:CID:PORT (for VMs): not a service's case here.
            event("notify_unsupported_socket", logging.WARNING, socket=address)
            address = None
        usec = _positive_int(env.get("WATCHDOG_USEC"))
        pid = env.get("WATCHDOG_PID")
        if pid is not None and _positive_int(pid) != os.getpid():
            usec = None
        return cls(address, usec if address is not None else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str = "serving") -> None:
        """Startup, or a reload, is complete."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str = "reloading configuration") -> None:
        """A reload begins; `ready()` ends it. MONOTONIC_USEC is what systemd >= 253 matches a
        `Type=notify-reload` reload with (sd_notify(3)); older ones ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str = "draining") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds systemd waits for a `WATCHDOG=1` before it kills the service, or None."""
        return self._watchdog / 1e6 if self._watchdog else None

    async def watchdog_loop(self) -> None:
        """Ping at half the interval, as sd_watchdog_enabled(3) advises, until cancelled; a
        blocked event loop stops the pings, which is the point."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)

    def send(self, *lines: str) -> None:
        """One datagram of `KEY=value` lines; a no-op without NOTIFY_SOCKET; never raises."""
        if self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.settimeout(_SEND_TIMEOUT)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                event("notify_failed", logging.WARNING, socket=self._shown(),
                      message=lines[0], error=str(exc))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _shown(self) -> str | None:
        a = self._address
        return "@" + a[1:] if a and a[0] == "\0" else a

    def __repr__(self) -> str:
        return f"Notifier(socket={self._shown()!r}, watchdog={self.watchdog_interval()!r})"


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text) if text else 0
    except ValueError:
        return None
    return value if value > 0 else None
