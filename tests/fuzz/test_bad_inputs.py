"""Each bad input named in the reliability issue, one by one, over the wire: INVALID_ARGUMENT naming the field.

Requests start valid (the same builders the service suites use) and change one
field, so the message proves which check fired.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from services.common.grpc_server import MAX_STATUS_MESSAGE_CHARS
from tests.executor import builders
from tests.executor.conftest import RunningExecutor
from tests.strategy.conftest import analyze_request
from tradebot.v1 import executor_pb2, executor_pb2_grpc, market_pb2, market_pb2_grpc, strategy_pb2_grpc

NAN = float("nan")


async def expect_invalid(call: Any, request: Any, fragment: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    details = caught.value.details()
    assert fragment in details
    return details


# -- market ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "request_", "fragment"),
    [
        ("GetCandles", market_pb2.GetCandlesRequest(symbol="", interval="5m"), "symbol is required"),
        ("GetCandles", market_pb2.GetCandlesRequest(symbol="NOSUCHUSDT", interval="5m"), "unknown symbol 'NOSUCHUSDT'"),
        ("GetCandles", market_pb2.GetCandlesRequest(symbol="BTC/USDT", interval="5m"), "symbol 'BTC/USDT' is malformed"),
        ("GetCandles", market_pb2.GetCandlesRequest(symbol="BTCUSDT", interval="7m"), "unknown interval '7m'"),
        ("GetCandles", market_pb2.GetCandlesRequest(symbol="BTCUSDT", interval=""), "unknown interval ''"),
        ("GetCandles", market_pb2.GetCandlesRequest(symbol="BTCUSDT", interval="5m", limit=-1),
         "limit must be between 1 and 1500"),
        ("GetCandles", market_pb2.GetCandlesRequest(symbol="BTCUSDT", interval="5m", limit=1501),
         "limit must be between 1 and 1500"),
        ("GetPrice", market_pb2.GetPriceRequest(symbol=""), "symbol is required"),
        ("GetPrice", market_pb2.GetPriceRequest(symbol="NOSUCHUSDT"), "unknown symbol"),
        ("GetSymbolFilters", market_pb2.GetSymbolFiltersRequest(symbol=""), "symbol is required"),
        ("GetSymbolFilters", market_pb2.GetSymbolFiltersRequest(symbol="NOSUCHUSDT"), "unknown symbol"),
    ],
)
async def test_market_rejects_bad_input(market_port: int, method: str, request_: Any, fragment: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{market_port}") as channel:
        await expect_invalid(getattr(market_pb2_grpc.MarketDataStub(channel), method), request_, fragment)


async def test_a_huge_symbol_is_invalid_argument_not_a_dropped_stream(market_port: int) -> None:
    """Regression (found by the fuzz): the error echoed a 100 kB symbol, the status trailer exceeded
    HTTP/2's 16 KiB limit and the caller saw RESOURCE_EXHAUSTED "Stream removed" instead."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{market_port}") as channel:
        details = await expect_invalid(market_pb2_grpc.MarketDataStub(channel).GetPrice,
                                       market_pb2.GetPriceRequest(symbol="A" * 100_000), "symbol 'AAAA")
    assert len(details) <= MAX_STATUS_MESSAGE_CHARS
    assert details.endswith("(truncated)")


