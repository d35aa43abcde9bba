"""Bot 4, "Range Scalper": mean reversion at the Bollinger bands in a range.

Trades only while the market ranges: trend SIDEWAYS, or any trend with
strength <= max_trend_strength.
BUY  when %B <= band_tolerance (close at or below the lower band) and RSI <= rsi_oversold;
SELL when %B >= 1 - band_tolerance (at or above the upper band) and RSI >= rsi_overbought.
confidence = 55 + 25 * min(1, RSI distance beyond its threshold / 15)
               + 20 * min(1, %B distance beyond its band threshold / 0.3)
Otherwise HOLD with confidence 100 - 100 * |%B - 0.5| (calm mid-band = sure HOLD).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.errors import InvalidArgument
from services.strategy.indicators import Indicators
from services.strategy.strategies import register
from services.strategy.strategies.base import Decision, Parameter, Strategy, clamp_confidence, fraction
from services.strategy.trend import TrendAssessment


@register
class RangeScalperStrategy(Strategy):
    bot_id = 4
    name = "Range Scalper"
    description = "Mean reversion: buys the lower and sells the upper Bollinger band while the market ranges."
    parameters = (
        Parameter("max_trend_strength", 50.0, 0.0, 100.0, "no trades in a trend stronger than this"),
        Parameter("rsi_oversold", 35.0, 10.0, 50.0, "BUY only at or below this RSI"),
        Parameter("rsi_overbought", 65.0, 50.0, 90.0, "SELL only at or above this RSI"),
        Parameter("band_tolerance", 0.05, 0.0, 0.5, "how close (in %B units) to a band counts as touching it"),
    )

    @classmethod
    def check_parameter_consistency(cls, params: Mapping[str, float]) -> None:
        if params["rsi_oversold"] >= params["rsi_overbought"]:
            raise InvalidArgument(f"{cls.name}: rsi_oversold must be below rsi_overbought")

    def decide(self, indicators: Indicators, trend: TrendAssessment, params: Mapping[str, float]) -> Decision:
        rsi, percent_b = indicators["rsi"], indicators["bb_percent_b"]
        tolerance = params["band_tolerance"]
        ranging = trend.direction == "SIDEWAYS" or trend.strength <= params["max_trend_strength"]
        facts = f"%B {percent_b:.3f}, RSI {rsi:.1f}, trend {trend.direction} {trend.strength:.0f}"
        if ranging and percent_b <= tolerance and rsi <= params["rsi_oversold"]:
            confidence = (
                55.0
                + 25.0 * fraction(params["rsi_oversold"] - rsi, 15.0)
                + 20.0 * fraction(tolerance - percent_b, 0.3)
            )
            return Decision("BUY", clamp_confidence(confidence), f"oversold at the lower band ({facts})")
        if ranging and percent_b >= 1.0 - tolerance and rsi >= params["rsi_overbought"]:
            confidence = (
                55.0
                + 25.0 * fraction(rsi - params["rsi_overbought"], 15.0)
                + 20.0 * fraction(percent_b - (1.0 - tolerance), 0.3)
            )
            return Decision("SELL", clamp_confidence(confidence), f"overbought at the upper band ({facts})")
        why = "trend too strong for mean reversion" if not ranging else "price not stretched to a band"
        hold_confidence = clamp_confidence(100.0 - 100.0 * abs(percent_b - 0.5))
        return Decision("HOLD", hold_confidence, f"{why} ({facts})")
