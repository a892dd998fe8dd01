"""The bounds of an upstream pool: per-phase timeouts and size and count limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUTS", "PoolLimits", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0  # TCP + TLS handshake (through a proxy: per proxy tried, tunnel too)
    read: float = 300.0  # longest silence between two received chunks (not a total: streams last)
    write: float = 60.0  # handing the request to the socket
    pool: float = 30.0  # waiting for a free connection when the pool is at max_connections


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_connections: int = 512  # per pool, that is per provider origin
    max_idle: int = 128
    idle_timeout: float = 60.0  # providers close idle keep-alive connections after ~60-120 s
    max_connection_age: float = 600.0  # so DNS changes and server drains are picked up
    max_response_body: int = 64 << 20  # bound for UpstreamResponse.read()
    max_header_bytes: int = 64 << 10



DEFAULT_TIMEOUTS: Final = Timeouts()
DEFAULT_LIMITS: Final = PoolLimits()
