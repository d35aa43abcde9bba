"""IndicatorSeries (computed once over a whole history) equals the live step-by-step computation."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.backtest.candles import load_csv
from services.strategy.candles import CandleSeries, parse_candles
from services.strategy.indicators import MIN_CANDLES, IndicatorSeries, compute_indicators
from tests.strategy import candle_factory as factory

FIXTURE = Path(__file__).parents[1] / "fixtures" / "BTCUSDT-5m-2025-05-sample.csv"


def _prefix(series: CandleSeries, count: int) -> CandleSeries:
    return CandleSeries(series.open_time_ms[:count], series.open[:count], series.high[:count], series.low[:count],
                        series.close[:count], series.volume[:count])


def test_every_step_of_the_fixture_equals_compute_indicators_on_the_candles_closed_then() -> None:
    series = load_csv(FIXTURE, "5m").series()
    vectorised = IndicatorSeries(series)
    for index in range(MIN_CANDLES - 1, len(series)):
        step_by_step = compute_indicators(_prefix(series, index + 1))
        assert vectorised.at(index) == pytest.approx(step_by_step, rel=1e-12, abs=1e-12), index


def test_a_price_that_never_moved_then_moves_keeps_the_neutral_rsi_rule_per_step() -> None:
    closes = [100.0] * 230 + factory.random_walk_closes(40, 100.0, 0.5, seed=3)
    series = parse_candles(factory.candles_from_closes(closes, spread=0.0))
    vectorised = IndicatorSeries(series)
    for index in (MIN_CANDLES - 1, 229, 230, 231, len(series) - 1):
        assert vectorised.at(index) == pytest.approx(compute_indicators(_prefix(series, index + 1)), rel=1e-12,
                                                     abs=1e-12), index
    assert vectorised.at(229)["rsi"] == 50.0


def test_too_few_candles_at_a_step_is_refused_like_the_live_analysis() -> None:
    series = parse_candles(factory.candles_from_closes(factory.random_walk_closes(250, 100.0, 0.3, seed=1)))
    with pytest.raises(Exception, match="needs at least 200 closed candles"):
        IndicatorSeries(series).at(MIN_CANDLES - 2)
