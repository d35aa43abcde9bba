"""Candle history for a backtest: Binance's public kline CSV files, validated.

Binance publishes one file per symbol, interval and month/day
(data.binance.vision) with 12 columns and, in newer files, a header row:
open_time, open, high, low, close, volume, close_time, quote_volume, count,
taker_buy_volume, taker_buy_quote_volume, ignore. Spot files switched their
timestamps to microseconds in 2025; futures files use milliseconds. Both are
read here (a timestamp above 10^14 is taken as microseconds).

Prices stay the exchange's decimal strings (they go to the executor exactly);
float arrays are built once for the indicators.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from services.common.errors import InvalidArgument
from services.strategy.candles import CandleSeries

MICROSECOND_THRESHOLD = 10**14  # ms timestamps are ~1.7e12 today; µs ~1.7e15
KLINE_COLUMNS = 12
INTERVAL_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000,
}


def interval_ms(interval: str) -> int:
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        raise InvalidArgument(f"interval must be one of {', '.join(INTERVAL_MS)}, got {interval!r}") from None


@dataclass(frozen=True)
class HistoryCandle:
    open_time_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str


@dataclass(frozen=True)
class History:
    """Candles of one symbol and interval, oldest first, open times strictly increasing."""

    interval: str
    interval_ms: int
    candles: tuple[HistoryCandle, ...]

    def __len__(self) -> int:
        return len(self.candles)

    def series(self) -> CandleSeries:
        """Float arrays for the indicators (the strategy service's own type)."""
        columns = [(c.open, c.high, c.low, c.close, c.volume) for c in self.candles]
        values = np.array(columns, dtype=np.float64).reshape(len(columns), 5)
        times = np.array([c.open_time_ms for c in self.candles], dtype=np.int64)
        return CandleSeries(times, values[:, 0].copy(), values[:, 1].copy(), values[:, 2].copy(),
                            values[:, 3].copy(), values[:, 4].copy())


def to_ms(timestamp: int) -> int:
    return timestamp // 1000 if timestamp >= MICROSECOND_THRESHOLD else timestamp


def _decimal_text(value: str, where: str) -> str:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise InvalidArgument(f"{where} is not a number: {value!r}") from None
    if not number.is_finite() or number < 0:
        raise InvalidArgument(f"{where} must be a finite non-negative number, got {value!r}")
    return value.strip()


def parse_kline_rows(rows: Iterable[Sequence[str]], interval: str, source: str = "CSV") -> History:
    step = interval_ms(interval)
    candles: list[HistoryCandle] = []
    for line, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if line == 1 and not row[0].strip().lstrip("-").isdigit():
            continue  # the header row of newer Binance files
        where = f"{source} line {line}"
        if len(row) < 6:
            raise InvalidArgument(f"{where}: expected Binance's 12 kline columns, got {len(row)}")
        try:
            open_time = to_ms(int(row[0]))
        except ValueError:
            raise InvalidArgument(f"{where}: open_time is not an integer: {row[0]!r}") from None
        prices = [_decimal_text(row[index], f"{where} column {index + 1}") for index in range(1, 6)]
        open_, high, low, close, volume = prices
        if Decimal(low) > Decimal(high) or Decimal(low) <= 0:
            raise InvalidArgument(f"{where}: low must be positive and not above high")
        if candles and open_time <= candles[-1].open_time_ms:
            raise InvalidArgument(f"{where}: open_time must increase (rows oldest first, no duplicates)")
        candles.append(HistoryCandle(open_time, open_, high, low, close, volume))
    if not candles:
        raise InvalidArgument(f"{source} holds no candles")
    return History(interval, step, tuple(candles))


def load_csv(path: str | Path, interval: str) -> History:
    file = Path(path)
    if not file.is_file():
        raise InvalidArgument(f"candle file not found: {file}")
    with file.open(newline="") as handle:
        return parse_kline_rows(csv.reader(handle), interval, source=str(file))


def merge(histories: Sequence[History]) -> History:
    """Several files (e.g. one per month) as one history."""
    if not histories:
        raise InvalidArgument("no candle files given")
    candles = sorted({c.open_time_ms: c for h in histories for c in h.candles}.values(),
                     key=lambda candle: candle.open_time_ms)
    return History(histories[0].interval, histories[0].interval_ms, tuple(candles))
