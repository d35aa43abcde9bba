"""Gateway under test: the real Starlette app and MongoDB, fake gRPC services on real servers."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import MongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from services.devstack.seed import PRESET_BOTS, bot_document
from services.gateway.app import create_app
from services.gateway.repository import BotRepository
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeServices, start_fake_services

CRON_SECRET = "test-cron-secret-0123456789abcdef-XYZ"
AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}
STATUS_TOKEN = "test-status-token-0123456789abcdef-XYZ"
STATUS_AUTH = {"Authorization": f"Bearer {STATUS_TOKEN}"}


class CommandRecorder(monitoring.CommandListener):
    """Every command the gateway's Mongo client sends (round trips)."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.bodies: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)
        self.bodies.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def data_commands(self) -> list[str]:
        return [name for name in self.commands if name not in ("ping", "hello", "isMaster", "endSessions")]


@dataclasses.dataclass
class Gateway:
    http: httpx.AsyncClient
    db: Database
    mongo: CommandRecorder
    fakes: FakeServices
    user_id: ObjectId

    async def tick(self, method: str = "GET") -> dict[str, Any]:
        response = await self.http.request(method, "/api/cron/run-bots", headers=AUTH)
        assert response.status_code == 200, response.text
        return response.json()

    def add_bots(self, count: int = 1, **overrides: Any) -> list[ObjectId]:
        documents = [bot_document(self.user_id, overrides.pop("preset", PRESET_BOTS[0]), **overrides) for _ in range(count)]
        self.db.botinstances.insert_many(documents)
        return [document["_id"] for document in documents]

    def bot(self, bot_id: ObjectId) -> dict[str, Any]:
        document = self.db.botinstances.find_one({"_id": bot_id})
        assert document is not None
        return document

    def logs(self, bot_id: ObjectId, **query: Any) -> list[dict[str, Any]]:
        return list(self.db.tradelogs.find({"botInstanceId": bot_id, **query}))


@pytest.fixture(scope="session")
async def fake_services() -> AsyncIterator[FakeServices]:
    services = await start_fake_services()
    yield services
    await services.stop()


@pytest.fixture
def fakes(fake_services: FakeServices, db: AsyncDatabase) -> FakeServices:
    fake_services.reset(bots=db)   # the fake executor reads the test's bots, as the real one does
    return fake_services


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]


def gateway_settings(mongo_uri: str, mongo_db_name: str, fakes: FakeServices, **overrides: Any) -> GatewaySettings:
    """A gateway on the test's database and the in-process fake services, with short test deadlines."""
    addresses = fakes.addresses
    values: dict[str, Any] = {
        "cron_secret": CRON_SECRET,
        "status_token": STATUS_TOKEN,
        "mongodb_uri": mongo_uri,
        "mongodb_db": mongo_db_name,
        "market_addr": addresses["market"],
        "strategy_addr": addresses["strategy"],
        "executor_addr": addresses["executor"],
        "tick_deadline_seconds": 20.0,
        "write_reserve_seconds": 3.0,
        "lease_seconds": 60.0,
    }
    return GatewaySettings(**{**values, **overrides})


@pytest.fixture
def gateway_factory(
    mongo_uri: str, mongo_client: MongoClient, mongo_db_name: str, fakes: FakeServices
) -> GatewayFactory:
    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Gateway]:
        settings = gateway_settings(mongo_uri, mongo_db_name, fakes, **overrides)
        recorder = CommandRecorder()
        repository = BotRepository.connect(settings.mongodb_uri, settings.mongodb_db, timeout_ms=1000,
                                           event_listeners=[recorder])  # fmt: skip
        app = create_app(settings, repository=repository)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                    yield Gateway(http, mongo_client[mongo_db_name], recorder, fakes, ObjectId())
        finally:
            await repository.close()

    return start


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> AsyncIterator[Gateway]:
    async with gateway_factory() as started:
        yield started
