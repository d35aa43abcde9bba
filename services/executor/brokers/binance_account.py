"""State shared by every broker of one Binance account in this process.

Keyed by a hash of (futures root, API key), never the key itself:
* the order-rate guard (Binance counts orders per account, not per client);
* the income-history cache behind ``realized_pnl_since``. ``/fapi/v1/income``
  costs weight 30, so one answer (all symbols) serves every bot of the
  account for ``INCOME_TTL_S`` (30 minutes). Every close this process makes
  or books (a stop that fired on the exchange is booked when the cycle sees
  the position gone) invalidates it at once, so the daily-loss rule sees our
  own trades immediately. Staleness: only a trade made *outside* this system
  (by hand) can be missing from the daily-loss sum, for at most 30 minutes;
* the reasons this process closed positions with, by exchange order id, so
  ``closed_trade`` can tell EMERGENCY_STOP from EXTERNAL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.executor.brokers.binance_ratelimit import OrderRateGuard

INCOME_TTL_S = 30 * 60.0  # issue 7: refresh at most every 30 minutes per account
MAX_REMEMBERED_CLOSES = 1000


class _BoundedReasons(OrderedDict[str, str]):
    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        while len(self) > MAX_REMEMBERED_CLOSES:
            self.popitem(last=False)


@dataclass
class AccountShared:
    clock: Callable[[], float] = time.monotonic
    rate_guard: OrderRateGuard = field(default_factory=OrderRateGuard)
    own_closes: _BoundedReasons = field(default_factory=_BoundedReasons)
    _income_since_ms: int | None = None
    _income_at: float = float("-inf")
    _income_rows: list[dict[str, Any]] = field(default_factory=list)

    def cached_income(self, since_ms: int) -> list[dict[str, Any]] | None:
        """Rows fetched within the TTL that cover ``since_ms`` onwards, else None."""
        fresh = self.clock() - self._income_at < INCOME_TTL_S
        if fresh and self._income_since_ms is not None and self._income_since_ms <= since_ms:
            return self._income_rows
        return None

    def store_income(self, since_ms: int, rows: list[dict[str, Any]]) -> None:
        self._income_since_ms, self._income_at, self._income_rows = since_ms, self.clock(), rows

    def invalidate_income(self) -> None:
        self._income_at = float("-inf")


_accounts: dict[str, AccountShared] = {}


def shared_state(account_id: str) -> AccountShared:
    state = _accounts.get(account_id)
    if state is None:
        state = _accounts[account_id] = AccountShared()
    return state
