"""Fixtures for the executor tests: Fernet keys, a paper connection, a gRPC server on port 0 (`db` is shared).

The executor reads each bot from ``botinstances`` and its prices from the market service: a test's
``BotCycle`` is stored as the gateway would have left the bot, and its price and candles are what the
market service answers (``FakeMarket``, a plain fake behind the executor's ``MarketReader``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import grpc
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from tradebot.v1 import executor_pb2, executor_pb2_grpc

from services.common.grpc_server import GrpcService, start_server
from services.executor.admin import store_connection_async
from services.executor.market_inputs import MarketInputs
from services.executor.server import ExecutorApp
from services.executor.settings import ExecutorSettings
from tests.executor.builders import BotCycle


@pytest.fixture
def fernet_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def executor_settings(mongo_uri: str, mongo_db_name: str, fernet_key: str) -> ExecutorSettings:
    return ExecutorSettings.from_env({
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": mongo_db_name,
        "CREDENTIALS_KEYS": fernet_key,
        "GRPC_PORT": "0",
    })


class FakeMarket:
    """The market service as the executor sees it: what each symbol's price and candles are now."""

    def __init__(self) -> None:
        self.by_symbol: dict[str, MarketInputs] = {}
        self.reads = 0

    async def inputs(self, symbol: str, interval: str, opened_ms: int | None, tick_id: str,
                     deadline: float | None) -> MarketInputs:
        self.reads += 1
        return self.by_symbol[symbol]


class CycleClient:
    """RunCycle the way a tick drives it: the bot stored first, then the gateway's slim request."""

    def __init__(self, stub: executor_pb2_grpc.ExecutorStub, db: AsyncDatabase, market: FakeMarket) -> None:
        self.stub = stub
        self.db = db
        self.market = market

    async def store(self, cycle: BotCycle) -> None:
        document = cycle.document()
        try:
            await self.db.botinstances.replace_one({"_id": document["_id"]}, document, upsert=True)
        except DuplicateKeyError:   # two concurrent upserts of one bot: the other one created it
            await self.db.botinstances.replace_one({"_id": document["_id"]}, document)
        self.market.by_symbol[cycle.symbol] = cycle.market()

    async def run_cycle(self, cycle: BotCycle, **call: object) -> executor_pb2.RunCycleResponse:
        await self.store(cycle)
        return await self.stub.RunCycle(cycle.request(), **call)


class RunningExecutor(CycleClient):
    def __init__(self, app: ExecutorApp, service: GrpcService, channel: grpc.aio.Channel, db: AsyncDatabase,
                 market: FakeMarket) -> None:
        super().__init__(executor_pb2_grpc.ExecutorStub(channel), db, market)
        self.app = app
        self.service = service
        self.channel = channel


@pytest.fixture
async def executor(executor_settings: ExecutorSettings, db: AsyncDatabase) -> AsyncIterator[RunningExecutor]:
    market = FakeMarket()
    app = ExecutorApp(replace(executor_settings, paper_initial_balance=Decimal(10000)), market=market)
    service = await start_server([app.binding()], host="127.0.0.1", port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield RunningExecutor(app, service, channel, db, market)
    finally:
        await channel.close()
        await service.stop(0)
        await app.close()


@pytest.fixture
async def paper_connection(db: AsyncDatabase, fernet_key: str) -> tuple[str, str]:
    """(user_id, connection_id) of a user with one active paper connection."""
    user_id = str(ObjectId())
    connection_id = await store_connection_async(
        db, user_id, "paper", "paper-key-123456", "paper-secret-123456", Fernet(fernet_key.encode())
    )
    return user_id, connection_id


@pytest.fixture
def user_streams() -> bool:
    """Live accounts kept from user-data streams (production); a module overrides this to test the REST path."""
    return True


@pytest.fixture
async def live_stub(fake, mongo_uri, mongo_db_name, fernet_key, db, user_streams) -> AsyncIterator[CycleClient]:
    """A real executor whose testnet connections reach ``fake``: each live test module defines its own
    ``fake`` (a FakeBinanceFutures with the symbols it needs), and pytest hands that one in here."""
    settings = ExecutorSettings.from_env({
        "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name, "CREDENTIALS_KEYS": fernet_key,
        "BINANCE_FUTURES_TESTNET_URL": fake.url, "BINANCE_FUTURES_URL": "http://127.0.0.1:9",
        "BINANCE_SPOT_URL": fake.url, "BINANCE_USER_STREAMS": "true" if user_streams else "false",
    })
    market = FakeMarket()
    app = ExecutorApp(settings, market=market)
    service = await start_server([app.binding()], port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield CycleClient(executor_pb2_grpc.ExecutorStub(channel), db, market)
    finally:
        await channel.close()
        await service.stop(0)
        await app.close()
