"""One balance read and one positions read per exchange connection per tick, shared by that user's bots.

Single-flight: the first bot's read is awaited by the others; a failed read
is not cached (the next bot tries again, and each failing bot opens nothing).
Entries live a few minutes, longer than any tick.

Freshness rule for positions (one-way mode: one position per symbol):
* a bot whose cycle may change a symbol's position (an entry or close is about
  to be sent, or the paper broker's ``observe`` filled a stop) marks that
  symbol *changed* for the (connection, tick); every later read of that symbol
  in the tick asks the exchange for that one symbol again, never the snapshot;
* ``symbol_lock`` serialises the cycles of one (connection, symbol) in this
  process, so a second bot on the same symbol decides only after the first one
  has finished, and then re-reads the symbol (it was marked changed) and sees
  the first bot's position instead of opening a second entry on top of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Generic, TypeVar

from services.executor.brokers.base import AccountSnapshot, ExchangePosition

ENTRY_TTL_SECONDS = 300.0

T = TypeVar("T")
_Key = tuple[str, str]   # (connection id, tick id)


class _SingleFlight(Generic[T]):
    """One read per key, awaited by every concurrent caller; failures are not kept."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self.entries: dict[_Key, tuple[float, asyncio.Future[T]]] = {}

    async def get(self, key: _Key, read: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        self._evict(now)
        entry = self.entries.get(key)
        if entry is not None:
            return await asyncio.shield(entry[1])
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.entries[key] = (now + self._ttl, future)
        try:
            value = await read()
        except BaseException as error:
            self.entries.pop(key, None)
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
                future.exception()  # mark retrieved: the waiting bots re-raise it themselves
            raise
        future.set_result(value)
        return value

    def result(self, key: _Key) -> T | None:
        entry = self.entries.get(key)
        if entry is None or not entry[1].done() or entry[1].cancelled() or entry[1].exception() is not None:
            return None
        return entry[1].result()

    def replace_result(self, key: _Key, value: T) -> None:
        entry = self.entries.get(key)
        if entry is None:
            return
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        future.set_result(value)
        self.entries[key] = (entry[0], future)

    def pop(self, key: _Key) -> None:
        self.entries.pop(key, None)

    def _evict(self, now: float) -> None:
        for key, (expires_at, future) in list(self.entries.items()):
            if expires_at <= now and future.done():
                self.entries.pop(key, None)


class AccountCache:
    def __init__(self, ttl_seconds: float = ENTRY_TTL_SECONDS) -> None:
        self._ttl = ttl_seconds
        self._accounts: _SingleFlight[AccountSnapshot] = _SingleFlight(ttl_seconds)
        self._positions: _SingleFlight[dict[str, ExchangePosition]] = _SingleFlight(ttl_seconds)
        self._changed: dict[_Key, tuple[float, set[str]]] = {}
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    # -- balances ----------------------------------------------------------
    async def get(self, connection_id: str, tick_id: str,
                  read: Callable[[], Awaitable[AccountSnapshot]]) -> AccountSnapshot:
        return await self._accounts.get((connection_id, tick_id), read)

    def reserve(self, connection_id: str, tick_id: str, amount: Decimal) -> None:
        """Take margin just committed by one bot out of the snapshot the next bots size from."""
        key = (connection_id, tick_id)
        snapshot = self._accounts.result(key)
        if snapshot is not None:
            self._accounts.replace_result(key, replace(snapshot, available_balance=snapshot.available_balance - amount))

    def invalidate(self, connection_id: str, tick_id: str) -> None:
        self._accounts.pop((connection_id, tick_id))
        self._positions.pop((connection_id, tick_id))

    # -- positions ---------------------------------------------------------
    async def position(
        self,
        connection_id: str,
        tick_id: str,
        symbol: str,
        read_all: Callable[[], Awaitable[dict[str, ExchangePosition]]],
        read_one: Callable[[str], Awaitable[ExchangePosition | None]],
    ) -> ExchangePosition | None:
        """The symbol's position: from the account's shared snapshot, or read alone if it changed this tick."""
        key = (connection_id, tick_id)
        if self._is_changed(key, symbol):
            return await read_one(symbol)
        snapshot = await self._positions.get(key, read_all)
        if self._is_changed(key, symbol):   # changed while the snapshot was being read
            return await read_one(symbol)
        return snapshot.get(symbol)

    def mark_changed(self, connection_id: str, tick_id: str, symbol: str) -> None:
        """The symbol's position may differ from the snapshot from now on: later reads go to the exchange."""
        now = time.monotonic()
        for key, (expires_at, _) in list(self._changed.items()):
            if expires_at <= now:
                self._changed.pop(key, None)
        key = (connection_id, tick_id)
        entry = self._changed.setdefault(key, (now + self._ttl, set()))
        entry[1].add(symbol)

    def _is_changed(self, key: _Key, symbol: str) -> bool:
        entry = self._changed.get(key)
        return entry is not None and symbol in entry[1]

    @asynccontextmanager
    async def symbol_lock(self, connection_id: str, symbol: str) -> AsyncIterator[None]:
        """Cycles of one (connection, symbol) in this process run one after another."""
        key = (connection_id, symbol)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                self._locks.pop(key, None)
            else:
                self._locks[key] = (lock, users - 1)
