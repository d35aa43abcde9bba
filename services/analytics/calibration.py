"""Does a 75 % signal win more often than a 55 % one? Calibration of the strategies' confidence.

Pure statistics over closed trades, each linked to the signal that opened it (``SignalTrade``), whatever
their source (the live platform's TradeLogs, or a backtest's trades.csv: ``trade_signals``):

* per strategy and confidence bucket: trades, win rate with its 95 % Wilson interval, the average return
  per trade in units of risk (R: the trade's net PnL over what its stop-loss put at risk at entry) and the
  expected value (that mean R) with a one-sided 90 % lower bound (Student's t, Cornish-Fisher past 30
  degrees of freedom);
* a suggested threshold per strategy: the lowest bucket whose expected value is above zero with 90 %
  confidence (its lower bound > 0), among buckets with at least ``MIN_TRADES`` trades; otherwise it says
  there is too little data, or that no bucket earns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Z_95 = 1.959963984540054     # two-sided 95 %: the Wilson interval
Z_90_ONE_SIDED = 1.2815515655446004
MIN_TRADES = 20               # fewer trades in a bucket: its figures are shown, never trusted for a threshold
BUCKET_EDGES = (50, 60, 70, 80, 90, 100)
# Student's t, one-sided 90 % (0.90 quantile), for 1..30 degrees of freedom.
_T_90 = (3.078, 1.886, 1.638, 1.533, 1.476, 1.440, 1.415, 1.397, 1.383, 1.372, 1.363, 1.356, 1.350, 1.345,
         1.341, 1.337, 1.333, 1.330, 1.328, 1.325, 1.323, 1.321, 1.319, 1.318, 1.316, 1.315, 1.314, 1.313,
         1.311, 1.310)


@dataclass(frozen=True)
class SignalTrade:
    """One closed trade and the signal that opened it."""

    strategy: str
    confidence: float           # 0-100, the signal's at entry
    ai_verdict: str | None      # the AI's action at entry, None when no AI confirmed it
    realized_pnl: Decimal       # net of fees
    risk: Decimal               # what the stop-loss put at risk at entry (|entry - stop| x quantity), > 0

    @property
    def r_multiple(self) -> float:
        return float(self.realized_pnl / self.risk)

    @property
    def won(self) -> bool:
        return self.realized_pnl > 0


@dataclass(frozen=True)
class BucketReport:
    low: int                    # the bucket is [low, high), the last one includes 100
    high: int
    trades: int
    wins: int
    win_rate: float
    win_rate_low: float         # 95 % Wilson interval
    win_rate_high: float
    mean_r: float               # expected value per trade, in R
    mean_r_lower_90: float | None   # one-sided 90 % lower bound; None below two trades

    @property
    def label(self) -> str:
        return f"{self.low}-{self.high}"

    @property
    def enough(self) -> bool:
        return self.trades >= MIN_TRADES

    @property
    def earns(self) -> bool:
        """Expected value above zero with 90 % confidence, on enough trades."""
        return self.enough and self.mean_r_lower_90 is not None and self.mean_r_lower_90 > 0


@dataclass(frozen=True)
class StrategyReport:
    strategy: str
    buckets: tuple[BucketReport, ...]
    suggested_threshold: int | None
    verdict: str                # what to tell the user about the threshold


def wilson_interval(wins: int, trades: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a win rate (sound at small n and at 0 % or 100 %, unlike p ± z·se)."""
    if trades == 0:
        return 0.0, 1.0
    p = wins / trades
    denominator = 1 + z * z / trades
    center = (p + z * z / (2 * trades)) / denominator
    half = z * math.sqrt(p * (1 - p) / trades + z * z / (4 * trades * trades)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def t_90(degrees_of_freedom: int) -> float:
    """Student's t 0.90 quantile; past 30 degrees of freedom the Cornish-Fisher expansion (error < 0.001)."""
    if degrees_of_freedom < 1:
        raise ValueError("at least one degree of freedom")
    if degrees_of_freedom <= len(_T_90):
        return _T_90[degrees_of_freedom - 1]
    z = Z_90_ONE_SIDED
    return z + (z ** 3 + z) / (4 * degrees_of_freedom)


def mean_lower_bound_90(values: Sequence[float]) -> float | None:
    """One-sided 90 % lower confidence bound of the mean; None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    variance = sum((value - mean) ** 2 for value in values) / (n - 1)
    return mean - t_90(n - 1) * math.sqrt(variance / n)


def bucket_of(confidence: float) -> tuple[int, int] | None:
    """The confidence bucket [low, high); below 50 none (no strategy enters there)."""
    if confidence < BUCKET_EDGES[0]:
        return None
    for low, high in zip(BUCKET_EDGES, BUCKET_EDGES[1:], strict=False):
        if confidence < high or high == BUCKET_EDGES[-1]:
            return low, high
    return None


def bucket_report(low: int, high: int, trades: Sequence[SignalTrade]) -> BucketReport:
    wins = sum(1 for trade in trades if trade.won)
    r_values = [trade.r_multiple for trade in trades]
    win_low, win_high = wilson_interval(wins, len(trades))
    return BucketReport(low, high, len(trades), wins, wins / len(trades) if trades else 0.0, win_low, win_high,
                        sum(r_values) / len(r_values) if r_values else 0.0, mean_lower_bound_90(r_values))


def strategy_report(strategy: str, trades: Iterable[SignalTrade]) -> StrategyReport:
    by_bucket: dict[tuple[int, int], list[SignalTrade]] = defaultdict(list)
    for trade in trades:
        bucket = bucket_of(trade.confidence)
        if bucket is not None:
            by_bucket[bucket].append(trade)
    buckets = tuple(bucket_report(low, high, by_bucket[(low, high)]) for low, high in sorted(by_bucket))
    earning = [bucket for bucket in buckets if bucket.earns]
    if earning:
        threshold = earning[0].low
        verdict = (f"suggested threshold {threshold} %: the lowest bucket whose expected value is above zero with "
                   f"90 % confidence ({earning[0].label} %, {earning[0].mean_r:+.2f} R a trade, lower bound "
                   f"{earning[0].mean_r_lower_90:+.2f} R, {earning[0].trades} trades)")
        return StrategyReport(strategy, buckets, threshold, verdict)
    if not any(bucket.enough for bucket in buckets):
        total = sum(bucket.trades for bucket in buckets)
        verdict = (f"too little data: {total} trades, no bucket has the {MIN_TRADES} needed to suggest a "
                   "threshold")
    else:
        verdict = "no bucket with enough trades earns with 90 % confidence: no threshold makes this strategy pay"
    return StrategyReport(strategy, buckets, None, verdict)


def calibrate(trades: Iterable[SignalTrade]) -> list[StrategyReport]:
    """One report per strategy, in name order."""
    by_strategy: dict[str, list[SignalTrade]] = defaultdict(list)
    for trade in trades:
        by_strategy[trade.strategy].append(trade)
    return [strategy_report(name, by_strategy[name]) for name in sorted(by_strategy)]


def reliability_points(report: StrategyReport) -> list[dict[str, float]]:
    """The reliability diagram's data: each bucket's stated confidence (its middle) against the observed
    win rate with its Wilson interval. A calibrated strategy's points lie on the diagonal."""
    return [{"confidence": (bucket.low + bucket.high) / 2 / 100, "winRate": bucket.win_rate,
             "low": bucket.win_rate_low, "high": bucket.win_rate_high, "trades": bucket.trades}
            for bucket in report.buckets]


def report_document(report: StrategyReport) -> dict[str, Any]:
    """One strategy's calibration as JSON: what ``tradebot calibration --json`` prints and the dashboard shows."""
    return {
        "strategy": report.strategy, "suggestedThreshold": report.suggested_threshold, "verdict": report.verdict,
        "buckets": [{"confidence": bucket.label, "trades": bucket.trades, "wins": bucket.wins,
                     "winRate": bucket.win_rate, "winRate95": [bucket.win_rate_low, bucket.win_rate_high],
                     "meanR": bucket.mean_r, "meanRLower90": bucket.mean_r_lower_90, "earns": bucket.earns}
                    for bucket in report.buckets],
        "reliability": reliability_points(report),
    }
