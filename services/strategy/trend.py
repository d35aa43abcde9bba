"""Trend: one explicit rule over EMA alignment and the EMA 50 slope.

UP        when EMA21 > EMA50 > EMA200 and the EMA 50 rose more than 0.02 %
          over the last 5 candles;
DOWN      when EMA21 < EMA50 < EMA200 and the EMA 50 fell more than 0.02 %;
SIDEWAYS  otherwise.

strength (0..100) = 50 * min(1, |EMA21 - EMA200| / EMA200 / 1 %)
                  + 50 * min(1, |EMA 50 slope| / 0.25 %)
i.e. half from how far apart the EMAs are, half from how steep the EMA 50 is.
For SIDEWAYS the same measure says how much directional movement there is
without alignment (low = flat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.strategy.indicators import SLOPE_LOOKBACK, Indicators

SLOPE_THRESHOLD_PCT = 0.02
FULL_SPREAD_PCT = 1.0
FULL_SLOPE_PCT = 0.25

Direction = Literal["UP", "DOWN", "SIDEWAYS"]


@dataclass(frozen=True)
class TrendAssessment:
    direction: Direction
    strength: float
    rule: str
    slope_pct: float
    spread_pct: float


def ema_50_slope_pct(indicators: Indicators) -> float:
    return (indicators["ema_50"] - indicators["ema_50_prev"]) / indicators["ema_50_prev"] * 100.0


def assess_trend(indicators: Indicators) -> TrendAssessment:
    fast, mid, slow = indicators["ema_21"], indicators["ema_50"], indicators["ema_200"]
    slope = ema_50_slope_pct(indicators)
    spread = (fast - slow) / slow * 100.0
    strength = 50.0 * min(1.0, abs(spread) / FULL_SPREAD_PCT) + 50.0 * min(1.0, abs(slope) / FULL_SLOPE_PCT)
    strength = round(strength, 2)
    facts = (
        f"EMA21={fast:.6g}, EMA50={mid:.6g}, EMA200={slow:.6g}, "
        f"EMA50 slope {slope:+.4f}% over {SLOPE_LOOKBACK} candles"
    )
    direction: Direction
    if fast > mid > slow and slope > SLOPE_THRESHOLD_PCT:
        direction, why = "UP", f"EMA21 > EMA50 > EMA200 and EMA50 slope > +{SLOPE_THRESHOLD_PCT}%"
    elif fast < mid < slow and slope < -SLOPE_THRESHOLD_PCT:
        direction, why = "DOWN", f"EMA21 < EMA50 < EMA200 and EMA50 slope < -{SLOPE_THRESHOLD_PCT}%"
    else:
        direction, why = "SIDEWAYS", "EMAs not aligned with a matching EMA50 slope"
    return TrendAssessment(direction, strength, f"{why} ({facts})", slope, spread)
