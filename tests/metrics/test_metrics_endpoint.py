"""The metrics endpoint, scraped over HTTP, reflects real gRPC traffic."""

from __future__ import annotations

import re

import grpc
import httpx
import pytest
from pymongo import AsyncMongoClient
from tradebot.v1 import market_pb2, market_pb2_grpc

from services.common import metrics
from services.common.errors import NotFound
from services.common.grpc_server import ServiceBinding, start_server
from services.common.mongo_metrics import COMMAND_LISTENER
from tests.support.processes import free_port

PRICE_METHOD = "/tradebot.v1.MarketData/GetPrice"


class _PriceOnlyMarket(market_pb2_grpc.MarketDataServicer):
    """Answers GetPrice for BTCUSDT; any other symbol is a project NotFound error."""

    async def GetPrice(self, request, context):  # noqa: N802 (generated name)
        if request.symbol != "BTCUSDT":
            raise NotFound(f"unknown symbol {request.symbol}")
        return market_pb2.GetPriceResponse(symbol=request.symbol, price="64250.10", time_ms=1)


def _sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def metrics_port() -> int:
    port = metrics.start_metrics_server(free_port())
    assert port is not None
    return port


async def test_grpc_latency_histogram_counts_every_call(metrics_port: int) -> None:
    binding = ServiceBinding(
        "tradebot.v1.MarketData", _PriceOnlyMarket(), market_pb2_grpc.add_MarketDataServicer_to_server
    )
    service = await start_server([binding], port=0)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    count_name = "tradebot_grpc_server_handling_seconds_count"
    labels = f'method="{PRICE_METHOD}"'
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            before = _sample((await http.get(url)).text, count_name, labels)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                stub = market_pb2_grpc.MarketDataStub(channel)
                for _ in range(3):
                    reply = await stub.GetPrice(market_pb2.GetPriceRequest(symbol="BTCUSDT"), timeout=5)
                    assert reply.price == "64250.10"
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.GetPrice(market_pb2.GetPriceRequest(symbol="NOPEUSDT"), timeout=5)
                assert failed.value.code() == grpc.StatusCode.NOT_FOUND
            scraped = await http.get(url)
    finally:
        await service.stop(0)
    assert scraped.status_code == 200
    # Failed calls are timed too: an alert on latency must see the slow failures.
    assert _sample(scraped.text, count_name, labels) - before == 4
    assert _sample(scraped.text, "tradebot_grpc_server_handling_seconds_bucket", f'le="+Inf",{labels}') >= 4


async def test_shared_metrics_are_exposed_under_their_documented_names(metrics_port: int) -> None:
    metrics.SAFETY_TRIPS_TOTAL.labels(rule="DAILY_LOSS").inc()
    metrics.EXCHANGE_WEIGHT_USED.set(1234)
    metrics.TICK_DURATION_SECONDS.observe(2.5)
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert _sample(text, "tradebot_safety_trips_total", 'rule="DAILY_LOSS"') >= 1
    assert re.search(r"^tradebot_exchange_weight_used 1234\.0$", text, re.MULTILINE)
    assert re.search(r'^tradebot_tick_duration_seconds_bucket\{le="5.0"\} [1-9]', text, re.MULTILINE)


def test_port_zero_means_off() -> None:
    assert metrics.start_metrics_server(0) is None


def test_second_start_reuses_the_running_endpoint(metrics_port: int) -> None:
    assert metrics.start_metrics_server(metrics_port) == metrics_port


async def test_mongodb_commands_are_counted_by_command_and_collection(metrics_port: int, mongo_uri: str,
                                                                      mongo_db_name: str) -> None:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    finds = ("tradebot_mongo_commands_total", 'collection="botinstances",command="find"')
    inserts = ("tradebot_mongo_commands_total", 'collection="botinstances",command="insert"')
    timed = ("tradebot_mongo_command_seconds_count", 'command="find"')
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, event_listeners=[COMMAND_LISTENER])
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            before = (await http.get(url)).text
            bots = client[mongo_db_name]["botinstances"]
            await bots.insert_many([{"n": n} for n in range(3)])   # one round trip
            for n in range(2):
                await bots.find_one({"n": n})
            after = (await http.get(url)).text
    finally:
        await client.close()
    assert _sample(after, *finds) - _sample(before, *finds) == 2
    assert _sample(after, *inserts) - _sample(before, *inserts) == 1
    assert _sample(after, *timed) - _sample(before, *timed) == 2
