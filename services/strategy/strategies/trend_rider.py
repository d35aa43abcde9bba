"""Bot 3, "Trend Rider": rides an established trend while momentum agrees.

BUY  when trend UP with strength >= min_trend_strength, EMA9 > EMA21,
     close > EMA21, MACD histogram > 0 and RSI < max_rsi_buy;
SELL is the mirror (trend DOWN, EMA9 < EMA21, close < EMA21, histogram < 0,
     RSI > 100 - max_rsi_buy).
confidence = 45 + 0.35 * trend strength + 10 if the histogram is still growing
           in the trade's direction + 10 if close is beyond EMA9 in that direction.
Otherwise HOLD with confidence 100 - trend strength.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.strategy.indicators import Indicators
from services.strategy.strategies import register
from services.strategy.strategies.base import Decision, Parameter, Strategy, clamp_confidence
from services.strategy.trend import TrendAssessment


@register
class TrendRiderStrategy(Strategy):
    bot_id = 3
    name = "Trend Rider"
    description = "Trend follower: joins an UP/DOWN trend when EMA 9/21 and MACD momentum point the same way."
    parameters = (
        Parameter("min_trend_strength", 30.0, 0.0, 100.0, "trend strength (0..100) required to trade"),
        Parameter("max_rsi_buy", 75.0, 55.0, 90.0, "no BUY above this RSI (SELL mirrors: none below 100 - value)"),
    )

    def decide(self, indicators: Indicators, trend: TrendAssessment, params: Mapping[str, float]) -> Decision:
        close, rsi = indicators["close"], indicators["rsi"]
        ema_9, ema_21 = indicators["ema_9"], indicators["ema_21"]
        hist, hist_prev = indicators["macd_histogram"], indicators["macd_histogram_prev"]
        strong = trend.strength >= params["min_trend_strength"]
        facts = f"trend {trend.direction} {trend.strength:.0f}, RSI {rsi:.1f}, MACD hist {hist:.6g}"
        if (
            trend.direction == "UP"
            and strong
            and ema_9 > ema_21
            and close > ema_21
            and hist > 0
            and rsi < params["max_rsi_buy"]
        ):
            confidence = 45.0 + 0.35 * trend.strength + 10.0 * (hist > hist_prev) + 10.0 * (close > ema_9)
            return Decision("BUY", clamp_confidence(confidence), f"riding the up-trend ({facts})")
        if (
            trend.direction == "DOWN"
            and strong
            and ema_9 < ema_21
            and close < ema_21
            and hist < 0
            and rsi > 100.0 - params["max_rsi_buy"]
        ):
            confidence = 45.0 + 0.35 * trend.strength + 10.0 * (hist < hist_prev) + 10.0 * (close < ema_9)
            return Decision("SELL", clamp_confidence(confidence), f"riding the down-trend ({facts})")
        return Decision("HOLD", clamp_confidence(100.0 - trend.strength), f"no trend to ride ({facts})")
