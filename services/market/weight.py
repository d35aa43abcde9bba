"""Binance request-weight accounting: count before sending, refuse before crossing the budget.

Binance limits request weight per IP per minute (2400 on USDⓈ-M futures)
and reports the weight used in the current minute in ``X-MBX-USED-WEIGHT-1M``.
The budget counts each request's documented weight before it is sent, takes
the header as the truth when it reports more, and refuses a request that
would take the minute past the configured share of the limit: such a call
fails fast with RESOURCE_EXHAUSTED and the seconds until the minute rolls
over, instead of earning a 429 and then a ban.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.common import metrics
from services.common.binance_weights import (  # noqa: F401 - re-exported for the market's modules
    EXCHANGE_INFO_WEIGHT,
    MARK_PRICE_WEIGHT_ALL_SYMBOLS,
    MARK_PRICE_WEIGHT_ONE_SYMBOL,
    klines_weight,
)
from services.common.errors import ResourceExhausted

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
_WINDOW_SECONDS = 60.0


class WeightBudget:
    """Weight used in the current UTC minute, against ``budget`` (the allowed share of the limit)."""

    def __init__(self, budget: int, clock: Callable[[], float] = time.time) -> None:
        self.budget = budget
        self._clock = clock
        self._window_start = self._window_of(clock())
        self._used = 0
        metrics.EXCHANGE_WEIGHT_LIMIT.set(budget)

    @staticmethod
    def _window_of(now: float) -> float:
        return now // _WINDOW_SECONDS * _WINDOW_SECONDS

    def _roll(self) -> float:
        now = self._clock()
        window = self._window_of(now)
        if window != self._window_start:
            self._window_start = window
            self._used = 0
        return now

    def used(self) -> int:
        self._roll()
        return self._used

    def seconds_until_window_frees(self) -> float:
        now = self._roll()
        return max(0.0, self._window_start + _WINDOW_SECONDS - now)

    def reserve(self, weight: int, what: str) -> None:
        """Count ``weight`` for a request about to be sent, or refuse it."""
        self._roll()
        if self._used + weight > self.budget:
            wait = self.seconds_until_window_frees()
            metrics.RATE_LIMIT_EVENTS_TOTAL.labels(status="budget").inc()
            raise ResourceExhausted(
                f"Binance request weight budget reached: {what} needs {weight}, {self._used} of {self.budget} "
                f"already used this minute; retry in {wait:.1f}s",
                retry_after=wait,
            )
        self._used += weight
        metrics.EXCHANGE_WEIGHT_USED.set(self._used)

    def observe(self, headers: dict[str, str]) -> None:
        """Take the exchange's own count (``X-MBX-USED-WEIGHT-1M``) when it is higher than ours."""
        raw = headers.get(WEIGHT_HEADER)
        if raw is None:
            return
        try:
            reported = int(raw)
        except ValueError:
            return
        self._roll()
        if reported > self._used:
            self._used = reported
            metrics.EXCHANGE_WEIGHT_USED.set(self._used)
