"""No look-ahead: changing any candle after a moment cannot change a decision taken before it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.backtest.candles import History, HistoryCandle
from services.backtest.engine import BacktestParams, filters_for, run_backtest
from services.backtest.cli import config_proto
from services.cli.bot_config import DEFAULT_CONFIG
from tests.strategy import candle_factory as factory

COUNT = 260
FIVE_MINUTES_MS = 300_000
START_MS = 1_735_689_600_000


def _history(closes: list[float]) -> History:
    candles = []
    for index, close in enumerate(closes):
        opened = closes[index - 1] if index else close
        candles.append(HistoryCandle(START_MS + index * FIVE_MINUTES_MS, f"{opened:.1f}",
                                     f"{max(opened, close) * 1.001:.1f}", f"{min(opened, close) * 0.999:.1f}",
                                     f"{close:.1f}", "100"))
    return History("5m", FIVE_MINUTES_MS, tuple(candles))


BASE = _history(factory.trending_closes(COUNT, 60_000.0, 0.05, 0.3, seed=11))


def _params(preset: int) -> BacktestParams:
    # A low threshold and generous limits so the bot trades and the comparison has orders in it.
    config = config_proto({**DEFAULT_CONFIG, "confidenceThreshold": 20, "maxDailyLoss": 100000,
                           "stopLossPercent": 0.4, "takeProfitPercent": 0.6,
                           "maxConsecutiveLosses": 1000})
    return BacktestParams(preset=preset, symbol="BTCUSDT", config=config, filters=filters_for("BTCUSDT"))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    preset=st.integers(1, 4),
    cut=st.integers(205, COUNT - 2),
    factors=st.lists(st.floats(0.8, 1.25), min_size=1, max_size=COUNT),
)
async def test_future_candles_never_change_an_earlier_decision(preset: int, cut: int, factors: list[float]) -> None:
    changed = list(BASE.candles)
    for offset, factor in enumerate(factors):
        index = cut + 1 + offset
        if index >= COUNT:
            break
        candle = changed[index]
        scaled = [f"{float(Decimal(value)) * factor:.1f}" for value in (candle.open, candle.high, candle.low,
                                                                       candle.close)]
        changed[index] = replace(candle, open=scaled[0], high=scaled[1], low=scaled[2], close=scaled[3],
                                 volume=f"{100 * factor:.3f}")
    original = await run_backtest(_params(preset), BASE)
    altered = await run_backtest(_params(preset), replace(BASE, candles=tuple(changed)))

    # Candle cut + 1 closes at its open + 5 minutes: every step before that moment saw only candles <= cut.
    moment = BASE.candles[cut + 1].open_time_ms + FIVE_MINUTES_MS
    before = [i for i, t in enumerate(original.step_times_ms) if t < moment]
    assert before, "the cut must leave some steps to compare"
    assert [d for d in original.decisions if d[0] < moment] == [d for d in altered.decisions if d[0] < moment]
    assert [original.equity[i] for i in before] == [altered.equity[i] for i in before]
    assert [original.in_position[i] for i in before] == [altered.in_position[i] for i in before]
    # A stop inside candle cut + 1 is stamped with that candle's time; trades ending before it are the same.
    changed_from = BASE.candles[cut + 1].open_time_ms
    early = [t for t in original.trades if t["closeTimeMs"] < changed_from]
    assert early == [t for t in altered.trades if t["closeTimeMs"] < changed_from]


async def test_the_comparison_has_teeth_changing_the_last_closed_candle_changes_the_decision() -> None:
    # Guard against a vacuous property: altering the candle closed AT a step does change that step.
    index = 230
    step = BASE.candles[index].open_time_ms + FIVE_MINUTES_MS
    changed = list(BASE.candles)
    candle = changed[index]
    changed[index] = replace(candle, close=f"{float(Decimal(candle.close)) * 1.05:.1f}",
                             high=f"{float(Decimal(candle.high)) * 1.05:.1f}")
    original = await run_backtest(_params(1), BASE)
    altered = await run_backtest(_params(1), replace(BASE, candles=tuple(changed)))
    assert [d for d in original.decisions if d[0] == step] != [d for d in altered.decisions if d[0] == step]
