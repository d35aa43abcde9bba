"""Request candles -> validated float arrays for the indicators.

Prices travel as decimal strings (common.proto); indicators only compare
values, so floats are fine here. Only closed candles are used: an open
candle's values still move and would make the signal flicker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from numpy.typing import NDArray

from services.common.decimals import parse_decimal
from services.common.errors import InvalidArgument
from tradebot.v1 import common_pb2

SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{2,32}")

# Binance kline intervals (USDⓈ-M futures).
VALID_INTERVALS: frozenset[str] = frozenset(
    {"1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
)


@dataclass(frozen=True)
class CandleSeries:
    """Closed candles, oldest first, as parallel float arrays."""

    open_time_ms: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.close)

    @property
    def last_open_time_ms(self) -> int:
        return int(self.open_time_ms[-1]) if len(self) else 0


def validate_symbol_and_interval(symbol: str, interval: str) -> None:
    if not symbol.strip():
        raise InvalidArgument("symbol must not be empty")
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise InvalidArgument(f"symbol must be upper-case letters and digits like BTCUSDT, got {symbol!r}")
    if interval not in VALID_INTERVALS:
        raise InvalidArgument(f"interval must be one of {', '.join(sorted(VALID_INTERVALS))}, got {interval!r}")


def _float_in_range(value: str, number: float, field: str) -> float:
    # A valid decimal can still leave float's range ("1e-400" -> 0.0, "1e309" -> inf): the
    # indicators would divide by zero or compute nothing, so reject it as bad input here.
    if not math.isfinite(number) or (number == 0 and Decimal(value) != 0):
        raise InvalidArgument(f"{field} is out of range for a price or volume, got {value!r}")
    return number


def _price(value: str, field: str) -> float:
    number = parse_decimal(value, field, positive=True)
    assert number is not None
    return _float_in_range(value, float(number), field)


def closed_candles(candles: Sequence[common_pb2.Candle]) -> list[common_pb2.Candle]:
    return [candle for candle in candles if candle.closed]


def parse_candles(candles: Sequence[common_pb2.Candle]) -> CandleSeries:
    """Validate closed candles and convert them; any bad value is INVALID_ARGUMENT naming the field."""
    closed = closed_candles(candles)
    count = len(closed)
    times = np.empty(count, dtype=np.int64)
    opens, highs, lows, closes, volumes = (np.empty(count, dtype=np.float64) for _ in range(5))
    previous_time: int | None = None
    for index, candle in enumerate(closed):
        where = f"candles[{index}]"
        if previous_time is not None and candle.open_time_ms <= previous_time:
            raise InvalidArgument(f"{where}.open_time_ms must be later than the previous candle's (oldest first)")
        previous_time = candle.open_time_ms
        times[index] = candle.open_time_ms
        opens[index] = _price(candle.open, f"{where}.open")
        highs[index] = _price(candle.high, f"{where}.high")
        lows[index] = _price(candle.low, f"{where}.low")
        closes[index] = _price(candle.close, f"{where}.close")
        volume = parse_decimal(candle.volume, f"{where}.volume")
        assert volume is not None
        if volume < 0:
            raise InvalidArgument(f"{where}.volume must not be negative, got {candle.volume!r}")
        volumes[index] = _float_in_range(candle.volume, float(volume), f"{where}.volume")
        if lows[index] > highs[index]:
            raise InvalidArgument(f"{where}.low must not exceed {where}.high")
    return CandleSeries(times, opens, highs, lows, closes, volumes)
