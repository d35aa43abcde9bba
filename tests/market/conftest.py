"""Fixtures for the market service: a controllable clock, the fake Binance server,
and a real grpc.aio MarketData server (port 0) in front of the real python-binance client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from tradebot.v1 import market_pb2_grpc

from services.common.grpc_server import GrpcService, start_server
from services.market.app import binding
from services.market.service import MarketDataService
from services.market.settings import MarketSettings
from services.market.sources.binance import BinanceMarketSource
from services.market.sources.simulated import SimulatedMarketSource
from tests.fakes.binance_market import FakeBinanceMarket

# 12:02:30 UTC: half-way through a 5m candle, 30 s into a minute.
START = datetime(2026, 11, 25, 12, 2, 30, tzinfo=UTC).timestamp()


class FakeClock:
    """Wall-clock seconds that move only when a test says so (shared with the fake server)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


TEST_SETTINGS = MarketSettings(
    retry_attempts=3,
    retry_initial_backoff_seconds=0.01,
    retry_max_backoff_seconds=0.05,
    retry_max_total_seconds=5.0,
    upstream_timeout_seconds=2.0,
)


@dataclasses.dataclass
class MarketHarness:
    clock: FakeClock
    fake: FakeBinanceMarket
    service: MarketDataService
    source: BinanceMarketSource
    stub: market_pb2_grpc.MarketDataStub
    port: int


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_binance(clock: FakeClock) -> Iterator[FakeBinanceMarket]:
    with FakeBinanceMarket(clock=clock) as fake:
        yield fake


async def _serve(service: MarketDataService) -> tuple[GrpcService, grpc.aio.Channel]:
    server = await start_server([binding(service)], host="127.0.0.1", port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return server, channel


MakeHarness = Callable[..., "AsyncIterator[MarketHarness]"]


@pytest.fixture
async def make_market(clock: FakeClock, fake_binance: FakeBinanceMarket):
    """Build a Binance-backed market server with settings overrides: ``await make_market(**overrides)``."""
    started: list[tuple[GrpcService, grpc.aio.Channel, MarketDataService]] = []

    async def build(**overrides: object) -> MarketHarness:
        settings = dataclasses.replace(TEST_SETTINGS, data_source="binance", futures_url=fake_binance.url, **overrides)
        source = BinanceMarketSource.from_settings(settings, clock=clock)
        service = MarketDataService(source, settings, clock=clock)
        server, channel = await _serve(service)
        started.append((server, channel, service))
        return MarketHarness(clock, fake_binance, service, source, market_pb2_grpc.MarketDataStub(channel), server.port)

    yield build
    for server, channel, service in started:
        await channel.close()
        await server.stop(0)
        await service.close()


@pytest.fixture
async def market(make_market) -> MarketHarness:
    return await make_market()


@pytest.fixture
async def simulated_stub(clock: FakeClock) -> AsyncIterator[market_pb2_grpc.MarketDataStub]:
    service = MarketDataService(SimulatedMarketSource(clock=clock), TEST_SETTINGS, clock=clock)
    server, channel = await _serve(service)
    yield market_pb2_grpc.MarketDataStub(channel)
    await channel.close()
    await server.stop(0)
