"""Order-rate guard fed by Binance's X-MBX-ORDER-COUNT-10S / -1M headers.

USDⓈ-M futures allow 300 orders per 10 s and 1200 per minute per account;
going over earns 429s and then an IP ban (418). Binance reports the
account's current counts on every order answer; the guard keeps the last
report plus the orders sent since, and refuses to send (ResourceExhausted
with a retry-after) when the next order would come within a safety margin
of either limit. One guard per account, shared by every broker instance of
that account in this process.

Protection comes first: an entry is sent only when its stop-loss, its
take-profit and an emergency close would fit after it (``reserve``), inside the
safety margin; protective orders and closes may use the margin too, up to the
limit itself. So an entry can never take the last slot its own stop needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.common.errors import ResourceExhausted

LIMIT_10S = 300
LIMIT_1M = 1200
MARGIN_10S = 30   # keep 10 % head-room for other clients of the same account
MARGIN_1M = 60
ORDERS_AFTER_AN_ENTRY = 3   # its stop-loss, its take-profit, and a close if the stop cannot be placed


@dataclass
class _Window:
    seconds: float
    limit: int
    margin: int
    reported: int = 0
    reported_at: float = float("-inf")
    sent_since: int = 0

    def estimate(self, now: float) -> int:
        if now - self.reported_at >= self.seconds:
            return 0  # the reported window has rolled over
        return self.reported + self.sent_since

    def retry_after(self, now: float) -> float:
        return max(0.0, self.seconds - (now - self.reported_at))


class OrderRateGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows = {
            "X-MBX-ORDER-COUNT-10S": _Window(10.0, LIMIT_10S, MARGIN_10S),
            "X-MBX-ORDER-COUNT-1M": _Window(60.0, LIMIT_1M, MARGIN_1M),
        }

    def before_order(self, *, reserve: int = 0, protective: bool = False) -> None:
        """Raise ResourceExhausted unless this order and ``reserve`` more fit: within the safety margin
        for an ordinary order, up to the limit itself for a ``protective`` one (a stop, a target, a close)."""
        now = self._clock()
        with self._lock:
            for header, window in self._windows.items():
                room = window.limit if protective else window.limit - window.margin
                if window.estimate(now) + 1 + reserve > room:
                    kept = f", keeping {reserve} for the orders that protect it" if reserve else ""
                    raise ResourceExhausted(
                        f"order rate near Binance's limit ({window.estimate(now)} of {window.limit} "
                        f"per {int(window.seconds)} s from {header}{kept}); not sending",
                        retry_after=window.retry_after(now),
                    )
            for window in self._windows.values():
                window.sent_since += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Record the counts an order answer reported (headers with upper-case names)."""
        now = self._clock()
        with self._lock:
            for header, window in self._windows.items():
                value = headers.get(header)
                if value is None:
                    continue
                try:
                    window.reported = int(value)
                except ValueError:
                    continue
                window.reported_at = now
                window.sent_since = 0
