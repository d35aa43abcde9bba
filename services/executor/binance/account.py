"""State shared by every broker of one Binance account in this process (and the process's IP weight).

Keyed by a hash of (futures root, API key), never the key itself:
* the order-rate guard (Binance counts orders per account, not per client);
* the last ``/fapi/v3/account`` answer, served once to the balance read and
  once to the positions read within ``ACCOUNT_MEMO_S`` (2 s), single-flight:
  with the per-tick ``AccountCache`` that is ONE request (weight 5) per
  account per tick, for all of the account's bots;
* the daily realised PnL: an income baseline (``/fapi/v1/income``, weight 30,
  every symbol of the account) plus the fills this system saw itself (its
  own entries and closes, and the round trips it booked) that the baseline
  does not hold yet, matched by trade id so nothing counts twice. The
  baseline is read at start-up, then at most every ``INCOME_TTL_S`` (30 min)
  per account, and only while the process-wide IP weight has room; past
  ``INCOME_HARD_MAX_S`` (2 h) the refresh is forced, and if it fails the
  daily PnL is unknown (``Unavailable``: the cycle opens nothing).
  Staleness: only trades made *outside* this system can be missing, normally
  for at most 30 minutes, under weight pressure for at most 2 hours;
* the reasons this process closed positions with, by exchange order id, so
  ``closed_trade`` can tell EMERGENCY_STOP from EXTERNAL.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.executor.brokers.binance_ratelimit import OrderRateGuard
from services.executor.brokers.binance_records import income_pnl, trade_pnl

ACCOUNT_MEMO_S = 2.0                # one /fapi/v3/account answer serves both reads of a tick
INCOME_TTL_S = 30 * 60.0            # issue 7: refresh the income baseline at most every 30 minutes per account
INCOME_HARD_MAX_S = 2 * 3600.0      # beyond this the baseline is refreshed whatever the weight, or entries stop
INCOME_READ_WEIGHT = 30
IP_WEIGHT_LIMIT_1M = 2400
IP_WEIGHT_REFRESH_SHARE = Decimal("0.6")   # an income refresh must leave the IP below 60 % of 2,400
WEIGHT_WINDOW_S = 60.0              # X-MBX-USED-WEIGHT-1M describes the current minute
MAX_REMEMBERED_CLOSES = 1000
MAX_REMEMBERED_TRADES = 20000


class _BoundedReasons(OrderedDict[str, str]):
    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        while len(self) > MAX_REMEMBERED_CLOSES:
            self.popitem(last=False)


@dataclass
class IpWeightTracker:
    """The used weight Binance last reported for this egress IP (every account shares it)."""

    clock: Callable[[], float] = time.monotonic
    _used: int = 0
    _seen_at: float = float("-inf")

    def observe(self, headers: Mapping[str, str]) -> None:
        raw = headers.get("X-MBX-USED-WEIGHT-1M")
        if raw is None:
            return
        try:
            self._used, self._seen_at = int(raw), self.clock()
        except ValueError:
            return

    def used(self) -> int:
        """The last report, or 0 once its minute has passed."""
        return self._used if self.clock() - self._seen_at < WEIGHT_WINDOW_S else 0

    def has_room_for(self, weight: int) -> bool:
        return self.used() + weight <= IP_WEIGHT_LIMIT_1M * IP_WEIGHT_REFRESH_SHARE

    def reset(self) -> None:
        self._used, self._seen_at = 0, float("-inf")


_ip_weight = IpWeightTracker()


def ip_weight() -> IpWeightTracker:
    return _ip_weight


@dataclass(frozen=True)
class IncomeBaseline:
    since_ms: int          # rows cover this time onwards (a UTC midnight)
    read_at: float         # AccountShared.clock() of the read
    rows: tuple[dict[str, Any], ...]
    trade_ids: frozenset[str] = frozenset()   # userTrades ids the rows already account for

    @classmethod
    def of(cls, since_ms: int, read_at: float, rows: Iterable[dict[str, Any]]) -> IncomeBaseline:
        listed = tuple(rows)
        return cls(since_ms, read_at, listed, frozenset(str(r["tradeId"]) for r in listed if r.get("tradeId")))


@dataclass
class AccountShared:
    clock: Callable[[], float] = time.monotonic
    rate_guard: OrderRateGuard = field(default_factory=OrderRateGuard)
    own_closes: _BoundedReasons = field(default_factory=_BoundedReasons)
    baseline: IncomeBaseline | None = None
    # userTrades id -> (symbol, time, realised PnL − USDT commission) of fills this system has seen
    trades: OrderedDict[int, tuple[str, int, Decimal]] = field(default_factory=OrderedDict)
    income_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _account_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _account_answer: tuple[float, Any, set[str]] | None = None

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

    def record_trades(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Fills of our own orders and of round trips we booked: they move the daily PnL at once."""
        for row in rows:
            self.trades[int(row["id"])] = (str(row.get("symbol")), int(row.get("time", 0)), trade_pnl(row))
        while len(self.trades) > MAX_REMEMBERED_TRADES:
            self.trades.popitem(last=False)

    def baseline_age(self) -> float:
        return float("inf") if self.baseline is None else self.clock() - self.baseline.read_at

    def daily_pnl(self, symbol: str, since_ms: int) -> Decimal:
        """The baseline's income rows plus the fills we saw that they do not hold yet (matched by trade id)."""
        baseline = self.baseline
        assert baseline is not None
        from_income = income_pnl(baseline.rows, symbol, since_ms)
        from_trades = sum(
            (pnl for trade_id, (traded_symbol, time_ms, pnl) in self.trades.items()
             if traded_symbol == symbol and time_ms >= since_ms and str(trade_id) not in baseline.trade_ids),
            Decimal(0),
        )
        return from_income + from_trades

    def daily_pnl_by_symbol(self, since_ms: int) -> dict[str, Decimal]:
        assert self.baseline is not None
        symbols = {str(row["symbol"]) for row in self.baseline.rows if row.get("symbol")}
        symbols.update(traded_symbol for traded_symbol, _, _ in self.trades.values())
        return {symbol: self.daily_pnl(symbol, since_ms) for symbol in symbols}


_accounts: dict[str, AccountShared] = {}


def shared_state(account_id: str) -> AccountShared:
    state = _accounts.get(account_id)
    if state is None:
        state = _accounts[account_id] = AccountShared()
    return state
