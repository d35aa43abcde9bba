"""State shared by every broker of one Binance account in this process.

Keyed by a hash of (futures root, API key), never the key itself:
* the order-rate guard (Binance counts orders per account, not per client);
* the user-data stream's ``AccountState`` (balances, positions, conditional
  orders, fills), set once the account's stream is requested;
* the last ``/fapi/v3/account`` answer, for an account whose stream is not
  live: served once to the balance read and once to the positions read within
  ``ACCOUNT_MEMO_S`` (2 s), single-flight, so one request (weight 5) per tick;
* today's realised PnL from before the stream's first fill, per symbol and
  UTC day (one ``userTrades`` read, weight 5, when a bot of that symbol first
  needs it): the stream's fills cover the rest;
* whether the account is in hedge mode (learnt from a -4061 refusal or a
  snapshot's position rows, never from a weight-30 read);
* entry look-ups that found nothing a moment ago (so the look-up before an
  entry is not repeated for the same client id within a cycle);
* the reasons this process closed positions with, by exchange order id, so
  ``closed_trade`` can tell EMERGENCY_STOP from EXTERNAL.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.executor.binance.account_state import AccountState
from services.executor.binance.ratelimit import OrderRateGuard

ACCOUNT_MEMO_S = 2.0                # one /fapi/v3/account answer serves both reads of a tick
NOT_FOUND_MEMO_S = 5.0              # an entry look-up that found nothing is trusted this long
OWN_ORDER_SETTLE_S = 10.0           # after our own order on a symbol, its position is read over REST this long
MAX_REMEMBERED_CLOSES = 1000
MAX_REMEMBERED_BASELINES = 256


class _Bounded(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self._size:
            self.popitem(last=False)


@dataclass(frozen=True)
class PnlBaseline:
    """Realised PnL of one symbol between ``since_ms`` and ``until_ms`` (exclusive), read over REST."""

    since_ms: int
    until_ms: int
    pnl: Decimal


HEDGE_MODE_BELIEVED_S = 600.0


@dataclass
class AccountShared:
    account_id: str = ""
    clock: Callable[[], float] = time.monotonic
    rate_guard: OrderRateGuard = field(default_factory=OrderRateGuard)
    own_closes: _Bounded = field(default_factory=lambda: _Bounded(MAX_REMEMBERED_CLOSES))
    state: AccountState | None = None
    # When Binance last said the account is in hedge mode (-4061, or hedge positions in a snapshot). It is
    # believed for HEDGE_MODE_BELIEVED_S, then an order asks again: a user who switched back to one-way mode
    # trades again without a restart.
    hedge_mode_seen_at: float | None = None
    baselines: _Bounded = field(default_factory=lambda: _Bounded(MAX_REMEMBERED_BASELINES))
    baseline_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _not_found: dict[str, float] = field(default_factory=dict)
    own_order_settle_s: float = OWN_ORDER_SETTLE_S
    _own_orders: dict[str, tuple[float, set[str]]] = field(default_factory=dict)   # symbol -> (when, client ids)
    _account_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _account_answer: tuple[float, Any, set[str]] | None = None

    @property
    def hedge_mode(self) -> bool:
        return self.hedge_mode_seen_at is not None and self.clock() - self.hedge_mode_seen_at < HEDGE_MODE_BELIEVED_S

    @hedge_mode.setter
    def hedge_mode(self, seen: bool) -> None:
        self.hedge_mode_seen_at = self.clock() if seen else None

    def live_state(self) -> AccountState | None:
        """The stream-kept state when it can be trusted (stream live and reconciled), else None: ask REST."""
        state = self.state
        return state if state is not None and state.live else None

    async def account_info(self, use: str, read: Callable[[], Awaitable[Any]]) -> Any:
        """The account answer for one ``use`` ("balances" or "positions"), single-flight.

        An answer serves each use once and for at most ``ACCOUNT_MEMO_S``: the
        tick's balance read and positions read share one request, while the
        next tick (or a second read for the same use) asks the exchange again."""
        async with self._account_lock:
            memo = self._account_answer
            if memo is not None and use not in memo[2] and self.clock() - memo[0] < ACCOUNT_MEMO_S:
                memo[2].add(use)
                return memo[1]
            answer = await read()
            self._account_answer = (self.clock(), answer, {use})
            return answer

    def forget_account(self) -> None:
        """Our own order changed the account: the next read goes to the exchange."""
        self._account_answer = None

    def remember_not_found(self, client_order_id: str) -> None:
        now = self.clock()
        self._not_found = {cid: at for cid, at in self._not_found.items() if now - at < NOT_FOUND_MEMO_S}
        self._not_found[client_order_id] = now

    def forget_not_found(self, client_order_id: str) -> None:
        self._not_found.pop(client_order_id, None)

    def recently_not_found(self, client_order_id: str) -> bool:
        at = self._not_found.pop(client_order_id, None)   # trusted once: the entry about to be sent
        return at is not None and self.clock() - at < NOT_FOUND_MEMO_S

    def order_sent(self, symbol: str, client_order_id: str = "") -> None:
        now = self.clock()
        at, ids = self._own_orders.get(symbol, (now, set()))
        if now - at >= self.own_order_settle_s:
            ids = set()
        self._own_orders[symbol] = (now, ids | ({client_order_id} if client_order_id else set()))

    def recent_own_order(self, symbol: str) -> bool:
        """Whether our own order on ``symbol`` is so recent that the stream may not have reported it yet
        (the ORDER_TRADE_UPDATE and the ACCOUNT_UPDATE of a fill arrive separately, after the REST answer)."""
        entry = self._own_orders.get(symbol)
        return entry is not None and self.clock() - entry[0] < self.own_order_settle_s

    def recent_own_orders(self, symbol: str) -> set[str]:
        """The client ids of our recent market orders on ``symbol`` (see ``recent_own_order``)."""
        return set(self._own_orders[symbol][1]) if self.recent_own_order(symbol) else set()

    def baseline_lock(self, symbol: str) -> asyncio.Lock:
        lock = self.baseline_locks.get(symbol)
        if lock is None:
            lock = self.baseline_locks[symbol] = asyncio.Lock()
        return lock


_accounts: dict[str, AccountShared] = {}


def shared_state(account_id: str) -> AccountShared:
    state = _accounts.get(account_id)
    if state is None:
        state = _accounts[account_id] = AccountShared(account_id=account_id)
    return state
