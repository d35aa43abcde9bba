"""Bot 2, "Safe Trader": only with an established trend, every filter must pass.

BUY only when ALL hold: trend UP with strength >= min_trend_strength,
close > EMA50, EMA9 > EMA21, MACD > signal and MACD > 0,
45 <= RSI <= max_rsi_buy, volume >= min_volume_ratio * its 20-candle mean.
SELL is the mirror (trend DOWN, close < EMA50, EMA9 < EMA21, MACD < signal and
MACD < 0, 100 - max_rsi_buy <= RSI <= 55, same volume rule).

confidence = 40 + 0.4 * trend strength + 20 * min(1, max(0, volume_ratio - 1))
so a trade clears the usual 70 % threshold only in a strong trend on rising volume.
Anything else is HOLD (confidence 100 - the fraction of filters passed * 100).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.strategy.indicators import Indicators
from services.strategy.strategies import register
from services.strategy.strategies.base import Decision, Parameter, Strategy, clamp_confidence, fraction
from services.strategy.trend import TrendAssessment


@register
class SafeTraderStrategy(Strategy):
    bot_id = 2
    name = "Safe Trader"
    description = "Conservative trend follower: trades only with a strong trend when every filter agrees."
    parameters = (
        Parameter("min_trend_strength", 60.0, 30.0, 100.0, "trend strength (0..100) required to trade"),
        Parameter("max_rsi_buy", 65.0, 50.0, 80.0, "no BUY above this RSI (SELL mirrors: none below 100 - value)"),
        Parameter("min_volume_ratio", 1.0, 0.0, 5.0, "last volume / 20-candle mean volume required"),
    )

    def decide(self, indicators: Indicators, trend: TrendAssessment, params: Mapping[str, float]) -> Decision:
        close, rsi = indicators["close"], indicators["rsi"]
        macd, signal = indicators["macd"], indicators["macd_signal"]
        strong = trend.strength >= params["min_trend_strength"]
        volume_ok = indicators["volume_ratio"] >= params["min_volume_ratio"]
        buy_filters = {
            "trend UP and strong": trend.direction == "UP" and strong,
            "close > EMA50": close > indicators["ema_50"],
            "EMA9 > EMA21": indicators["ema_9"] > indicators["ema_21"],
            "MACD > signal and > 0": macd > signal and macd > 0,
            "RSI in buy zone": 45.0 <= rsi <= params["max_rsi_buy"],
            "volume": volume_ok,
        }
        sell_filters = {
            "trend DOWN and strong": trend.direction == "DOWN" and strong,
            "close < EMA50": close < indicators["ema_50"],
            "EMA9 < EMA21": indicators["ema_9"] < indicators["ema_21"],
            "MACD < signal and < 0": macd < signal and macd < 0,
            "RSI in sell zone": 100.0 - params["max_rsi_buy"] <= rsi <= 55.0,
            "volume": volume_ok,
        }
        confidence = clamp_confidence(
            40.0 + 0.4 * trend.strength + 20.0 * fraction(indicators["volume_ratio"] - 1.0, 1.0)
        )
        facts = f"trend {trend.direction} {trend.strength:.0f}, RSI {rsi:.1f}, volume x{indicators['volume_ratio']:.2f}"
        if all(buy_filters.values()):
            return Decision("BUY", confidence, f"all buy filters pass ({facts})")
        if all(sell_filters.values()):
            return Decision("SELL", confidence, f"all sell filters pass ({facts})")
        best = max((buy_filters, sell_filters), key=lambda filters: sum(filters.values()))
        failed = [name for name, passed in best.items() if not passed]
        passed_share = sum(best.values()) / len(best)
        return Decision(
            "HOLD", clamp_confidence(100.0 - passed_share * 100.0), f"filters failing: {', '.join(failed)} ({facts})"
        )
