"""Real servicers on real grpc.aio servers (port 0), configured offline, for the fuzz tests.

market: the simulated source on a frozen clock; strategy: no OpenAI key (the AI
is "not configured", a deliberate fallback); executor: real MongoDB (mongoeco)
with a generated Fernet key and one stored paper connection (fixtures imported
from tests/executor so both suites build the executor the same way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from services.common.grpc_server import start_server
from services.market.app import binding as market_binding
from services.market.service import MarketDataService
from services.market.sources.simulated import SimulatedMarketSource
from services.strategy.server import build_analyzer, strategy_binding
from tests.executor.conftest import (  # noqa: F401 (fixtures reused as they are)
    RunningExecutor,
    executor,
    executor_settings,
    fernet_key,
    paper_connection,
)
from tests.market.conftest import TEST_SETTINGS as MARKET_TEST_SETTINGS
from tests.market.conftest import FakeClock
from tests.strategy.conftest import strategy_settings

# Reproducible in CI: the same examples every run, nothing remembered between runs.
settings.register_profile(
    "grpc-fuzz",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.fixture
async def market_port() -> AsyncIterator[int]:
    clock = FakeClock()
    service = MarketDataService(SimulatedMarketSource(clock=clock), MARKET_TEST_SETTINGS, clock=clock)
    server = await start_server([market_binding(service)], host="127.0.0.1", port=0)
    try:
        yield server.port
    finally:
        await server.stop(0)
        await service.close()


@pytest.fixture
async def strategy_port() -> AsyncIterator[int]:
    analyzer = build_analyzer(strategy_settings())
    server = await start_server([strategy_binding(analyzer)], host="127.0.0.1", port=0)
    try:
        yield server.port
    finally:
        await server.stop(0)
        await analyzer.close()


@pytest.fixture
def executor_port(executor: RunningExecutor) -> int:  # noqa: F811
    return executor.service.port
