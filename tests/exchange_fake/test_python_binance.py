"""The exchange through the python-binance client the services use: listenKeys, orders, the stream."""

from __future__ import annotations

import json
import time

import websockets
from binance import AsyncClient

from tests.fakes.binance_exchange import FakeBinanceExchange


async def test_python_binance_manages_a_listen_key_and_its_orders_arrive_on_the_stream(
        exchange: FakeBinanceExchange) -> None:
    exchange.add_account("pb-key", "pb-secret")
    client = AsyncClient(api_key="pb-key", api_secret="pb-secret")
    client.FUTURES_URL = f"{exchange.url}/fapi"
    server_time = (await client.futures_time())["serverTime"]   # the fake clock is days away from ours
    client.timestamp_offset = server_time - int(time.time() * 1000)
    try:
        key = await client.futures_stream_get_listen_key()
        assert await client.futures_stream_get_listen_key() == key
        async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as ws:
            await client.futures_stream_keepalive(listenKey=key)
            await client.futures_change_leverage(symbol="ETHUSDT", leverage=7)
            order = await client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01",
                                                      newClientOrderId="pb-1", newOrderRespType="RESULT")
            events = [json.loads(await ws.recv()) for _ in range(4)]
            assert [e["e"] for e in events] == ["ACCOUNT_CONFIG_UPDATE", "ORDER_TRADE_UPDATE",
                                                "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
            assert events[2]["o"]["i"] == order["orderId"] and events[2]["o"]["c"] == "pb-1"
            await client.futures_stream_close(listenKey=key)
        assert exchange.listen_key_of("pb-key") is None
        assert exchange.pool.weight_by_path["/fapi/v1/listenKey"] == 4 and exchange.rest_requests == 7
    finally:
        await client.close_connection()
