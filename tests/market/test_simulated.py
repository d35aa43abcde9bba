"""The simulated feed: deterministic, interval-aligned, realistic, fast, and tradeable."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from tradebot.v1 import market_pb2

from services.common.intervals import FIXED_INTERVAL_MS
from services.market.sources.simulated import SimulatedMarketSource
from services.market.sources.universe import SIMULATED_UNIVERSE
from tests.market.conftest import START

NOW_MS = int(START * 1000)


def closes(symbol: str, interval: str, count: int, now_ms: int = NOW_MS) -> list[float]:
    return [float(bar.close) for bar in SimulatedMarketSource().bars(symbol, interval, count, now_ms)]


def rsi(values: list[float], period: int = 14) -> list[float]:
    gains = [max(b - a, 0.0) for a, b in zip(values, values[1:])]
    losses = [max(a - b, 0.0) for a, b in zip(values, values[1:])]
    average_gain = sum(gains[:period]) / period
    average_loss = sum(losses[:period]) / period
    result = []
    for gain, loss in zip(gains[period:], losses[period:]):
        average_gain = (average_gain * (period - 1) + gain) / period
        average_loss = (average_loss * (period - 1) + loss) / period
        result.append(100.0 if average_loss == 0 else 100 - 100 / (1 + average_gain / average_loss))
    return result


def test_a_closed_candle_is_the_same_whenever_and_wherever_it_is_computed():
    early = SimulatedMarketSource().bars("BTCUSDT", "5m", 300, NOW_MS)
    later = SimulatedMarketSource().bars("BTCUSDT", "5m", 400, NOW_MS + 3_600_000)  # an hour later, other replica
    later_by_open = {bar.open_time_ms: bar for bar in later}
    closed_early = [bar for bar in early if bar.close_time_ms < NOW_MS]
    assert len(closed_early) == 299
    assert all(later_by_open[bar.open_time_ms] == bar for bar in closed_early)


def test_symbols_are_seeded_independently():
    assert closes("BTCUSDT", "1h", 50) != closes("ETHUSDT", "1h", 50)
    btc = closes("BTCUSDT", "1h", 200)
    eth = closes("ETHUSDT", "1h", 200)
    up_btc = [b > a for a, b in zip(btc, btc[1:])]
    up_eth = [b > a for a, b in zip(eth, eth[1:])]
    assert 0.2 < sum(x == y for x, y in zip(up_btc, up_eth)) / len(up_btc) < 0.8  # not one path scaled


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h", "4h", "1d", "3d"])
def test_candles_align_to_interval_boundaries_and_end_with_the_one_containing_now(interval: str):
    bars = SimulatedMarketSource().bars("SOLUSDT", interval, 20, NOW_MS)
    length = FIXED_INTERVAL_MS[interval]
    assert all(bar.open_time_ms % length == 0 for bar in bars)
    assert all(bar.close_time_ms == bar.open_time_ms + length - 1 for bar in bars)
    assert all(b.open_time_ms - a.open_time_ms == length for a, b in zip(bars, bars[1:]))
    assert bars[-1].open_time_ms <= NOW_MS <= bars[-1].close_time_ms


def test_weeks_open_on_monday_and_months_on_the_first():
    weeks = SimulatedMarketSource().bars("BTCUSDT", "1w", 5, NOW_MS)
    assert {datetime.fromtimestamp(bar.open_time_ms / 1000, UTC).strftime("%a %H:%M") for bar in weeks} == {"Mon 00:00"}
    months = SimulatedMarketSource().bars("BTCUSDT", "1M", 14, NOW_MS)
    opened = [datetime.fromtimestamp(bar.open_time_ms / 1000, UTC) for bar in months]
    assert all(moment.day == 1 and moment.hour == 0 for moment in opened)
    assert opened[-1].strftime("%Y-%m") == "2026-11" and opened[0].strftime("%Y-%m") == "2025-10"
    assert months[-2].close_time_ms == months[-1].open_time_ms - 1


@pytest.mark.parametrize("symbol", sorted(SIMULATED_UNIVERSE))
def test_candles_respect_the_symbols_filters_and_ohlc_order(symbol: str):
    rules = SIMULATED_UNIVERSE[symbol].rules
    for bar in SimulatedMarketSource().bars(symbol, "15m", 100, NOW_MS):
        for price in (bar.open, bar.high, bar.low, bar.close):
            assert price > 0 and price % rules.tick_size == 0
        assert bar.high >= max(bar.open, bar.close) and bar.low <= min(bar.open, bar.close)
        assert bar.volume > 0 and bar.volume % rules.step_size == 0


def test_prices_stay_near_real_market_levels():
    month_of_hours = 24 * 31
    assert 40_000 < min(closes("BTCUSDT", "1h", month_of_hours)) < max(closes("BTCUSDT", "1h", month_of_hours)) < 90_000
    assert 1_500 < min(closes("ETHUSDT", "1h", month_of_hours)) < max(closes("ETHUSDT", "1h", month_of_hours)) < 4_500


def test_universe_has_fifty_real_symbols_with_binance_like_rules():
    assert len(SIMULATED_UNIVERSE) >= 50
    assert {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "1000PEPEUSDT"} <= set(SIMULATED_UNIVERSE)
    for spec in SIMULATED_UNIVERSE.values():
        rules = spec.rules
        assert rules.min_notional in {Decimal(5), Decimal(20), Decimal(100)}
        assert rules.min_qty >= rules.step_size > 0 and rules.max_qty > rules.market_max_qty > rules.min_qty
        assert spec.reference_price / float(rules.tick_size) >= 1_000  # at least 4 significant digits of price
    assert SIMULATED_UNIVERSE["BTCUSDT"].rules.min_notional == Decimal(100)


def test_three_hundred_candles_take_well_under_ten_milliseconds():
    source = SimulatedMarketSource()
    source.bars("BTCUSDT", "5m", 300, NOW_MS)  # warm the per-symbol path
    timings = []
    for offset in range(20):
        started = time.perf_counter()
        source.bars("BTCUSDT", "5m", 300, NOW_MS + offset * 300_000)
        timings.append(time.perf_counter() - started)
    assert sorted(timings)[len(timings) // 2] < 0.010


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"])
def test_the_walk_has_trends_both_ways_so_strategies_see_buy_and_sell_conditions(symbol: str):
    week = closes(symbol, "5m", 7 * 288)
    values = rsi(week)
    assert sum(value > 70 for value in values) / len(values) > 0.02
    assert sum(value < 30 for value in values) / len(values) > 0.02
    daily = closes(symbol, "1d", 60)
    changes = [b / a - 1 for a, b in zip(daily, daily[1:])]
    assert any(change > 0.01 for change in changes) and any(change < -0.01 for change in changes)


async def test_grpc_answers_closed_candles_and_a_price_matching_the_open_candle(simulated_stub, clock):
    response = await simulated_stub.GetCandles(
        market_pb2.GetCandlesRequest(symbol="ETHUSDT", interval="5m", limit=200, include_open=True)
    )
    assert response.source == "simulated" and len(response.candles) == 201
    assert all(candle.closed for candle in response.candles[:-1]) and not response.candles[-1].closed
    price = await simulated_stub.GetPrice(market_pb2.GetPriceRequest(symbol="ETHUSDT"))
    assert price.price == response.candles[-1].close and price.time_ms == int(clock() * 1000)
    filters = await simulated_stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="ETHUSDT"))
    assert (filters.tick_size, filters.step_size, filters.min_notional) == ("0.01", "0.001", "20")
    stats = await simulated_stub.GetStats(market_pb2.GetStatsRequest())
    assert stats.source == "simulated" and stats.cache_misses == 1 and stats.weight_limit_1m == 360


async def test_simulated_unknown_symbol_is_invalid_argument(simulated_stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await simulated_stub.GetCandles(market_pb2.GetCandlesRequest(symbol="NOPEUSDT", interval="5m"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "simulated universe" in caught.value.details()


async def test_default_limit_is_two_hundred(simulated_stub):
    response = await simulated_stub.GetCandles(market_pb2.GetCandlesRequest(symbol="BTCUSDT", interval="1h"))
    assert len(response.candles) == 200
