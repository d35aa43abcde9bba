from __future__ import annotations

from services.strategy.candles import parse_candles
from services.strategy.indicators import compute_indicators
from services.strategy.trend import assess_trend
from tests.strategy.candle_factory import candles_from_closes, downtrend_closes, flat_closes, uptrend_closes


def trend_of(closes):
    return assess_trend(compute_indicators(parse_candles(candles_from_closes(closes))))


def test_uptrend_is_up_and_strong():
    trend = trend_of(uptrend_closes())
    assert trend.direction == "UP"
    assert trend.strength >= 80
    assert "EMA21 > EMA50 > EMA200" in trend.rule


def test_downtrend_is_down_and_strong():
    trend = trend_of(downtrend_closes())
    assert trend.direction == "DOWN"
    assert trend.strength >= 80


def test_flat_market_is_sideways_and_weak():
    trend = trend_of(flat_closes())
    assert trend.direction == "SIDEWAYS"
    assert trend.strength < 10


def test_aligned_emas_without_slope_are_sideways():
    indicators = {"ema_21": 103.0, "ema_50": 102.0, "ema_200": 100.0, "ema_50_prev": 102.0}
    trend = assess_trend(indicators)
    assert trend.direction == "SIDEWAYS"
    # strength = 50 * min(1, 3% / 1%) + 50 * 0 = 50
    assert trend.strength == 50.0


def test_strength_formula_by_hand():
    # spread (100.5 - 100) / 100 = 0.5 % -> 25 points; slope (100.2 - 100.1) / 100.1 = 0.0999 % -> 19.98 points
    indicators = {"ema_21": 100.5, "ema_50": 100.2, "ema_200": 100.0, "ema_50_prev": 100.1}
    trend = assess_trend(indicators)
    assert trend.direction == "UP"
    assert trend.strength == round(25.0 + 50.0 * (0.1 / 100.1 * 100) / 0.25, 2)
