"""The market service in front of a local server speaking Binance's futures API,
through a real gRPC server and the real python-binance client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from tradebot.v1 import market_pb2

from services.common.errors import RETRY_AFTER_METADATA_KEY
from tests.fakes.binance_market import Fault, ip_banned, server_error, too_many_requests
from tests.market.conftest import MarketHarness

KLINES = "/fapi/v1/klines"
EXCHANGE_INFO = "/fapi/v1/exchangeInfo"
PREMIUM_INDEX = "/fapi/v1/premiumIndex"


def candles_request(symbol: str = "BTCUSDT", interval: str = "5m", limit: int = 50, include_open: bool = False):
    return market_pb2.GetCandlesRequest(symbol=symbol, interval=interval, limit=limit, include_open=include_open)


def retry_after_of(error: grpc.aio.AioRpcError) -> float:
    trailers = dict(error.trailing_metadata() or ())
    return float(trailers[RETRY_AFTER_METADATA_KEY])


async def expect_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_500_concurrent_calls_make_one_upstream_kline_request(market: MarketHarness):
    market.fake.latency_seconds = 0.05  # keep the first fetch in flight while the others arrive
    responses = await asyncio.gather(*(market.stub.GetCandles(candles_request()) for _ in range(500)))

    assert market.fake.count(KLINES) == 1
    assert market.fake.count(EXCHANGE_INFO) == 1
    assert {tuple(c.open_time_ms for c in r.candles) for r in responses} == {tuple(c.open_time_ms for c in responses[0].candles)}
    assert sum(not r.from_cache for r in responses) == 1
    stats = await market.stub.GetStats(market_pb2.GetStatsRequest())
    assert (stats.cache_misses, stats.cache_hits, stats.cache_entries) == (1, 499, 1)
    assert stats.upstream_requests == 2 and stats.source == "binance"


async def test_candles_are_closed_oldest_first_with_exact_decimal_strings(market: MarketHarness):
    now_ms = int(market.clock() * 1000)
    response = await market.stub.GetCandles(candles_request(limit=5))

    assert response.source == "binance" and response.symbol == "BTCUSDT" and response.interval == "5m"
    assert len(response.candles) == 5
    opens = [c.open_time_ms for c in response.candles]
    assert opens == sorted(opens) and all(b - a == 300_000 for a, b in zip(opens, opens[1:]))
    assert all(c.closed and c.close_time_ms < now_ms for c in response.candles)
    # The newest closed candle is the one that ended at 12:00:00, just before "now" (12:02:30).
    assert response.candles[-1].close_time_ms == int(datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp() * 1000) - 1
    candle = response.candles[-1]
    assert candle.close.count(".") == 1 and len(candle.close.split(".")[1]) == 2  # tickSize 0.10, as Binance sends it


async def test_in_progress_candle_only_when_asked_and_flagged_open(market: MarketHarness):
    now_ms = int(market.clock() * 1000)
    response = await market.stub.GetCandles(candles_request(limit=5, include_open=True))

    assert [c.closed for c in response.candles] == [True] * 5 + [False]
    assert response.candles[-1].open_time_ms <= now_ms <= response.candles[-1].close_time_ms
    assert market.fake.count(KLINES) == 1  # the same cached fetch serves both views
    plain = await market.stub.GetCandles(candles_request(limit=5))
    assert [c.open_time_ms for c in plain.candles] == [c.open_time_ms for c in response.candles[:5]]
    assert plain.from_cache and market.fake.count(KLINES) == 1


async def test_cache_entry_expires_when_the_next_candle_closes(market: MarketHarness):
    market.clock.set(datetime(2026, 11, 25, 12, 4, 30, tzinfo=UTC))  # 30 s before the 5m candle closes
    first = await market.stub.GetCandles(candles_request(limit=3))
    market.clock.set(datetime(2026, 11, 25, 12, 4, 59, 900_000, tzinfo=UTC))
    still = await market.stub.GetCandles(candles_request(limit=3))
    assert still.from_cache and market.fake.count(KLINES) == 1
    assert [c.open_time_ms for c in still.candles] == [c.open_time_ms for c in first.candles]

    market.clock.set(datetime(2026, 11, 25, 12, 5, 0, 1000, tzinfo=UTC))  # well inside the 60 s TTL
    after_close = await market.stub.GetCandles(candles_request(limit=3))
    assert not after_close.from_cache and market.fake.count(KLINES) == 2
    assert after_close.candles[-1].open_time_ms == first.candles[-1].open_time_ms + 300_000


async def test_cache_entry_expires_after_the_ttl_for_long_intervals(market: MarketHarness):
    await market.stub.GetCandles(candles_request(interval="1h", limit=3))
    market.clock.advance(59)
    assert (await market.stub.GetCandles(candles_request(interval="1h", limit=3))).from_cache
    market.clock.advance(2)  # 61 s after the fetch: past the 60 s TTL, the hour is not over
    assert not (await market.stub.GetCandles(candles_request(interval="1h", limit=3))).from_cache
    assert market.fake.count(KLINES) == 2


async def test_weight_budget_refuses_before_it_is_crossed(make_market):
    market = await make_market(weight_limit_1m=40, weight_budget_share=0.5)  # budget: 20 per minute
    # exchangeInfo costs 1; each limit=200 call fetches 201 klines at weight 2: 1 + 9 * 2 = 19.
    for limit in range(200, 209):
        await market.stub.GetCandles(candles_request(limit=limit))
    assert market.fake.count(KLINES) == 9

    error = await expect_error(market.stub.GetCandles(candles_request(limit=300)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "weight budget" in error.details()
    assert retry_after_of(error) == pytest.approx(30.0, abs=0.01)  # the clock is 30 s into the minute
    assert market.fake.count(KLINES) == 9  # refused locally: nothing reached Binance
    stats = await market.stub.GetStats(market_pb2.GetStatsRequest())
    assert (stats.weight_used_1m, stats.weight_limit_1m) == (19, 20)

    market.clock.advance(30.5)  # a new minute: the budget is free again
    await market.stub.GetCandles(candles_request(limit=300))
    assert market.fake.count(KLINES) == 10


async def test_used_weight_header_is_taken_as_the_truth(market: MarketHarness):
    market.fake.other_clients_weight = 2275  # other processes on this IP spent most of the minute
    await market.stub.GetCandles(candles_request(limit=50))  # exchangeInfo 1 + klines 1
    stats = await market.stub.GetStats(market_pb2.GetStatsRequest())
    assert stats.weight_used_1m == 2277 and stats.weight_limit_1m == 360   # this process's share: 15 %

    # limit=500 fetches 501 klines, weight 5: 2277 + 5 would cross 95 % of the IP's 2,400 (2,280).
    error = await expect_error(market.stub.GetCandles(candles_request(limit=500)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "2277 of 2280 on the IP" in error.details()
    assert market.fake.count(KLINES) == 1
    await market.stub.GetCandles(candles_request(limit=60))  # weight 1 still fits
    assert market.fake.count(KLINES) == 2


async def test_429_stops_every_upstream_call_until_retry_after(market: MarketHarness):
    await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="BTCUSDT"))
    market.fake.fail_next(KLINES, too_many_requests(retry_after=30))

    error = await expect_error(market.stub.GetCandles(candles_request()), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "429" in error.details() and retry_after_of(error) == pytest.approx(30, abs=0.01)
    assert market.fake.count(KLINES) == 1  # never retried in a loop
    before = market.fake.total_requests()

    market.clock.advance(20)
    for call in (
        market.stub.GetCandles(candles_request()),
        market.stub.GetCandles(candles_request(symbol="ETHUSDT", interval="1h")),
        market.stub.GetPrice(market_pb2.GetPriceRequest(symbol="BTCUSDT")),
    ):
        error = await expect_error(call, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert retry_after_of(error) == pytest.approx(10, abs=0.01)
    assert market.fake.total_requests() == before  # nothing reached Binance during the back-off
    assert (await market.stub.GetStats(market_pb2.GetStatsRequest())).backoff_seconds_left == pytest.approx(10)

    market.clock.advance(10.5)
    assert len((await market.stub.GetCandles(candles_request())).candles) == 50
    assert market.fake.count(KLINES) == 2


@pytest.mark.parametrize("with_retry_after_header", [True, False])
async def test_418_ban_is_honoured_until_the_ban_ends(market: MarketHarness, with_retry_after_header: bool):
    await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="BTCUSDT"))
    ban = ip_banned(120, now=market.clock())
    if not with_retry_after_header:
        ban.retry_after = None  # the ban time is then read from "banned until <ms>" in the message
    market.fake.fail_next(KLINES, ban)

    error = await expect_error(market.stub.GetCandles(candles_request()), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "418" in error.details() and retry_after_of(error) == pytest.approx(120, abs=1)
    market.clock.advance(119)
    await expect_error(market.stub.GetCandles(candles_request()), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert market.fake.count(KLINES) == 1

    market.clock.advance(2)
    await market.stub.GetCandles(candles_request())
    assert market.fake.count(KLINES) == 2


async def test_5xx_is_retried_then_succeeds(market: MarketHarness):
    market.fake.fail_next(KLINES, server_error(503), times=2)
    response = await market.stub.GetCandles(candles_request(), timeout=10)
    assert len(response.candles) == 50
    assert market.fake.count(KLINES) == 3


async def test_5xx_retries_are_bounded_then_unavailable(market: MarketHarness):
    market.fake.fail_next(KLINES, server_error(502), times=10)
    error = await expect_error(market.stub.GetCandles(candles_request(), timeout=10), grpc.StatusCode.UNAVAILABLE)
    assert "502" in error.details()
    assert market.fake.count(KLINES) == 3  # MARKET_RETRY_ATTEMPTS
    # Nothing was cached: the next call fetches again.
    market.fake.clear_faults()
    await market.stub.GetCandles(candles_request())
    assert market.fake.count(KLINES) == 4


async def test_dropped_connection_is_retried(market: MarketHarness):
    market.fake.fail_next(KLINES, Fault(disconnect=True))
    await market.stub.GetCandles(candles_request(), timeout=10)
    assert market.fake.count(KLINES) == 2


async def test_400_is_not_retried(market: MarketHarness):
    market.fake.fail_next(KLINES, Fault(400, {"code": -1130, "msg": "Data sent for paramter 'limit' is not valid."}))
    error = await expect_error(market.stub.GetCandles(candles_request()), grpc.StatusCode.INVALID_ARGUMENT)
    assert "-1130" in error.details()
    assert market.fake.count(KLINES) == 1


async def test_slow_upstream_times_out_as_unavailable_after_bounded_retries(make_market):
    market = await make_market(upstream_timeout_seconds=0.2, retry_attempts=2)
    await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="BTCUSDT"))
    market.fake.fail_next(KLINES, Fault(status=200, delay_seconds=0.6), times=2)
    error = await expect_error(market.stub.GetCandles(candles_request(), timeout=10), grpc.StatusCode.UNAVAILABLE)
    assert "timed out" in error.details()
    assert market.fake.count(KLINES) == 2


async def test_retries_stay_inside_the_callers_deadline(market: MarketHarness):
    await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="BTCUSDT"))
    market.fake.fail_next(KLINES, Fault(status=200, delay_seconds=0.8), times=3)
    started = asyncio.get_running_loop().time()
    await expect_error(market.stub.GetCandles(candles_request(), timeout=0.4), grpc.StatusCode.DEADLINE_EXCEEDED)
    assert asyncio.get_running_loop().time() - started < 0.7
    await asyncio.sleep(0.1)
    assert market.fake.count(KLINES) == 1  # no second attempt after the deadline


async def test_unknown_symbol_is_invalid_argument_without_a_kline_request(market: MarketHarness):
    error = await expect_error(market.stub.GetCandles(candles_request(symbol="NOPEUSDT")), grpc.StatusCode.INVALID_ARGUMENT)
    assert "NOPEUSDT" in error.details() and "does not list" in error.details()
    await expect_error(market.stub.GetPrice(market_pb2.GetPriceRequest(symbol="NOPEUSDT")), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_error(
        market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="NOPEUSDT")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert market.fake.count(KLINES) == 0 and market.fake.count(PREMIUM_INDEX) == 0
    assert market.fake.count(EXCHANGE_INFO) == 1  # exchangeInfo is cached


async def test_invalid_symbol_answer_from_binance_is_invalid_argument(market: MarketHarness):
    market.fake.fail_next(KLINES, Fault(400, {"code": -1121, "msg": "Invalid symbol."}))
    error = await expect_error(market.stub.GetCandles(candles_request()), grpc.StatusCode.INVALID_ARGUMENT)
    assert "Invalid symbol" in error.details()


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"symbol": "", "interval": "5m"}, "symbol is required"),
        ({"symbol": "BTC-USDT", "interval": "5m"}, "malformed"),
        ({"symbol": "BTCUSDT", "interval": "7m"}, "unknown interval"),
        ({"symbol": "BTCUSDT", "interval": "5m", "limit": 1501}, "limit must be between 1 and 1500"),
        ({"symbol": "BTCUSDT", "interval": "5m", "limit": -1}, "limit must be between 1 and 1500"),
    ],
)
async def test_bad_requests_are_invalid_argument_before_any_upstream_call(market: MarketHarness, request_fields, message):
    error = await expect_error(
        market.stub.GetCandles(market_pb2.GetCandlesRequest(**request_fields)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert message in error.details()
    assert market.fake.total_requests() == 0


async def test_filters_and_mark_price_come_from_binance(market: MarketHarness):
    filters = await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="btcusdt"))
    assert (filters.symbol, filters.tick_size, filters.step_size, filters.min_qty) == ("BTCUSDT", "0.10", "0.001", "0.001")
    assert (filters.max_qty, filters.min_notional, filters.market_step_size, filters.market_max_qty) == (
        "1000",
        "100",
        "0.001",
        "120",
    )
    price = await market.stub.GetPrice(market_pb2.GetPriceRequest(symbol="ETHUSDT"))
    assert price.symbol == "ETHUSDT" and price.time_ms == int(market.clock() * 1000)
    assert 1000 < float(price.price) < 6000
    await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="ETHUSDT"))
    assert market.fake.count(EXCHANGE_INFO) == 1  # one exchangeInfo for every symbol, cached
    market.clock.advance(301)  # MARKET_FILTERS_TTL_SECONDS
    await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="ETHUSDT"))
    assert market.fake.count(EXCHANGE_INFO) == 2


async def test_stale_exchange_info_is_used_when_the_refresh_fails(market: MarketHarness):
    await market.stub.GetSymbolFilters(market_pb2.GetSymbolFiltersRequest(symbol="BTCUSDT"))
    market.clock.advance(301)
    market.fake.fail_next(EXCHANGE_INFO, server_error(503), times=3)
    response = await market.stub.GetCandles(candles_request(), timeout=10)
    assert len(response.candles) == 50


async def test_a_candle_the_exchange_has_not_rolled_yet_is_cached_only_briefly(market: MarketHarness):
    # The exchange's clock runs 300 ms behind ours: at 12:05:00.1 it still serves the 12:00 candle as newest.
    market.clock.set(datetime(2026, 11, 25, 12, 5, 0, 100_000, tzinfo=UTC))
    exchange_now = market.clock() - 0.3
    market.fake.clock = lambda: exchange_now
    await market.stub.GetCandles(candles_request(limit=3))
    market.clock.advance(0.5)
    assert (await market.stub.GetCandles(candles_request(limit=3))).from_cache
    market.clock.advance(0.6)  # more than a second later: fetched again, not kept until 12:06
    assert not (await market.stub.GetCandles(candles_request(limit=3))).from_cache
    assert market.fake.count(KLINES) == 2


async def test_one_klines_request_per_symbol_and_interval_serves_every_shorter_window(market):
    from tradebot.v1 import market_pb2

    async def closed(limit: int) -> list:
        reply = await market.stub.GetCandles(market_pb2.GetCandlesRequest(symbol="BTCUSDT", interval="5m", limit=limit),
                                             timeout=10)
        return list(reply.candles)

    gateway_window = await closed(300)           # the tick's analysis
    executor_window = await closed(12)           # a paper position's recent candles, later in the tick
    assert market.fake.count("/fapi/v1/klines") == 1
    assert executor_window == gateway_window[-12:]   # the tail of the same fetch, never a different history
    longer = await closed(600)                   # a position older than the cached window: one longer fetch
    assert market.fake.count("/fapi/v1/klines") == 2 and longer[-300:] == gateway_window
    assert await closed(300) == gateway_window and await closed(50) == gateway_window[-50:]
    assert market.fake.count("/fapi/v1/klines") == 2   # the longer window now serves both
