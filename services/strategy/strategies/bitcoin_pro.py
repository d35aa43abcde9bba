"""Bot 1, "Bitcoin Pro": momentum confluence of EMA cross, MACD, RSI and trend.

Bull score (0..100) = 25 if EMA9 - EMA21 > ema_gap_atr * ATR (a real cross, not noise)
                    + 25 if MACD histogram > 0
                    + 10 if the histogram grew since the previous candle
                    + 15 if 50 <= RSI < rsi_overbought
                    + 25 * trend factor (UP: 0.4 + 0.6 * strength / 100, SIDEWAYS: 0.2, DOWN: 0)
Bear score is the mirror image (EMA21 - EMA9 > ema_gap_atr * ATR, histogram < 0 and falling,
rsi_oversold < RSI <= 50, trend DOWN).

BUY  when bull >= min_score, bull > bear and RSI < rsi_overbought (no chasing);
SELL when bear >= min_score, bear > bull and RSI > rsi_oversold;
confidence = that score. Otherwise HOLD with confidence 100 - max(bull, bear).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.errors import InvalidArgument
from services.strategy.indicators import Indicators
from services.strategy.strategies import register
from services.strategy.strategies.base import Decision, Parameter, Strategy, clamp_confidence
from services.strategy.trend import TrendAssessment


def trend_factor(trend: TrendAssessment, wanted: str) -> float:
    if trend.direction == wanted:
        return 0.4 + 0.6 * trend.strength / 100.0
    return 0.2 if trend.direction == "SIDEWAYS" else 0.0


@register
class BitcoinProStrategy(Strategy):
    bot_id = 1
    name = "Bitcoin Pro"
    description = "Momentum confluence: EMA 9/21 cross, MACD histogram, RSI zone and EMA trend must agree."
    parameters = (
        Parameter("rsi_overbought", 70.0, 55.0, 90.0, "no BUY at or above this RSI"),
        Parameter("rsi_oversold", 30.0, 10.0, 45.0, "no SELL at or below this RSI"),
        Parameter("min_score", 60.0, 30.0, 95.0, "bull/bear score needed to trade"),
        Parameter("ema_gap_atr", 0.1, 0.0, 2.0, "EMA 9/21 gap, in ATRs, that counts as a cross"),
    )

    @classmethod
    def check_parameter_consistency(cls, params: Mapping[str, float]) -> None:
        if params["rsi_oversold"] >= params["rsi_overbought"]:
            raise InvalidArgument(f"{cls.name}: rsi_oversold must be below rsi_overbought")

    def decide(self, indicators: Indicators, trend: TrendAssessment, params: Mapping[str, float]) -> Decision:
        rsi = indicators["rsi"]
        hist, hist_prev = indicators["macd_histogram"], indicators["macd_histogram_prev"]
        overbought, oversold = params["rsi_overbought"], params["rsi_oversold"]
        ema_gap = indicators["ema_9"] - indicators["ema_21"]
        min_gap = params["ema_gap_atr"] * indicators["atr"]
        bull = (
            25.0 * (ema_gap > min_gap)
            + 25.0 * (hist > 0)
            + 10.0 * (hist > hist_prev)
            + 15.0 * (50.0 <= rsi < overbought)
            + 25.0 * trend_factor(trend, "UP")
        )
        bear = (
            25.0 * (-ema_gap > min_gap)
            + 25.0 * (hist < 0)
            + 10.0 * (hist < hist_prev)
            + 15.0 * (oversold < rsi <= 50.0)
            + 25.0 * trend_factor(trend, "DOWN")
        )
        scores = f"bull {bull:.1f}, bear {bear:.1f}, RSI {rsi:.1f}, trend {trend.direction}"
        if bull >= params["min_score"] and bull > bear and rsi < overbought:
            return Decision("BUY", clamp_confidence(bull), f"bullish confluence ({scores})")
        if bear >= params["min_score"] and bear > bull and rsi > oversold:
            return Decision("SELL", clamp_confidence(bear), f"bearish confluence ({scores})")
        return Decision("HOLD", clamp_confidence(100.0 - max(bull, bear)), f"no confluence ({scores})")
