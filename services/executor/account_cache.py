"""One connection lookup, one balance read, one positions read and one daily-PnL read per exchange
connection per tick, shared by that user's bots.

Single-flight: the first bot's read is awaited by the others; a failed read
is not cached (the next bot tries again, and each failing bot opens nothing).
Entries live a few minutes, longer than any tick.

Freshness rule for positions (one-way mode: one position per symbol):
* a bot whose cycle may change a symbol's position (an entry or close is about
  to be sent, the paper broker's ``observe`` filled a stop, or a closed trade
  was booked) marks that symbol *changed* for the (connection, tick); every
  later read of that symbol's position or daily PnL in the tick asks the
  exchange (or paper store) for that one symbol again, never the snapshot;
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
from services.executor.connections import ExchangeConnection

ENTRY_TTL_SECONDS = 300.0
# Expired entries are swept at most this often: sweeping on every call made a tick of N bots O(N²).
SWEEP_INTERVAL_SECONDS = 5.0

T = TypeVar("T")
V = TypeVar("V")
_Key = tuple[str, str]   # (connection id, tick id)


class SingleFlight(Generic[T]):
    """One read per key, awaited by every concurrent caller; failures are not kept."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self.entries: dict[_Key, tuple[float, asyncio.Future[T]]] = {}
        self._next_sweep = 0.0

    async def get(self, key: _Key, read: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        self._evict(now)
        entry = self.entries.get(key)
        if entry is not None and entry[0] <= now and entry[1].done():   # expired, not swept yet
            self.entries.pop(key, None)
            entry = None
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

    def _evict(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(SWEEP_INTERVAL_SECONDS, self._ttl)
        for key, (expires_at, future) in list(self.entries.items()):
            if expires_at <= now and future.done():
                self.entries.pop(key, None)


class AccountCache:
    def __init__(self, ttl_seconds: float = ENTRY_TTL_SECONDS) -> None:
        self._ttl = ttl_seconds
        self._connections: SingleFlight[ExchangeConnection] = SingleFlight(ttl_seconds)
        self._accounts: SingleFlight[AccountSnapshot] = SingleFlight(ttl_seconds)
        self._daily_pnl: SingleFlight[dict[str, Decimal] | None] = SingleFlight(ttl_seconds)
        self._positions: SingleFlight[dict[str, ExchangePosition]] = SingleFlight(ttl_seconds)
        self._changed: dict[_Key, tuple[float, set[str]]] = {}
        self._next_changed_sweep = 0.0
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    # -- the exchange connection --------------------------------------------
    async def connection(self, user_id: str, connection_id: str, tick_id: str,
                         read: Callable[[], Awaitable[ExchangeConnection]]) -> ExchangeConnection:
        """The bot's connection document, read once per (user, connection id) per tick.

        A connection deactivated or edited during a tick takes effect at the next
        one; a failed lookup (not found, another user's) is not kept.
        """
        return await self._connections.get((f"{user_id}/{connection_id}", tick_id), read)

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
        return await self._snapshot_or_alone(
            key, symbol, lambda: self._positions.get(key, read_all), lambda: read_one(symbol), None
        )

    # -- today's realised PnL ------------------------------------------------
    async def daily_pnl(
        self,
        connection_id: str,
        tick_id: str,
        symbol: str,
        since_ms: int,
        read_all: Callable[[int], Awaitable[dict[str, Decimal] | None]],
        read_one: Callable[[str, int], Awaitable[Decimal]],
    ) -> Decimal:
        """The symbol's realised PnL since ``since_ms``: from the account's per-tick snapshot, or
        read alone once the symbol changed this tick (a trade of it may have closed since), or when
        the broker has no account-wide read (``read_all`` answers None: the live broker keeps it per symbol)."""
        return await self._snapshot_or_alone(
            (connection_id, tick_id), symbol,
            lambda: self._daily_pnl.get((connection_id, f"{tick_id}@{since_ms}"), lambda: read_all(since_ms)),
            lambda: read_one(symbol, since_ms), Decimal(0),
        )

    async def _snapshot_or_alone(self, key: _Key, symbol: str,
                                 snapshot: Callable[[], Awaitable[dict[str, V] | None]],
                                 alone: Callable[[], Awaitable[V]], absent: V) -> V:
        """The freshness rule above: a changed symbol is read alone, also if it changed while the
        account's snapshot was being read; otherwise the snapshot's value (``absent`` if it has none)."""
        if self._is_changed(key, symbol):
            return await alone()
        values = await snapshot()
        if values is None or self._is_changed(key, symbol):
            return await alone()
        return values.get(symbol, absent)

    def mark_changed(self, connection_id: str, tick_id: str, symbol: str) -> None:
        """The symbol's position may differ from the snapshot from now on: later reads go to the exchange."""
        now = time.monotonic()
        if now >= self._next_changed_sweep:
            self._next_changed_sweep = now + min(SWEEP_INTERVAL_SECONDS, self._ttl)
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
