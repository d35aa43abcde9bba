"""A shared, single-flight, LRU-bounded cache with per-entry expiry.

However many callers ask for the same key at once, one load runs; the others
wait for its result (or its error, which is not cached). The load runs as its
own task, so a caller that gives up (deadline, cancellation) does not cancel
it for the others. Each entry carries its own expiry instant, chosen by the
loader from the value (candles: the next candle close or the TTL, whichever
is sooner).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Value = TypeVar("Value")


@dataclass(frozen=True, slots=True)
class Loaded(Generic[Value]):
    value: Value
    expires_at: float  # on the cache's clock


@dataclass(frozen=True, slots=True)
class Lookup(Generic[Value]):
    value: Value
    from_cache: bool  # False only for the caller whose request started the load


class SingleFlightCache(Generic[Value]):
    def __init__(
        self,
        max_entries: int,
        clock: Callable[[], float] = time.time,
        on_hit: Callable[[], None] | None = None,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, Loaded[Value]] = OrderedDict()
        self._in_flight: dict[Hashable, asyncio.Task[Loaded[Value]]] = {}
        self._on_hit = on_hit
        self._on_miss = on_miss
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Loaded[Value]]]) -> Lookup[Value]:
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires_at > self._clock():
                self._entries.move_to_end(key)
                self._count_hit()
                return Lookup(entry.value, True)
            del self._entries[key]
        task = self._in_flight.get(key)
        if task is not None:
            self._count_hit()  # served by a fetch another caller started
            loaded = await asyncio.shield(task)
            return Lookup(loaded.value, True)
        self._count_miss()
        task = asyncio.ensure_future(self._load(key, load))
        # Every waiter may have given up; retrieve the error so it is not reported as lost.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._in_flight[key] = task
        loaded = await asyncio.shield(task)
        return Lookup(loaded.value, False)

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[Loaded[Value]]]) -> Loaded[Value]:
        try:
            loaded = await load()
            if loaded.expires_at > self._clock():
                self._entries[key] = loaded
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            return loaded
        finally:
            self._in_flight.pop(key, None)

    def discard(self, key: Hashable, value: Value) -> None:
        """Drop ``key``'s entry if it still holds ``value`` (a caller found it too small for its need)."""
        entry = self._entries.get(key)
        if entry is not None and entry.value is value:
            del self._entries[key]

    def _count_hit(self) -> None:
        self.hits += 1
        if self._on_hit is not None:
            self._on_hit()

    def _count_miss(self) -> None:
        self.misses += 1
        if self._on_miss is not None:
            self._on_miss()
