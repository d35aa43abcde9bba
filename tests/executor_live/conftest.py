"""A fresh fake Binance Futures server and a live broker pointed at it, per test.

Every test gets its own API key and secret (so per-account state such as the
order-rate guard and today's PnL never leak between tests) and drives
the real python-binance client over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from services.executor.binance.broker import BinanceFuturesBroker, BrokerTuning, create_binance_broker
from tests.fakes.binance_futures import FakeBinanceFutures

FAST = BrokerTuning(read_attempts=3, retry_wait_s=0.01, resolve_attempts=3, resolve_wait_s=0.01)


@dataclass(frozen=True)
class Credentials:
    api_key: str
    api_secret: str


@pytest.fixture
def credentials() -> Credentials:
    return Credentials(api_key=f"key{uuid.uuid4().hex}", api_secret=f"secret{uuid.uuid4().hex}")


@pytest.fixture
async def fake(credentials: Credentials) -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(api_key=credentials.api_key, api_secret=credentials.api_secret) as server:
        yield server


async def connect(fake: FakeBinanceFutures, api_key: str, api_secret: str) -> BinanceFuturesBroker:
    broker = await create_binance_broker(api_key=api_key, api_secret=api_secret, futures_url=fake.url, spot_url=fake.url)
    broker.rest.tuning = FAST
    return broker


def set_request_timeout(broker: BinanceFuturesBroker, seconds: float) -> None:
    """Shorten python-binance's per-request timeout (10 s in production) for timeout tests."""
    broker.rest.client._requests_params["timeout"] = seconds  # noqa: SLF001 - test-only knob of the vendor client


@pytest.fixture
async def broker(fake: FakeBinanceFutures, credentials: Credentials) -> AsyncIterator[BinanceFuturesBroker]:
    live = await connect(fake, credentials.api_key, credentials.api_secret)
    try:
        yield live
    finally:
        await live.close()
