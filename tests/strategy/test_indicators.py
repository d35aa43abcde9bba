"""Indicator values against plain-Python reference implementations of the same definitions.

The references below are written from the textbook formulas (not from ta):
EMA with alpha = 2 / (n + 1) seeded with the first close; Wilder's RSI with
alpha = 1 / 14 whose averages start at zero on the first candle (ta's
definition; after 200+ candles the seed's weight is below 1e-6); MACD as
EMA12 - EMA26 with an EMA9 signal seeded at the first MACD value; Bollinger
with the population standard deviation; ATR seeded with the mean of the first
14 true ranges then Wilder-smoothed.
"""

from __future__ import annotations

import math

import pytest

from services.common.errors import FailedPrecondition
from services.strategy.candles import parse_candles
from services.strategy.indicators import MIN_CANDLES, compute_indicators
from tests.strategy.candle_factory import candles_from_closes, random_volumes, random_walk_closes

REL = 1e-6


def ema(values: list[float], window: int) -> list[float]:
    alpha = 2.0 / (window + 1)
    result = [values[0]]
    for value in values[1:]:
        result.append(alpha * value + (1 - alpha) * result[-1])
    return result


def wilder_rsi(closes: list[float], window: int = 14) -> list[float]:
    gain_avg = loss_avg = 0.0
    alpha = 1.0 / window
    result = [math.nan]
    for previous, current in zip(closes, closes[1:], strict=False):
        change = current - previous
        gain_avg = alpha * max(change, 0.0) + (1 - alpha) * gain_avg
        loss_avg = alpha * max(-change, 0.0) + (1 - alpha) * loss_avg
        result.append(100.0 if loss_avg == 0 else 100.0 - 100.0 / (1.0 + gain_avg / loss_avg))
    return result


def macd(closes: list[float]) -> tuple[list[float], list[float]]:
    fast, slow = ema(closes, 12), ema(closes, 26)
    line = [f - s for f, s in zip(fast, slow, strict=True)]
    # The signal starts where MACD(12, 26) is first defined: the 26th candle.
    signal = [math.nan] * 25 + ema(line[25:], 9)
    return line, signal


def true_ranges(highs: list[float], lows: list[float], closes: list[float]) -> list[float]:
    ranges = [highs[0] - lows[0]]
    for i in range(1, len(closes)):
        ranges.append(max(highs[i] - lows[i], abs(highs[i] - closes[i - 1]), abs(lows[i] - closes[i - 1])))
    return ranges


def wilder_atr(highs: list[float], lows: list[float], closes: list[float], window: int = 14) -> float:
    ranges = true_ranges(highs, lows, closes)
    atr = sum(ranges[:window]) / window
    for value in ranges[window:]:
        atr = (atr * (window - 1) + value) / window
    return atr


@pytest.fixture(scope="module")
def fixture_series():
    closes = random_walk_closes(260, 60_000.0, 0.3, seed=7)
    candles = candles_from_closes(closes, volumes=random_volumes(260, seed=7))
    series = parse_candles(candles)
    return series, compute_indicators(series)


def test_ema_matches_reference(fixture_series):
    series, values = fixture_series
    closes = [float(c) for c in series.close]
    for window in (9, 21, 50, 200):
        assert values[f"ema_{window}"] == pytest.approx(ema(closes, window)[-1], rel=REL)
    assert values["ema_50_prev"] == pytest.approx(ema(closes, 50)[-6], rel=REL)


def test_rsi_matches_wilder_reference(fixture_series):
    series, values = fixture_series
    reference = wilder_rsi([float(c) for c in series.close])
    assert values["rsi"] == pytest.approx(reference[-1], rel=REL)
    assert values["rsi_prev"] == pytest.approx(reference[-2], rel=REL)
    assert 0.0 < values["rsi"] < 100.0


def test_macd_matches_reference(fixture_series):
    series, values = fixture_series
    line, signal = macd([float(c) for c in series.close])
    assert values["macd"] == pytest.approx(line[-1], rel=REL)
    assert values["macd_signal"] == pytest.approx(signal[-1], rel=REL)
    assert values["macd_histogram"] == pytest.approx(line[-1] - signal[-1], rel=REL, abs=1e-9)
    assert values["macd_histogram_prev"] == pytest.approx(line[-2] - signal[-2], rel=REL, abs=1e-9)


def test_bollinger_atr_and_volume_match_reference(fixture_series):
    series, values = fixture_series
    closes = [float(c) for c in series.close]
    window = closes[-20:]
    mean = sum(window) / 20
    deviation = math.sqrt(sum((c - mean) ** 2 for c in window) / 20)
    assert values["bb_middle"] == pytest.approx(mean, rel=REL)
    assert values["bb_upper"] == pytest.approx(mean + 2 * deviation, rel=REL)
    assert values["bb_lower"] == pytest.approx(mean - 2 * deviation, rel=REL)
    assert values["bb_percent_b"] == pytest.approx((closes[-1] - (mean - 2 * deviation)) / (4 * deviation), rel=REL)
    atr = wilder_atr([float(h) for h in series.high], [float(low) for low in series.low], closes)
    assert values["atr"] == pytest.approx(atr, rel=REL)
    volumes = [float(v) for v in series.volume]
    assert values["volume_ma_20"] == pytest.approx(sum(volumes[-20:]) / 20, rel=REL)
    assert values["volume_ratio"] == pytest.approx(volumes[-1] / (sum(volumes[-20:]) / 20), rel=REL)


def test_hand_computed_ema_on_tiny_series():
    # alpha = 2/(3+1) = 0.5: 10 -> 0.5*11 + 0.5*10 = 10.5 -> 0.5*12 + 0.5*10.5 = 11.25
    assert ema([10.0, 11.0, 12.0], 3) == [10.0, 10.5, 11.25]


def test_exactly_min_candles_gives_finite_values_and_one_fewer_is_refused():
    closes = random_walk_closes(MIN_CANDLES, 100.0, 0.5, seed=3)
    values = compute_indicators(parse_candles(candles_from_closes(closes)))
    assert all(math.isfinite(value) for value in values.values())
    with pytest.raises(FailedPrecondition, match=f"at least {MIN_CANDLES} closed candles.*got {MIN_CANDLES - 1}"):
        compute_indicators(parse_candles(candles_from_closes(closes[:-1])))


def test_open_candle_is_ignored():
    closes = random_walk_closes(MIN_CANDLES + 1, 100.0, 0.5, seed=4)
    candles = candles_from_closes(closes)
    candles[-1].closed = False
    candles[-1].close = "1000000"  # a still-moving value must not leak into the analysis
    series = parse_candles(candles)
    assert len(series) == MIN_CANDLES
    assert series.last_open_time_ms == candles[-2].open_time_ms
    assert compute_indicators(series)["close"] == pytest.approx(closes[-2], rel=1e-4)


def test_price_that_never_moved_is_neutral_not_nan():
    values = compute_indicators(parse_candles(candles_from_closes([100.0] * MIN_CANDLES)))
    assert values["rsi"] == 50.0
    assert values["bb_percent_b"] == 0.5
    assert all(math.isfinite(value) for value in values.values())
