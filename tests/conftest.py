"""Fixtures shared by every test package.

``mongo_uri`` is one real mongoeco wire server (memory engine) per test
session; tests isolate themselves by database name (``mongo_db_name``);
``db`` is an async handle on that database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common import server_clock, weight_governor
from tests.support.processes import start_mongo


@pytest.fixture(autouse=True)
def fresh_binance_hosts() -> Iterator[None]:
    """The governor and clock offset are per process and host, and a test's fake exchange may reuse a port an
    earlier test's fake had: without this, a test inherits that host's settings (its wait) and minute."""
    weight_governor._governors.clear()
    server_clock._clocks.clear()
    yield


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    process, uri = start_mongo("memory")
    try:
        yield uri
    finally:
        process.stop()


@pytest.fixture
def mongo_db_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mongo_client(mongo_uri: str) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def db(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[AsyncDatabase]:
    """An async handle on the test's own database (tests/cli overrides it with a synchronous one)."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        yield client[mongo_db_name]
    finally:
        await client.close()
