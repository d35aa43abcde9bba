"""Fixtures shared by every test package.

``mongo_uri`` is one real mongoeco wire server (memory engine) per test
session; tests isolate themselves by database name (``mongo_db_name``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from tests.support.processes import start_mongo


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
