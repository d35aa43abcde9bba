"""``tradebot status`` reads the real gateway's ``/api/status`` (served by uvicorn) after a real tick."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from bson import ObjectId
from pymongo import MongoClient

from services.devstack.seed import PRESET_BOTS, bot_document
from services.gateway.app import create_app
from tests.cli.conftest import RunCli, cli_env, run_cli  # noqa: F401
from tests.gateway.conftest import AUTH, STATUS_TOKEN, gateway_settings
from tests.gateway.fakes import FakeServices


@pytest.fixture
async def gateway_url(mongo_uri: str, mongo_db_name: str, fakes: FakeServices) -> AsyncIterator[str]:
    settings = gateway_settings(mongo_uri, mongo_db_name, fakes)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def test_tradebot_status_prints_the_gateways_report(gateway_url, run_cli: RunCli, mongo_client: MongoClient,
                                                          mongo_db_name: str):  # fmt: skip
    mongo_client[mongo_db_name].botinstances.insert_one(bot_document(ObjectId(), PRESET_BOTS[0]))
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as http:
        tick = await http.get("/api/cron/run-bots", headers=AUTH)
    assert tick.status_code == 200

    env = {"GATEWAY_URL": gateway_url, "STATUS_TOKEN": STATUS_TOKEN}
    shown = await asyncio.to_thread(run_cli, "status", extra_env=env)

    assert shown.returncode == 0, shown.stderr
    assert f"(from gateway {gateway_url})" in shown.stdout
    assert "bots: ACTIVE 1" in shown.stdout
    assert ", ok" in next(line for line in shown.stdout.splitlines() if line.startswith("last tick:"))
    assert "open positions (1)" in shown.stdout

    refused = await asyncio.to_thread(run_cli, "status", extra_env={**env, "STATUS_TOKEN": "wrong"})
    assert refused.returncode == 1 and "401" in refused.stderr
