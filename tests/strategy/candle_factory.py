"""Candle series for the strategy tests: deterministic, built from a list of closes."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tradebot.v1 import common_pb2

FIVE_MINUTES_MS = 5 * 60 * 1000
START_MS = 1_764_000_000_000


def candles_from_closes(
    closes: Sequence[float],
    *,
    volumes: Sequence[float] | None = None,
    interval_ms: int = FIVE_MINUTES_MS,
    spread: float = 0.001,
) -> list[common_pb2.Candle]:
    """Each candle opens at the previous close; high/low sit `spread` beyond the body."""
    result = []
    previous = closes[0]
    for index, close in enumerate(closes):
        open_ = previous
        high = max(open_, close) * (1 + spread)
        low = min(open_, close) * (1 - spread)
        volume = volumes[index] if volumes is not None else 100.0
        open_time = START_MS + index * interval_ms
        result.append(
            common_pb2.Candle(
                open_time_ms=open_time,
                close_time_ms=open_time + interval_ms - 1,
                open=f"{open_:.2f}",
                high=f"{high:.2f}",
                low=f"{low:.2f}",
                close=f"{close:.2f}",
                volume=f"{volume:.3f}",
                closed=True,
            )
        )
        previous = close
    return result


def trending_closes(count: int, start: float, drift_pct: float, noise_pct: float, seed: int) -> list[float]:
    """A noisy trend: each step moves drift_pct plus a deterministic sine/random wiggle of noise_pct."""
    rng = random.Random(seed)
    closes = [start]
    for index in range(1, count):
        wiggle = noise_pct * (math.sin(index / 2.5) + rng.uniform(-1.0, 1.0))
        closes.append(closes[-1] * (1 + (drift_pct + wiggle) / 100.0))
    return closes


def random_walk_closes(count: int, start: float, volatility_pct: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    closes = [start]
    for _ in range(1, count):
        closes.append(closes[-1] * (1 + rng.gauss(0.0, volatility_pct) / 100.0))
    return closes


def random_volumes(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [100.0 * rng.lognormvariate(0.0, 0.4) for _ in range(count)]


def segment_closes(segments: Sequence[tuple[int, Sequence[float]]], start: float = 60_000.0) -> list[float]:
    """Closes built from segments of (candle count, repeating % steps), e.g. (40, [0.3, -0.15])."""
    closes = [start]
    for count, steps in segments:
        for index in range(count):
            closes.append(closes[-1] * (1 + steps[index % len(steps)] / 100.0))
    return closes


RANGE = [0.1, -0.1]  # a market going nowhere


def uptrend_closes() -> list[float]:
    """A range, then 40 candles of two-steps-up-one-down: a clear up-trend, RSI ~65."""
    return segment_closes([(199, RANGE), (40, [0.3, -0.15])])


def downtrend_closes() -> list[float]:
    return segment_closes([(199, RANGE), (40, [-0.3, 0.15])])


def hot_uptrend_closes() -> list[float]:
    """The up-trend one candle later, ending on an up step: RSI ~68, above Safe Trader's buy zone."""
    return segment_closes([(199, RANGE), (41, [0.3, -0.15])])


def flat_closes() -> list[float]:
    return segment_closes([(239, RANGE)])


def range_dip_closes() -> list[float]:
    """A range, then a sharp 3-candle drop to below the lower Bollinger band."""
    return segment_closes([(236, RANGE), (3, [-0.3])])


def range_spike_closes() -> list[float]:
    return segment_closes([(236, RANGE), (3, [0.3])])