# -- strategy ----------------------------------------------------------------
def _set(path: Callable[[Any], Any], name: str, value: Any) -> Callable[[Any], None]:
    return lambda request: setattr(path(request), name, value)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (_set(lambda r: r, "symbol", ""), "symbol must not be empty"),
        (_set(lambda r: r, "symbol", "BTC/USDT"), "symbol must be upper-case letters and digits"),
        (_set(lambda r: r, "interval", "7m"), "interval must be one of"),
        (_set(lambda r: r, "bot_id", 9), "bot_id must be one of 1, 2, 3, 4, got 9"),
        (_set(lambda r: r.candles[10], "close", "NaN"), "candles[10].close must be a finite number"),
        (_set(lambda r: r.candles[11], "high", "1e309x"), "candles[11].high must be a decimal number"),
        (_set(lambda r: r.candles[12], "low", "-1"), "candles[12].low must be greater than 0"),
        (_set(lambda r: r.candles[13], "open", "0"), "candles[13].open must be greater than 0"),
        (_set(lambda r: r.candles[14], "volume", "-1"), "candles[14].volume must not be negative"),
        (_set(lambda r: r.candles[15], "close", ""), "candles[15].close must be a decimal number"),
        # Regressions: valid decimals outside float's range used to reach the indicators
        # ("1e-400" became 0.0 and a ZeroDivisionError turned into INTERNAL).
        (_set(lambda r: r.candles[-1], "close", "1e-400"), "close is out of range for a price"),
        (_set(lambda r: r.candles[-1], "high", "1e309"), "high is out of range for a price"),
        (_set(lambda r: r.candles[-1], "volume", "1e400"), "volume is out of range"),
        (lambda r: r.candles.reverse(), "oldest first"),
        (lambda r: r.params.update({"min_score": NAN}), "parameter min_score must be between"),
        (lambda r: r.params.update({"min_score": float("inf")}), "parameter min_score must be between"),
    ],
)
async def test_analyze_rejects_bad_input(strategy_port: int, mutate: Callable[[Any], None], fragment: str) -> None:
    request = analyze_request()
    mutate(request)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{strategy_port}") as channel:
        await expect_invalid(strategy_pb2_grpc.StrategyStub(channel).Analyze, request, fragment)


# -- executor ----------------------------------------------------------------
def _config(**overrides: object) -> Callable[[executor_pb2.RunCycleRequest], None]:
    """A config statement (checked against the stored bot after it is validated)."""
    return lambda request: request.config.CopyFrom(builders.config(**overrides))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (_set(lambda r: r, "tick_id", ""), "tick_id is required"),
        (_set(lambda r: r, "tick_id", "t" * 129), "tick_id is at most 128 characters"),
        (_set(lambda r: r.bot, "bot_instance_id", ""), "bot.bot_instance_id is required"),
        (_set(lambda r: r.bot, "bot_instance_id", "b1"), "bot.bot_instance_id must be a 24-character hex ObjectId"),
        (_set(lambda r: r.signal, "confidence", 100.5), "signal.confidence must be in 0..100"),
        (_set(lambda r: r.signal, "confidence", -1.0), "signal.confidence must be in 0..100"),
        (_set(lambda r: r.signal, "confidence", NAN), "signal.confidence must be in 0..100"),
        (_config(confidence_threshold=NAN), "config.confidence_threshold must be in 0..100"),
        (_config(confidence_threshold=101.0), "config.confidence_threshold must be in 0..100"),
        (_config(leverage=500), "config.leverage must be in 1..125, got 500"),
        (_config(stop_loss_percent="-2"), "config.stop_loss_percent must be greater than 0"),
        (_config(take_profit_percent="NaN"), "config.take_profit_percent must be a finite number"),
        (_config(max_daily_loss="1e309x"), "config.max_daily_loss must be a decimal number"),
        (_config(margin_type="HEDGE"), "config.margin_type must be ISOLATED or CROSSED"),
    ],
)
async def test_run_cycle_rejects_bad_input(executor: RunningExecutor, paper_connection: tuple[str, str],
                                          mutate: Callable[[Any], None], fragment: str) -> None:
    cycle = builders.request(user_id=paper_connection[0])
    await executor.store(cycle)
    request = cycle.request()
    mutate(request)
    await expect_invalid(executor.stub.RunCycle, request, fragment)


@pytest.mark.parametrize(
    ("bot", "fragment"),
    [
        (executor_pb2.BotRef(user_id="6650f0f0f0f0f0f0f0f0f0f0", symbol="BTCUSDT"), "bot.bot_instance_id is required"),
        (executor_pb2.BotRef(bot_instance_id="not-an-id"), "bot.bot_instance_id must be a 24-character hex"),
    ],
)
async def test_get_position_rejects_bad_input(executor_port: int, bot: executor_pb2.BotRef, fragment: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{executor_port}") as channel:
        await expect_invalid(executor_pb2_grpc.ExecutorStub(channel).GetPosition,
                             executor_pb2.GetPositionRequest(bot=bot), fragment)
