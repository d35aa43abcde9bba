"""Technical indicators, computed with `ta` on closed candles only.

Every value a strategy may look at is computed here, once per analysis, and
travels back in ``AnalyzeResponse.indicators`` so a user can see why a bot
acted. Names (all floats):

  close, rsi, rsi_prev                      RSI(14), ta's Wilder smoothing
  macd, macd_signal, macd_histogram,        MACD(12, 26, 9)
  macd_histogram_prev
  ema_9, ema_21, ema_50, ema_200            EMAs (seeded with the first close)
  ema_50_prev                               EMA 50 five candles earlier (trend slope)
  bb_upper, bb_middle, bb_lower, bb_percent_b   Bollinger(20, 2)
  atr, atr_pct                              ATR(14) and ATR as % of close
  volume, volume_ma_20, volume_ratio        volume against its 20-candle mean

Too few candles is FAILED_PRECONDITION with the number needed; a NaN never
leaves this module.
"""

from __future__ import annotations

import math

import pandas as pd
from ta.momentum import RSIIndicator
from ta.trend import MACD, EMAIndicator
from ta.volatility import AverageTrueRange, BollingerBands

from services.common.errors import FailedPrecondition
from services.strategy.candles import CandleSeries

RSI_WINDOW = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
EMA_WINDOWS = (9, 21, 50, 200)
BOLLINGER_WINDOW, BOLLINGER_DEVIATIONS = 20, 2
ATR_WINDOW = 14
VOLUME_MA_WINDOW = 20
SLOPE_LOOKBACK = 5  # candles over which the EMA 50 slope is measured

# The longest look-back decides: EMA 200 has its first value on the 200th candle.
MIN_CANDLES = max(EMA_WINDOWS)

Indicators = dict[str, float]


def require_candles(available: int, needed: int, who: str) -> None:
    if available < needed:
        raise FailedPrecondition(
            f"{who} needs at least {needed} closed candles (EMA {max(EMA_WINDOWS)} is the longest look-back), "
            f"got {available}"
        )


def _last(series: pd.Series, back: int = 0) -> float:
    return float(series.iloc[-1 - back])


def compute_indicators(candles: CandleSeries) -> Indicators:
    require_candles(len(candles), MIN_CANDLES, "the analysis")
    close = pd.Series(candles.close)
    high = pd.Series(candles.high)
    low = pd.Series(candles.low)
    volume = pd.Series(candles.volume)

    rsi = RSIIndicator(close, window=RSI_WINDOW).rsi()
    macd = MACD(close, window_slow=MACD_SLOW, window_fast=MACD_FAST, window_sign=MACD_SIGNAL)
    macd_line, macd_signal, macd_hist = macd.macd(), macd.macd_signal(), macd.macd_diff()
    bands = BollingerBands(close, window=BOLLINGER_WINDOW, window_dev=BOLLINGER_DEVIATIONS)
    atr = AverageTrueRange(high, low, close, window=ATR_WINDOW).average_true_range()
    volume_ma = volume.rolling(VOLUME_MA_WINDOW).mean()

    values: Indicators = {
        "close": _last(close),
        "rsi": _last(rsi),
        "rsi_prev": _last(rsi, 1),
        "macd": _last(macd_line),
        "macd_signal": _last(macd_signal),
        "macd_histogram": _last(macd_hist),
        "macd_histogram_prev": _last(macd_hist, 1),
        "bb_upper": _last(bands.bollinger_hband()),
        "bb_middle": _last(bands.bollinger_mavg()),
        "bb_lower": _last(bands.bollinger_lband()),
        "atr": _last(atr),
        "volume": _last(volume),
        "volume_ma_20": _last(volume_ma),
    }
    for window in EMA_WINDOWS:
        ema = EMAIndicator(close, window=window).ema_indicator()
        values[f"ema_{window}"] = _last(ema)
        if window == 50:
            values["ema_50_prev"] = _last(ema, SLOPE_LOOKBACK)

    if float(close.max()) == float(close.min()):
        # ta reports 100 when nothing ever fell; a price that never moved is neutral.
        values["rsi"] = values["rsi_prev"] = 50.0
    width = values["bb_upper"] - values["bb_lower"]
    values["bb_percent_b"] = (values["close"] - values["bb_lower"]) / width if width > 0 else 0.5
    values["atr_pct"] = values["atr"] / values["close"] * 100.0
    values["volume_ratio"] = values["volume"] / values["volume_ma_20"] if values["volume_ma_20"] > 0 else 0.0

    missing = sorted(name for name, value in values.items() if not math.isfinite(value))
    if missing:
        # Cannot happen with MIN_CANDLES valid candles; refuse rather than send NaN.
        raise FailedPrecondition(f"indicators could not be computed from these candles: {', '.join(missing)}")
    return values
