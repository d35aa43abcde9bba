"""The Strategy service over real gRPC: in process on port 0, and as `python -m services.strategy` with grpcurl."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from services.common.grpc_server import start_server
from services.strategy.server import strategy_binding
from tests.strategy.conftest import TEST_API_KEY, analyze_request, make_analyzer, strategy_settings
from tests.support.grpcurl import grpcurl
from tests.support.processes import ManagedProcess, free_port, python_module
from tradebot.v1 import common_pb2, strategy_pb2, strategy_pb2_grpc


@pytest.fixture
async def stub() -> AsyncIterator[strategy_pb2_grpc.StrategyStub]:
    analyzer = make_analyzer(strategy_settings())
    service = await start_server([strategy_binding(analyzer)])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            yield strategy_pb2_grpc.StrategyStub(channel)
    finally:
        await service.stop(0)
        await analyzer.close()


async def test_analyze_returns_signal_indicators_and_trend(stub):
    reply = await stub.Analyze(analyze_request(1))
    assert reply.strategy_name == "Bitcoin Pro"
    assert reply.signal.action == common_pb2.ACTION_BUY
    assert reply.signal.confidence == 90.0
    assert reply.technical_signal == reply.signal
    assert reply.trend.direction == "UP" and 0 <= reply.trend.strength <= 100 and "EMA21" in reply.trend.rule
    assert {"rsi", "macd", "macd_signal", "macd_histogram", "ema_9", "ema_21", "ema_50", "ema_200"} <= set(
        reply.indicators
    )
    assert all(math.isfinite(value) for value in reply.indicators.values())
    assert reply.last_candle_open_time_ms == analyze_request(1).candles[-1].open_time_ms
    assert not reply.ai.requested and not reply.cached


@pytest.mark.parametrize(
    ("request_", "code", "details"),
    [
        (strategy_pb2.AnalyzeRequest(bot_id=7, symbol="BTCUSDT", interval="5m"), grpc.StatusCode.INVALID_ARGUMENT,
         "bot_id must be one of 1, 2, 3, 4, got 7"),
        (analyze_request(2, min_trend_strength=5), grpc.StatusCode.INVALID_ARGUMENT,
         "Safe Trader parameter min_trend_strength must be between 30 and 100, got 5"),
        (strategy_pb2.AnalyzeRequest(bot_id=3, symbol="BTCUSDT", interval="5m", candles=analyze_request().candles[:60]),
         grpc.StatusCode.FAILED_PRECONDITION, "Trend Rider needs at least 200 closed candles"),
    ],
)  # fmt: skip
async def test_errors_map_to_their_status_codes(stub, request_, code, details):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Analyze(request_)
    assert raised.value.code() == code
    assert details in raised.value.details()


async def test_list_strategies_describes_parameters_and_history(stub):
    reply = await stub.ListStrategies(strategy_pb2.ListStrategiesRequest())
    assert [s.name for s in reply.strategies] == ["Bitcoin Pro", "Safe Trader", "Trend Rider", "Range Scalper"]
    for info in reply.strategies:
        assert info.min_candles == 200 and info.description
        for parameter in info.parameters:
            assert parameter.min_value <= parameter.default_value <= parameter.max_value


@pytest.mark.e2e
def test_real_process_with_grpcurl_and_the_fake_ai():
    fake = ManagedProcess("fake-openai", python_module("tests.fakes.openai_server", "--port", "0"), {})
    port = free_port()
    strategy = None
    try:
        base_url = fake.wait_for_line(r"READY (\S+)").group(1)
        strategy = ManagedProcess(
            "strategy",
            python_module("services.strategy"),
            {"GRPC_PORT": str(port), "OPENAI_API_KEY": TEST_API_KEY, "OPENAI_BASE_URL": base_url},
        )
        strategy.wait_for_line(r'"message": "serving"')
        address = f"127.0.0.1:{port}"

        listed = grpcurl(address, "list")
        assert listed.returncode == 0, listed.stderr
        assert {"tradebot.v1.Strategy", "grpc.health.v1.Health"} <= set(listed.stdout.split())

        health = grpcurl("-d", '{"service": "tradebot.v1.Strategy"}', address, "grpc.health.v1.Health/Check")
        assert json.loads(health.stdout)["status"] == "SERVING"

        catalogue = json.loads(grpcurl(address, "tradebot.v1.Strategy/ListStrategies").stdout)
        assert [s["bot_id"] for s in catalogue["strategies"]] == [1, 2, 3, 4]

        request = MessageToDict(analyze_request(1, use_ai=True))
        analyzed = grpcurl(address, "tradebot.v1.Strategy/Analyze", data=request)
        assert analyzed.returncode == 0, analyzed.stderr
        reply = json.loads(analyzed.stdout)
        assert reply["signal"]["action"] == "ACTION_BUY"
        assert reply["ai"]["used"] is True and reply["ai"]["model"] == "gpt-4o"

        bad = grpcurl(address, "tradebot.v1.Strategy/Analyze", data={"botId": 9, "symbol": "BTCUSDT", "interval": "5m"})
        assert "InvalidArgument" in bad.stderr and "bot_id must be one of" in bad.stderr
    finally:
        if strategy is not None:
            assert strategy.stop() == 0
            assert TEST_API_KEY not in strategy.output()
        fake.stop()
