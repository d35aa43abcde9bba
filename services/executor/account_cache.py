"""One account read per exchange connection per tick, shared by that user's bots.

Single-flight: the first bot's read is awaited by the others; a failed read
is not cached (the next bot tries again, and each failing bot opens nothing).
Entries live a few minutes, longer than any tick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal

from services.executor.brokers.base import AccountSnapshot

ENTRY_TTL_SECONDS = 300.0


class AccountCache:
    def __init__(self, ttl_seconds: float = ENTRY_TTL_SECONDS) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[tuple[str, str], tuple[float, asyncio.Future[AccountSnapshot]]] = {}

    async def get(self, connection_id: str, tick_id: str,
                  read: Callable[[], Awaitable[AccountSnapshot]]) -> AccountSnapshot:
        now = time.monotonic()
        self._evict(now)
        key = (connection_id, tick_id)
        entry = self._entries.get(key)
        if entry is None:
            future: asyncio.Future[AccountSnapshot] = asyncio.get_running_loop().create_future()
            self._entries[key] = (now + self._ttl, future)
            try:
                snapshot = await read()
            except BaseException as error:
                self._entries.pop(key, None)
                if isinstance(error, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(error)
                    future.exception()  # mark retrieved: the waiting bots re-raise it themselves
                raise
            future.set_result(snapshot)
            return snapshot
        return await asyncio.shield(entry[1])

    def reserve(self, connection_id: str, tick_id: str, amount: Decimal) -> None:
        """Take margin just committed by one bot out of the snapshot the next bots size from."""
        entry = self._entries.get((connection_id, tick_id))
        if entry is None or not entry[1].done() or entry[1].cancelled() or entry[1].exception() is not None:
            return
        snapshot = entry[1].result()
        future: asyncio.Future[AccountSnapshot] = asyncio.get_running_loop().create_future()
        future.set_result(replace(snapshot, available_balance=snapshot.available_balance - amount))
        self._entries[(connection_id, tick_id)] = (entry[0], future)

    def invalidate(self, connection_id: str, tick_id: str) -> None:
        self._entries.pop((connection_id, tick_id), None)

    def _evict(self, now: float) -> None:
        for key, (expires_at, future) in list(self._entries.items()):
            if expires_at <= now and future.done():
                self._entries.pop(key, None)
