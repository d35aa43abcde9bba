"""Shared analysis cache with single-flight.

Bots that share (strategy, symbol, interval, parameters, use_ai, last closed
candle) ask the same question; the first request computes, concurrent and
later identical requests await that one computation, so a tick makes at most
one AI call per group however many bots are in it. Failed computations are
not kept (the next request retries); the cache is bounded (LRU).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable


class SingleFlightCache[K: Hashable, V]:
    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[K, asyncio.Future[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get_or_compute(self, key: K, compute: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The value and whether it came from another request's computation."""
        existing = self._entries.get(key)
        if existing is not None:
            self._entries.move_to_end(key)
            # shield: one caller's cancellation must not cancel the shared work.
            return await asyncio.shield(existing), True
        task: asyncio.Future[V] = asyncio.ensure_future(compute())
        self._entries[key] = task
        task.add_done_callback(lambda done: self._forget_failure(key, done))
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return await asyncio.shield(task), False

    def _forget_failure(self, key: K, done: asyncio.Future[V]) -> None:
        if (done.cancelled() or done.exception() is not None) and self._entries.get(key) is done:
            del self._entries[key]
