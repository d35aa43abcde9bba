"""Each strategy on crafted series and at its thresholds; Safe Trader's conservatism measured."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from services.common.errors import InvalidArgument
from services.strategy.candles import parse_candles
from services.strategy.indicators import compute_indicators
from services.strategy.strategies import all_strategies, strategy_for
from services.strategy.strategies.base import Decision, Strategy
from services.strategy.strategies.bitcoin_pro import BitcoinProStrategy
from services.strategy.strategies.range_scalper import RangeScalperStrategy
from services.strategy.strategies.safe_trader import SafeTraderStrategy
from services.strategy.strategies.trend_rider import TrendRiderStrategy
from services.strategy.trend import TrendAssessment, assess_trend
from tests.strategy import candle_factory as factory

THRESHOLD = 70.0  # a bot's default confidence threshold


def decide(strategy: type[Strategy], closes: list[float], **params: float) -> Decision:
    indicators = compute_indicators(parse_candles(factory.candles_from_closes(closes)))
    return strategy().decide(indicators, assess_trend(indicators), strategy.resolve_parameters(params))


@pytest.fixture(scope="module")
def crafted() -> dict[str, dict[int, Decision]]:
    series = {
        "up": factory.uptrend_closes(),
        "down": factory.downtrend_closes(),
        "hot_up": factory.hot_uptrend_closes(),
        "flat": factory.flat_closes(),
        "dip": factory.range_dip_closes(),
        "spike": factory.range_spike_closes(),
    }
    return {name: {s.bot_id: decide(s, closes) for s in all_strategies()} for name, closes in series.items()}


def test_registry_maps_bot_ids_to_named_strategies():
    assert [(s.bot_id, s.name) for s in all_strategies()] == [
        (1, "Bitcoin Pro"),
        (2, "Safe Trader"),
        (3, "Trend Rider"),
        (4, "Range Scalper"),
    ]
    assert strategy_for(1) is BitcoinProStrategy
    with pytest.raises(InvalidArgument, match="bot_id must be one of 1, 2, 3, 4, got 5"):
        strategy_for(5)


@pytest.mark.parametrize("bot_id", [1, 2, 3])
def test_trend_strategies_buy_a_clear_uptrend_and_sell_a_clear_downtrend(crafted, bot_id):
    assert crafted["up"][bot_id].action == "BUY"
    assert crafted["down"][bot_id].action == "SELL"
    assert crafted["up"][bot_id].confidence > THRESHOLD
    assert crafted["down"][bot_id].confidence > THRESHOLD


def test_range_scalper_stays_out_of_trends_and_fades_the_bands(crafted):
    assert crafted["up"][4].action == "HOLD"
    assert crafted["down"][4].action == "HOLD"
    assert crafted["dip"][4].action == "BUY" and crafted["dip"][4].confidence > THRESHOLD
    assert crafted["spike"][4].action == "SELL" and crafted["spike"][4].confidence > THRESHOLD


@pytest.mark.parametrize("bot_id", [1, 2, 3, 4])
def test_nobody_trades_a_flat_market(crafted, bot_id):
    assert crafted["flat"][bot_id].action == "HOLD"


def test_safe_trader_is_more_conservative_on_the_same_series(crafted):
    # Same clear trend: Safe Trader trades it, with less confidence than Bitcoin Pro.
    assert crafted["up"][2].confidence < crafted["up"][1].confidence
    assert crafted["down"][2].confidence < crafted["down"][1].confidence
    # An overheated up-trend (RSI ~68): Bitcoin Pro and Trend Rider still buy, Safe Trader does not chase.
    assert crafted["hot_up"][1].action == "BUY"
    assert crafted["hot_up"][3].action == "BUY"
    assert crafted["hot_up"][2].action == "HOLD"
    assert "RSI in buy zone" in crafted["hot_up"][2].reason
    # A dip in a range is not a trend: Safe Trader stays out.
    assert crafted["dip"][2].action == "HOLD"


@pytest.fixture(scope="module")
def random_walk_decisions() -> list[tuple[TrendAssessment, dict[int, Decision]]]:
    """A realistic BTC-like 5m random walk, analysed every other candle with 250 candles of history."""
    closes = factory.random_walk_closes(900, 60_000.0, 0.25, seed=11)
    candles = factory.candles_from_closes(closes, volumes=factory.random_volumes(900, seed=11))
    results = []
    for end in range(250, 900, 2):
        indicators = compute_indicators(parse_candles(candles[end - 250 : end]))
        trend = assess_trend(indicators)
        decisions = {s.bot_id: s().decide(indicators, trend, s.resolve_parameters({})) for s in all_strategies()}
        results.append((trend, decisions))
    return results


def test_realistic_series_gives_tradeable_signals_and_safe_trader_rarely(random_walk_decisions):
    trades = Counter()
    for _, decisions in random_walk_decisions:
        for bot_id, decision in decisions.items():
            assert 0.0 <= decision.confidence <= 100.0 and math.isfinite(decision.confidence)
            if decision.action != "HOLD" and decision.confidence > THRESHOLD:
                trades[bot_id] += 1
    assert trades[1] > 0 and trades[3] > 0 and trades[4] > 0, trades
    assert trades[2] * 3 <= trades[1], trades
    assert trades[2] * 2 <= trades[3], trades


def test_safe_trader_never_trades_against_or_without_the_trend(random_walk_decisions):
    for trend, decisions in random_walk_decisions:
        safe = decisions[2]
        if safe.action == "BUY":
            assert trend.direction == "UP" and trend.strength >= 60
        if safe.action == "SELL":
            assert trend.direction == "DOWN" and trend.strength >= 60


# ---------------------------------------------------------------- thresholds
def bullish(**overrides: float) -> dict[str, float]:
    values = {
        "close": 105.0, "rsi": 60.0, "rsi_prev": 58.0, "macd": 2.0, "macd_signal": 1.0,
        "macd_histogram": 1.0, "macd_histogram_prev": 0.5, "ema_9": 104.0, "ema_21": 103.0,
        "ema_50": 102.0, "ema_50_prev": 101.9, "ema_200": 100.0, "bb_upper": 106.0, "bb_middle": 103.0,
        "bb_lower": 100.0, "bb_percent_b": 0.83, "atr": 1.0, "atr_pct": 0.95, "volume": 120.0,
        "volume_ma_20": 100.0, "volume_ratio": 1.2,
    }  # fmt: skip
    values.update(overrides)
    return values


def up(strength: float) -> TrendAssessment:
    return TrendAssessment("UP", strength, "test", 0.1, 3.0)


def sideways(strength: float) -> TrendAssessment:
    return TrendAssessment("SIDEWAYS", strength, "test", 0.0, 0.0)


def run(strategy: type[Strategy], indicators, trend, **params: float) -> Decision:
    return strategy().decide(indicators, trend, strategy.resolve_parameters(params))



def test_bitcoin_pro_rsi_and_score_thresholds():
    assert run(BitcoinProStrategy, bullish(rsi=69.99), up(50)).action == "BUY"
    assert run(BitcoinProStrategy, bullish(rsi=69.99), up(50)).confidence == 92.5
    overbought = run(BitcoinProStrategy, bullish(rsi=70.0), up(50))
    assert overbought.action == "HOLD"
    assert run(BitcoinProStrategy, bullish(), up(50), min_score=92.5).action == "BUY"
    assert run(BitcoinProStrategy, bullish(), up(50), min_score=92.6).action == "HOLD"
    # An EMA gap below 0.1 ATR is noise: 25 points fewer.
    assert run(BitcoinProStrategy, bullish(ema_9=103.05), up(50)).confidence == 67.5


def test_safe_trader_near_its_thresholds():
    at_bar = run(SafeTraderStrategy, bullish(), up(60.0))
    # 40 + 0.4 * 60 + 20 * (1.2 - 1) = 68: trades, but below a 70 % bot threshold
    assert at_bar == Decision("BUY", 68.0, at_bar.reason)
    assert run(SafeTraderStrategy, bullish(), up(59.99)).action == "HOLD"
    assert run(SafeTraderStrategy, bullish(volume_ratio=0.99), up(90.0)).action == "HOLD"
    assert run(SafeTraderStrategy, bullish(rsi=65.01), up(90.0)).action == "HOLD"
    assert run(SafeTraderStrategy, bullish(), sideways(90.0)).action == "HOLD"


def test_trend_rider_near_its_thresholds():
    at_bar = run(TrendRiderStrategy, bullish(), up(30.0))
    # 45 + 0.35 * 30 + 10 (histogram growing) + 10 (close above EMA9) = 75.5
    assert (at_bar.action, at_bar.confidence) == ("BUY", 75.5)
    assert run(TrendRiderStrategy, bullish(), up(29.99)).action == "HOLD"
    assert run(TrendRiderStrategy, bullish(rsi=75.0), up(80.0)).action == "HOLD"


def test_range_scalper_near_its_thresholds():
    at_bar = run(RangeScalperStrategy, bullish(rsi=35.0, bb_percent_b=0.05), sideways(10))
    assert (at_bar.action, at_bar.confidence) == ("BUY", 55.0)
    assert run(RangeScalperStrategy, bullish(rsi=35.01, bb_percent_b=0.05), sideways(10)).action == "HOLD"
    assert run(RangeScalperStrategy, bullish(rsi=35.0, bb_percent_b=0.0501), sideways(10)).action == "HOLD"
    # deep: 55 + 25 * min(1, 15/15) + 20 * min(1, 0.35/0.3) = 100
    assert run(RangeScalperStrategy, bullish(rsi=20.0, bb_percent_b=-0.3), sideways(10)).confidence == 100.0
    # a strong trend is no range, even when oversold
    assert run(RangeScalperStrategy, bullish(rsi=20.0, bb_percent_b=-0.3), up(50.01)).action == "HOLD"


# ---------------------------------------------------------------- parameters
def test_parameter_overrides_are_applied():
    assert BitcoinProStrategy.resolve_parameters({"min_score": 80})["min_score"] == 80.0


@pytest.mark.parametrize(
    ("strategy", "overrides", "message"),
    [
        (BitcoinProStrategy, {"min_score": 96.0}, "min_score must be between 30 and 95, got 96"),
        (SafeTraderStrategy, {"min_trend_strength": 10.0}, "min_trend_strength must be between 30 and 100, got 10"),
        (TrendRiderStrategy, {"max_rsi_buy": float("nan")}, "max_rsi_buy must be between"),
        (RangeScalperStrategy, {"stop_loss": 2.0}, "has no parameter stop_loss"),
        (RangeScalperStrategy, {"rsi_oversold": 50.0, "rsi_overbought": 50.0}, "rsi_oversold must be below"),
    ],
)
def test_bad_parameter_overrides_are_rejected_not_clamped(strategy, overrides, message):
    with pytest.raises(InvalidArgument, match=message):
        strategy.resolve_parameters(overrides)


def test_every_declared_default_is_within_its_bounds():
    for strategy in all_strategies():
        for parameter in strategy.parameters:
            assert parameter.minimum <= parameter.default <= parameter.maximum, parameter
        strategy.resolve_parameters({})
