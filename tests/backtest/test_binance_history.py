"""History paged through the market service's Binance source, against the local fake Binance server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from services.backtest.binance_history import fetch_history
from services.market.settings import MarketSettings
from services.market.sources.binance import BinanceMarketSource
from tests.fakes.binance_market import FakeBinanceMarket

NOW = datetime(2026, 11, 25, 12, 2, 30, tzinfo=UTC).timestamp()   # mid-candle: the 12:00 candle is still open
FIVE_MINUTES_MS = 300_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeBinanceMarket]:
    with FakeBinanceMarket(clock=clock) as server:
        yield server


async def test_pages_of_1500_within_a_small_weight_budget_give_every_closed_candle(
        fake: FakeBinanceMarket, clock: Clock) -> None:
    # 20 weight a minute (95 % of a 22 limit): two 1500-candle pages (weight 10 each), then the pager must wait.
    settings = dataclasses.replace(MarketSettings(), data_source="binance", futures_url=fake.url,
                                   weight_limit_1m=22, weight_budget_share=1.0, retry_attempts=1,
                                   upstream_timeout_seconds=5.0)
    source = BinanceMarketSource.from_settings(settings, clock=clock)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:    # simulated time: the budget's minute rolls over
        waits.append(seconds)
        clock.now += seconds

    now_ms = int(NOW * 1000)
    start_ms = now_ms - 5_000 * FIVE_MINUTES_MS
    try:
        history = await fetch_history(source, "BTCUSDT", "5m", start_ms, now_ms, now_ms=now_ms, sleep=sleep)
    finally:
        await source.close()

    opens = [candle.open_time_ms for candle in history.candles]
    first_open = -(-start_ms // FIVE_MINUTES_MS) * FIVE_MINUTES_MS
    last_closed_open = now_ms // FIVE_MINUTES_MS * FIVE_MINUTES_MS - FIVE_MINUTES_MS   # 11:55, closed at 12:00
    assert opens == list(range(first_open, last_closed_open + 1, FIVE_MINUTES_MS))
    assert fake.count("/fapi/v1/klines") == 4                  # 4 pages of up to 1500 cover 5000 candles
    assert len(waits) == 1 and 0 < waits[0] <= 60              # one wait for the next minute, no failure
    assert all(float(c.low) <= float(c.close) <= float(c.high) for c in history.candles)
