"""Unit behaviour of the building blocks: single-flight cache, kline weights, intervals, settings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument, Unavailable
from services.common.settings import SettingsError
from services.market.cache import Loaded, SingleFlightCache
from services.common.intervals import close_time_of, open_time_containing, validate_interval
from services.market.settings import MarketSettings
from services.common.binance_weights import klines_weight
from tests.market.conftest import FakeClock


async def test_single_flight_shares_one_load_and_its_error_without_caching_it():
    cache: SingleFlightCache[int] = SingleFlightCache(10, FakeClock())
    release = asyncio.Event()
    calls = 0

    async def failing() -> Loaded[int]:
        nonlocal calls
        calls += 1
        await release.wait()
        raise Unavailable("upstream down")

    waiters = [asyncio.ensure_future(cache.get("k", failing)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1 and all(isinstance(result, Unavailable) for result in results)
    assert len(cache) == 0

    async def working() -> Loaded[int]:
        return Loaded(7, 10**12)

    assert (await cache.get("k", working)).value == 7  # the error was not remembered


async def test_a_caller_giving_up_does_not_cancel_the_shared_load():
    cache: SingleFlightCache[str] = SingleFlightCache(10, FakeClock())
    release = asyncio.Event()

    async def slow() -> Loaded[str]:
        await release.wait()
        return Loaded("candles", 10**12)

    first = asyncio.ensure_future(cache.get("k", slow))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(cache.get("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert (await second).value == "candles"
    assert first.cancelled()


async def test_entries_expire_at_their_own_instant_and_the_lru_cap_holds():
    clock = FakeClock(1000.0)
    cache: SingleFlightCache[str] = SingleFlightCache(2, clock)

    def loader(value: str, ttl: float):
        async def load() -> Loaded[str]:
            return Loaded(value, clock() + ttl)

        return load

    assert not (await cache.get("a", loader("a1", 10))).from_cache
    assert (await cache.get("a", loader("unused", 10))).from_cache
    clock.advance(10)
    assert (await cache.get("a", loader("a2", 10))).value == "a2"  # expired exactly at its instant
    await cache.get("b", loader("b", 10))
    await cache.get("a", loader("unused", 10))  # touch a: b is now least recently used
    await cache.get("c", loader("c", 10))
    assert len(cache) == 2
    assert (await cache.get("a", loader("unused", 10))).from_cache
    assert not (await cache.get("b", loader("b2", 10))).from_cache
    assert (cache.hits, cache.misses) == (3, 5)


@pytest.mark.parametrize(
    ("limit", "weight"), [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)]
)
def test_klines_weight_follows_binance_table(limit: int, weight: int):
    assert klines_weight(limit) == weight


def test_intervals_align_like_binance():
    moment = int(datetime(2026, 11, 25, 12, 2, 30, tzinfo=UTC).timestamp() * 1000)
    assert open_time_containing("5m", moment) == int(datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp() * 1000)
    assert open_time_containing("1w", moment) == int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)  # Monday
    assert open_time_containing("1M", moment) == int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
    december = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
    assert close_time_of("1M", open_time_containing("1M", moment)) == december - 1
    with pytest.raises(InvalidArgument, match="unknown interval '10m'"):
        validate_interval("10m")


def test_settings_read_every_variable_and_reject_bad_values():
    settings = MarketSettings.from_env(
        {
            "GRPC_PORT": "6001",
            "MARKET_DATA_SOURCE": "binance",
            "BINANCE_FUTURES_URL": "http://127.0.0.1:9999",
            "MARKET_WEIGHT_BUDGET_SHARE": "0.5",
            "MARKET_WEIGHT_LIMIT_1M": "1200",
            "MARKET_CACHE_MAX_ENTRIES": "16",
            "MARKET_CACHE_TTL_SECONDS": "30",
            "MARKET_RETRY_ATTEMPTS": "4",
        }
    )
    assert (settings.grpc_port, settings.data_source, settings.futures_url) == (6001, "binance", "http://127.0.0.1:9999")
    assert (settings.weight_budget_1m, settings.cache_max_entries, settings.cache_ttl_seconds) == (600, 16, 30.0)
    assert settings.retry_attempts == 4
    defaults = MarketSettings.from_env({})
    assert (defaults.grpc_host, defaults.grpc_port, defaults.data_source) == ("127.0.0.1", 50051, "simulated")
    assert defaults.futures_url == "https://fapi.binance.com" and defaults.weight_budget_1m == 360
    with pytest.raises(SettingsError, match="MARKET_DATA_SOURCE"):
        MarketSettings.from_env({"MARKET_DATA_SOURCE": "coinbase"})
    with pytest.raises(SettingsError, match="MARKET_WEIGHT_BUDGET_SHARE"):
        MarketSettings.from_env({"MARKET_WEIGHT_BUDGET_SHARE": "1.5"})


async def test_fake_binance_speaks_the_real_kline_shape_and_counts_weight():
    import aiohttp

    from tests.fakes.binance_market import FakeBinanceMarket

    async with FakeBinanceMarket(clock=FakeClock()) as fake, aiohttp.ClientSession() as session:
        async with session.get(f"{fake.url}/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": "150"}) as answer:
            rows = await answer.json()
            assert answer.headers["X-MBX-USED-WEIGHT-1M"] == "2"
        assert len(rows) == 150 and all(len(row) == 12 for row in rows)
        assert isinstance(rows[0][0], int) and all(isinstance(value, str) for value in rows[0][1:6])
        async with session.get(f"{fake.url}/fapi/v1/klines", params={"symbol": "NOPE", "interval": "1m"}) as answer:
            assert answer.status == 400 and (await answer.json())["code"] == -1121
        assert fake.count("/fapi/v1/klines") == 2
