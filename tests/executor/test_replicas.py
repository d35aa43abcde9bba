"""Two executor processes (replicas behind round-robin), two bots of one live account on one symbol, one tick:
one position. The per-process symbol lock cannot see the other replica; the MongoDB lease can."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import grpc
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo import MongoClient
from tradebot.v1 import common_pb2, executor_pb2, executor_pb2_grpc

from services.common.bot_documents import new_bot_document
from services.executor.admin import connection_document
from tests.reliability.support import FuturesInThread
from tests.support.processes import ManagedProcess, free_port, grpc_serving, python_module, wait_until

pytestmark = pytest.mark.e2e

CONFIG = {"leverage": 10, "stopLossPercent": 3, "takeProfitPercent": 6, "positionSizePercent": 10,
          "maxDailyLoss": 500, "confidenceThreshold": 70, "maxConsecutiveLosses": 3}


@dataclass
class Replicas:
    futures: FuturesInThread
    addresses: tuple[str, str]
    bots: tuple[str, str]


@pytest.fixture
def replicas(mongo_uri: str) -> Iterator[Replicas]:
    api_key, api_secret = f"replica-key-{uuid.uuid4().hex[:8]}", f"replica-secret-{secrets.token_hex(12)}"
    futures = FuturesInThread(api_key, api_secret)
    fernet_key = Fernet.generate_key().decode()
    database = f"replicas_{uuid.uuid4().hex[:10]}"
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    db = client[database]
    user = ObjectId()
    db.exchangeconnections.insert_one(connection_document(user, "testnet", api_key, api_secret,
                                                          Fernet(fernet_key.encode())))
    bots = tuple(str(db.botinstances.insert_one(new_bot_document(
        user_id=user, bot_id=1, bot_name=f"Replica bot {n}", symbol="BTCUSDT", config=dict(CONFIG))).inserted_id)
        for n in (1, 2))
    market_port = free_port()
    processes = [ManagedProcess("market", python_module("services.market"), {"GRPC_PORT": str(market_port)})]
    ports = (free_port(), free_port())
    for number, port in enumerate(ports, 1):
        processes.append(ManagedProcess(f"executor-{number}", python_module("services.executor"), {
            "GRPC_PORT": str(port), "MONGODB_URI": mongo_uri, "MONGODB_DB": database, "CREDENTIALS_KEYS": fernet_key,
            "MARKET_ADDR": f"127.0.0.1:{market_port}", "BINANCE_FUTURES_TESTNET_URL": futures.url,
            "BINANCE_FUTURES_URL": futures.url, "BINANCE_SPOT_URL": futures.url,
        }))
    try:
        for process, address in zip(processes, (market_port, *ports), strict=True):
            wait_until(lambda a=address: grpc_serving(f"127.0.0.1:{a}"), f"{process.name} serving", 30, process)
        yield Replicas(futures, tuple(f"127.0.0.1:{port}" for port in ports), bots)  # type: ignore[arg-type]
    finally:
        for process in processes:
            process.stop()
        futures.stop()
        client.drop_database(database)
        client.close()


async def test_two_replicas_two_bots_of_one_account_on_one_symbol_open_one_position(replicas: Replicas):
    async def cycle(address: str, bot: str) -> executor_pb2.RunCycleResponse:
        async with grpc.aio.insecure_channel(address) as channel:
            return await executor_pb2_grpc.ExecutorStub(channel).RunCycle(executor_pb2.RunCycleRequest(
                tick_id="replica-tick", bot=executor_pb2.BotRef(bot_instance_id=bot),
                signal=common_pb2.Signal(action=common_pb2.ACTION_BUY, confidence=90)), timeout=30)

    # One tick: round-robin sends the two bots to different replicas, at the same moment.
    first, second = await asyncio.gather(*(cycle(address, bot)
                                           for address, bot in zip(replicas.addresses, replicas.bots, strict=True)))

    fake = replicas.futures.fake
    entries = replicas.futures.call(lambda: [r for r in fake.orders_sent() if r.params.get("type") == "MARKET"])
    placed = [reply for reply in (first, second) if reply.order.placed]
    assert len(entries) == 1 and len(placed) == 1, (first.decision, second.decision)
    position = replicas.futures.call(fake.position, "BTCUSDT")
    assert position.amount == Decimal(placed[0].order.quantity)   # not doubled
    other = second if placed[0] is first else first
    # It saw the first one's position: under the lease (read after the entry), or in its own snapshot.
    assert other.has_position and not other.order.placed, other.decision
    assert "already open on this account" in other.decision or "monitoring" in other.decision
    stops = replicas.futures.call(lambda: [a for a in fake.default_account.algo_orders
                                           if a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET"])
    assert len(stops) == 1   # one position, one stop: no second closePosition stop booking the same trade
