"""Running the installed ``tradebot`` command as a user would, against the session's real MongoDB."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from services.cli.bot_config import build_config, bot_document_for_preset
from tests.support.processes import REPO_ROOT

_SCRIPT = Path(sys.executable).parent / "tradebot"
# The console script pyproject installs; `python -m services.cli` is the same main().
TRADEBOT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "services.cli"]
_CLEARED = ("CRON_SECRET", "STATUS_TOKEN", "GATEWAY_URL", "CREDENTIALS_KEYS", "MONGODB_URI", "MONGODB_DB")

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(mongo_uri: str, mongo_db_name: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _CLEARED}
    env.update({"MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name, "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> RunCli:
    def run(*args: str, input: str | None = None, extra_env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TRADEBOT, *args],
            cwd=REPO_ROOT,
            env={**cli_env, **(extra_env or {})},
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def run_many(run_cli: RunCli) -> Callable[..., list[subprocess.CompletedProcess[str]]]:
    """Run independent invocations at once: each waits ~0.5 s for pymongo's threads at exit."""

    def run(*calls: tuple[tuple[str, ...], dict[str, object]]) -> list[subprocess.CompletedProcess[str]]:
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = [pool.submit(run_cli, *args, **options) for args, options in calls]
            return [future.result() for future in futures]

    return run


@pytest.fixture
def db(mongo_client: MongoClient, mongo_db_name: str) -> Database:
    return mongo_client[mongo_db_name]


@pytest.fixture
def user_id(db: Database) -> ObjectId:
    """A user written directly (``tradebot user create`` has its own test): each CLI run costs ~1 s."""
    return db.users.insert_one({"email": "trader@example.com"}).inserted_id


def insert_bot(db: Database, user_id: ObjectId, preset: int = 1, symbol: str = "BTCUSDT", **fields: object) -> ObjectId:
    document = bot_document_for_preset(user_id=user_id, preset=preset, symbol=symbol, config=build_config({}))
    document.update(fields)
    return db.botinstances.insert_one(document).inserted_id
