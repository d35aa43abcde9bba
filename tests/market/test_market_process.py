"""The real ``python -m services.market`` process, reached with the real grpcurl binary."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.fakes.binance_market import FakeBinanceMarket
from tests.support.grpcurl import grpcurl
from tests.support.processes import ManagedProcess, free_port, python_module

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeBinanceMarket]:
    with FakeBinanceMarket() as fake:
        yield fake


@pytest.fixture(scope="module")
def market_address(fake_upstream: FakeBinanceMarket) -> Iterator[str]:
    port = free_port()
    process = ManagedProcess(
        "market",
        python_module("services.market"),
        {
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(port),
            "MARKET_DATA_SOURCE": "binance",
            "BINANCE_FUTURES_URL": fake_upstream.url,
            "BINANCE_SPOT_URL": fake_upstream.url,
        },
    )
    try:
        process.wait_for_line(r'"message": "serving"', timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        assert process.stop() == 0, process.output()


def test_reflection_lists_market_data_and_health(market_address: str):
    result = grpcurl(market_address, "list")
    assert result.returncode == 0, result.stderr
    assert {"tradebot.v1.MarketData", "grpc.health.v1.Health"} <= set(result.stdout.split())
    described = grpcurl(market_address, "describe", "tradebot.v1.MarketData")
    assert "rpc GetCandles" in described.stdout and "rpc GetStats" in described.stdout


def test_health_check_is_serving(market_address: str):
    for service in ("", "tradebot.v1.MarketData"):
        result = grpcurl(market_address, "grpc.health.v1.Health/Check", data={"service": service})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "SERVING"


def test_get_candles_over_grpcurl_reaches_the_configured_binance_url(
    market_address: str, fake_upstream: FakeBinanceMarket
):
    request = {"symbol": "BTCUSDT", "interval": "5m", "limit": 3}
    result = grpcurl(market_address, "tradebot.v1.MarketData/GetCandles", data=request)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["source"] == "binance" and len(answer["candles"]) == 3
    assert all(candle["closed"] for candle in answer["candles"])
    assert fake_upstream.count("/fapi/v1/klines") == 1

    again = json.loads(grpcurl(market_address, "tradebot.v1.MarketData/GetCandles", data=request).stdout)
    assert again["from_cache"] is True and fake_upstream.count("/fapi/v1/klines") == 1


def test_bad_interval_over_grpcurl_is_invalid_argument(market_address: str):
    result = grpcurl(market_address, "tradebot.v1.MarketData/GetCandles", data={"symbol": "BTCUSDT", "interval": "9m"})
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr and "unknown interval" in result.stderr
