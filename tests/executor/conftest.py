"""Fixtures for the executor tests: Fernet keys, a paper connection, a gRPC server on port 0 (`db` is shared)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import grpc
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo.asynchronous.database import AsyncDatabase
from tradebot.v1 import executor_pb2_grpc

from services.common.grpc_server import GrpcService, start_server
from services.executor.admin import store_connection_async
from services.executor.server import ExecutorApp
from services.executor.settings import ExecutorSettings


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


class RunningExecutor:
    def __init__(self, app: ExecutorApp, service: GrpcService, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.service = service
        self.channel = channel
        self.stub = executor_pb2_grpc.ExecutorStub(channel)


@pytest.fixture
async def executor(executor_settings: ExecutorSettings) -> AsyncIterator[RunningExecutor]:
    app = ExecutorApp(replace(executor_settings, paper_initial_balance=Decimal(10000)))
    service = await start_server([app.binding()], host="127.0.0.1", port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield RunningExecutor(app, service, channel)
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
async def live_stub(fake, mongo_uri, mongo_db_name, fernet_key) -> AsyncIterator[executor_pb2_grpc.ExecutorStub]:
    """A real executor whose testnet connections reach ``fake``: each live test module defines its own
    ``fake`` (a FakeBinanceFutures with the symbols it needs), and pytest hands that one in here."""
    settings = ExecutorSettings.from_env({
        "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name, "CREDENTIALS_KEYS": fernet_key,
        "BINANCE_FUTURES_TESTNET_URL": fake.url, "BINANCE_FUTURES_URL": "http://127.0.0.1:9",
        "BINANCE_SPOT_URL": fake.url,
    })
    app = ExecutorApp(settings)
    service = await start_server([app.binding()], port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield executor_pb2_grpc.ExecutorStub(channel)
    finally:
        await channel.close()
        await service.stop(0)
        await app.close()
