"""2,000 accounts behind one IP: 2,000 listenKeys on 10 combined connections, each event on its own stream."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection

from tests.exchange_fake.conftest import Client
from tests.fakes.binance_exchange import FakeBinanceExchange

ACCOUNTS = 2000
CONNECTIONS = 10
PER_CONNECTION = ACCOUNTS // CONNECTIONS
EVENTS_PER_ORDER = 3   # ORDER_TRADE_UPDATE NEW, TRADE; ACCOUNT_UPDATE
T = TypeVar("T")


async def collect(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 15)) for _ in range(count)]


async def test_2000_accounts_get_their_own_events_on_10_combined_connections(
        exchange: FakeBinanceExchange, http: aiohttp.ClientSession) -> None:
    clients = [Client(http, exchange, f"bench{i:04d}", f"secret{i:04d}") for i in range(ACCOUNTS)]
    for client in clients:
        exchange.add_account(client.api_key, client.api_secret)
    gate = asyncio.Semaphore(64)

    async def bounded(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    keys = await asyncio.gather(*(bounded(client.listen_key()) for client in clients))
    assert len(set(keys)) == ACCOUNTS and exchange.pool.used_1m() == ACCOUNTS   # weight 1 each, one pool
    owner = {key: index for index, key in enumerate(keys)}
    groups = [keys[n * PER_CONNECTION:(n + 1) * PER_CONNECTION] for n in range(CONNECTIONS)]
    connections = []
    for group in groups:   # 20 streams in the URL, the other 180 in one SUBSCRIBE
        ws = await websockets.connect(f"{exchange.ws_url}/stream?streams={'/'.join(group[:20])}")
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": group[20:], "id": 1}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 1}
        connections.append(ws)
    try:
        assert exchange.ws_connections == CONNECTIONS
        readers = [asyncio.create_task(collect(ws, PER_CONNECTION * EVENTS_PER_ORDER)) for ws in connections]
        placed = await asyncio.gather(*(bounded(client.call("POST", "/fapi/v1/order", {
            "symbol": ("BTCUSDT", "ETHUSDT")[index % 2], "side": "BUY", "type": "MARKET",
            "quantity": ("0.002", "0.01")[index % 2], "newClientOrderId": f"smoke-{index}"}))
            for index, client in enumerate(clients)))
        assert {reply.status for reply in placed} == {200}
        received = await asyncio.gather(*readers)
    finally:
        for ws in connections:
            await ws.close()

    for group, messages in zip(groups, received, strict=True):
        assert Counter(message["stream"] for message in messages) == {key: EVENTS_PER_ORDER for key in group}
        for message in messages:
            event, index = message["data"], owner[message["stream"]]
            if event["e"] == "ORDER_TRADE_UPDATE":
                assert event["o"]["c"] == f"smoke-{index}"
            else:
                assert event["a"]["P"][0]["s"] == ("BTCUSDT", "ETHUSDT")[index % 2]
    assert exchange.rest_requests == 2 * ACCOUNTS and exchange.pool.answered_429 == 0
    assert exchange.pool.weight_by_path == {"/fapi/v1/listenKey": ACCOUNTS}   # orders weigh 0
    assert exchange.ws_connection_attempts == CONNECTIONS
