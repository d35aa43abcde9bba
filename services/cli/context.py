"""Configuration and database access for CLI commands, read from the environment on demand.

Each command reads only what it needs: MONGODB_URI/MONGODB_DB for database
commands, CREDENTIALS_KEYS for connection and key commands, GATEWAY_URL with
CRON_SECRET for ``tick`` and with STATUS_TOKEN for ``status``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

from services.cli.errors import USAGE, CliError
from services.common.settings import register_uri_password

DEFAULT_DB = "tradebots"
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000"


def require_env(name: str, why: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise CliError(f"environment variable {name} is required {why}", USAGE)
    return value


def mongo_settings() -> tuple[str, str]:
    uri = require_env("MONGODB_URI", "(the MongoDB this platform uses, e.g. mongodb://127.0.0.1:27017)")
    register_uri_password(uri)
    return uri, os.environ.get("MONGODB_DB", "").strip() or DEFAULT_DB


@contextmanager
def database() -> Iterator[Database[dict[str, Any]]]:
    uri, name = mongo_settings()
    client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        yield client[name]
    except PyMongoError as error:
        raise CliError(describe_mongo_error(error)) from None
    finally:
        client.close()


def describe_mongo_error(error: PyMongoError) -> str:
    if isinstance(error, ServerSelectionTimeoutError):
        return "MongoDB is unreachable (check MONGODB_URI and that the server is running)"
    return f"MongoDB request failed: {type(error).__name__}: {str(error)[:200]}"


def gateway_url() -> str:
    return (os.environ.get("GATEWAY_URL", "").strip() or DEFAULT_GATEWAY_URL).rstrip("/")


def status_token() -> str | None:
    """The bearer of the gateway's /api/status (not the cron secret)."""
    return os.environ.get("STATUS_TOKEN", "").strip() or None


def object_id(value: str, what: str) -> ObjectId:
    try:
        return ObjectId(value.strip())
    except (InvalidId, TypeError):
        raise CliError(f"{what} must be a 24-character hex id, got {value!r}", USAGE) from None
