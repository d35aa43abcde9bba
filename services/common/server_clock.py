"""The offset between this machine's clock and a Binance host's: one per process and host, not per account.

Signed requests carry a timestamp that Binance accepts only inside recvWindow
of its own clock (-1021 otherwise). The offset is a property of the two
clocks, so one ``GET /fapi/v1/time`` (weight 1) serves every account's client:
measured at first use, refreshed every ``REFRESH_S``, and re-measured at once
(single-flight) when Binance answers -1021.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

REFRESH_S = 30 * 60.0


@dataclass
class ServerClock:
    offset_ms: int = 0
    synced_at: float = float("-inf")   # time.monotonic() of the last measurement
    syncs: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def due(self) -> bool:
        return time.monotonic() - self.synced_at >= REFRESH_S

    async def ensure(self, server_time: Callable[[], Awaitable[Any]]) -> int:
        """Measure once per ``REFRESH_S``; ``server_time`` answers ``{"serverTime": ms}``."""
        if self.due():
            async with self._lock:
                if self.due():
                    await self._measure(server_time)
        return self.offset_ms

    async def resync(self, server_time: Callable[[], Awaitable[Any]], refused_at: float) -> int:
        """Binance said -1021 to a request sent at ``refused_at`` (monotonic): measure again, unless another
        caller already did after that request was signed (a burst of refusals measures once)."""
        async with self._lock:
            if self.synced_at < refused_at:
                await self._measure(server_time)
        return self.offset_ms

    async def _measure(self, server_time: Callable[[], Awaitable[Any]]) -> None:
        before = int(time.time() * 1000)
        answer = await server_time()
        after = int(time.time() * 1000)
        self.offset_ms = int(answer["serverTime"]) - (before + after) // 2
        self.synced_at = time.monotonic()
        self.syncs += 1


_clocks: dict[str, ServerClock] = {}


def server_clock(host: str) -> ServerClock:
    clock = _clocks.get(host)
    if clock is None:
        clock = _clocks[host] = ServerClock()
    return clock
