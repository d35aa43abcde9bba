"""Flash crashes in the candles a tick already has: the fleet circuit breaker's market trigger.

Each tick fetches the closed candles of every (symbol, interval) its bots trade, before any executor cycle of
that group runs; judging them here costs no request and covers every traded symbol, held or not. A candle
whose range (high - low) exceeds ``BREAKER_FLASH_MOVE`` of its open opens the breaker
(``services/common/circuit_breaker.py``) before that group's bots are asked to enter, so no bot buys or sells
into a market that just moved that far, for the cool-down.

Only candles of ``BREAKER_FLASH_MAX_INTERVAL`` or shorter are judged (a 10 % range in a day is a market, not a
flash crash); each candle once per gateway process (a candle stays the latest closed one for its whole
interval, and the breaker must not re-open on it after a resume or its cool-down); and only a candle that
closed within the cool-down (after a restart, an older crash is history, not news).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from tradebot.v1 import common_pb2

from services.common.circuit_breaker import BreakerSettings, BreakerTrips
from services.common.intervals import FIXED_INTERVAL_MS
from services.common.trading_controls import FLASH_CRASH

log = logging.getLogger(__name__)


def candle_move(candle: common_pb2.Candle) -> Decimal | None:
    """The candle's high-low range as a share of its open; None for a candle without sound prices."""
    try:
        open_, high, low = Decimal(candle.open), Decimal(candle.high), Decimal(candle.low)
    except (InvalidOperation, ValueError):
        return None
    if not (open_.is_finite() and high.is_finite() and low.is_finite()) or open_ <= 0 or high < low:
        return None
    return (high - low) / open_


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class FlashCrashWatch:
    def __init__(self, trips: BreakerTrips, settings: BreakerSettings,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self._trips = trips
        self._settings = settings
        self._clock_ms = clock_ms
        self._judged_until: dict[tuple[str, str], int] = {}   # newest candle open time judged, per (symbol, interval)

    async def judge(self, symbol: str, interval: str, candles: Sequence[common_pb2.Candle]) -> bool:
        """Open the breaker if a candle not judged before moved too far; True when this call opened it."""
        settings = self._settings
        length = FIXED_INTERVAL_MS.get(interval)
        if settings.flash_move <= 0 or length is None or length > settings.flash_max_interval_ms:
            return False
        key = (symbol, interval)
        judged_until = self._judged_until.get(key, 0)
        recent_ms = self._clock_ms() - int(settings.cooldown_seconds * 1000)
        fresh = [candle for candle in candles
                 if candle.closed and candle.open_time_ms > judged_until and candle.close_time_ms >= recent_ms]
        if not fresh:
            return False
        self._judged_until[key] = max(candle.open_time_ms for candle in fresh)
        moves = [(move, candle) for candle in fresh if (move := candle_move(candle)) is not None]
        if not moves:
            return False
        move, candle = max(moves, key=lambda pair: pair[0])
        if move <= Decimal(str(settings.flash_move)):
            return False
        reason = (f"{symbol} moved {float(move):.1%} of its open inside one {interval} candle "
                  f"(open {candle.open}, high {candle.high}, low {candle.low}; threshold {settings.flash_move:.1%})")
        evidence = {
            "symbol": symbol, "interval": interval, "candleOpenTime": _iso_ms(candle.open_time_ms),
            "open": candle.open, "high": candle.high, "low": candle.low, "close": candle.close,
            "move": format(move.quantize(Decimal("0.0001")), "f"), "threshold": settings.flash_move,
        }
        try:
            return await self._trips.trip(FLASH_CRASH, reason, evidence)
        except Exception as error:   # the tick goes on; the next one judges these candles again
            self._judged_until[key] = judged_until
            log.error("opening the circuit breaker on a flash crash failed",
                      extra={"symbol": symbol, "interval": interval, "error": type(error).__name__, "reason": reason})
            return False
