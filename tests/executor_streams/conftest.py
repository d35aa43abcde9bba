"""A live broker whose account is kept from its user-data stream, against the protocol fake (REST + WebSocket)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from services.executor.binance.account_state import STREAM_START_MARGIN_MS
from services.executor.binance.bring_up import AccountStreams
from services.executor.binance.broker import BinanceFuturesBroker, create_binance_broker
from services.executor.binance.rest import BrokerTuning
from services.executor.binance.user_stream import UserStreamHub
from tests.fakes.binance_futures import FakeBinanceFutures

SETTLE_S = 0.3
FAST = BrokerTuning(read_attempts=3, retry_wait_s=0.01, resolve_attempts=3, resolve_wait_s=0.01)


@dataclass
class StreamedAccount:
    fake: FakeBinanceFutures
    broker: BinanceFuturesBroker
    streams: AccountStreams
    api_key: str

    @property
    def state(self):  # noqa: ANN201 - the AccountState
        assert self.broker.shared.state is not None
        return self.broker.shared.state


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def stream_broker(fake: FakeBinanceFutures, api_key: str, api_secret: str, hub: UserStreamHub,
                        streams: AccountStreams) -> BinanceFuturesBroker:
    broker = await create_binance_broker(api_key=api_key, api_secret=api_secret, futures_url=fake.url,
                                         spot_url=fake.url)
    broker.rest.tuning = FAST
    broker.shared.own_order_settle_s = SETTLE_S   # the next tick is minutes away in production; here a moment
    broker.streams = streams
    await streams.watch(broker.rest)
    return broker


@pytest.fixture
async def streamed() -> AsyncIterator[StreamedAccount]:
    api_key, api_secret = f"key{uuid.uuid4().hex}", f"secret{uuid.uuid4().hex}"
    async with FakeBinanceFutures(api_key=api_key, api_secret=api_secret) as fake:
        hub = UserStreamHub("ws" + fake.url.removeprefix("http"))
        streams = AccountStreams(hub)
        broker = await stream_broker(fake, api_key, api_secret, hub, streams)
        try:
            await until(lambda: hub.is_live(broker.shared.account_id))
            await broker.account()   # the first whole-account read is the reconcile
            # Fills in the stream's first second are left to the REST read of the day before it (see
            # AccountState.on_live): trade after it on the exchange's clock, as any later tick does. (A fixed
            # sleep of the margin raced the moment on_live ran and the measured clock offset.)
            state = broker.shared.state
            assert state is not None
            await until(lambda: state.fills_seen_since_ms is not None)
            seen_from = state.fills_seen_since_ms
            await until(lambda: fake.server_time_ms() > seen_from + 50, timeout=STREAM_START_MARGIN_MS / 1000 + 5)
            yield StreamedAccount(fake, broker, streams, api_key)
        finally:
            await streams.close()
            await broker.close()
