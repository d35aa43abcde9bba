"""User-data streams: listenKeys, Binance's WebSocket limits, and events that agree with REST."""

from __future__ import annotations

import asyncio
import json
import string
from decimal import Decimal
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.exchange_fake.conftest import Client, client_for
from tests.fakes.binance_exchange import FakeBinanceExchange
from tests.fakes.binance_limits import FakeClock

MISSING_KEY = {"code": -1125, "msg": "This listenKey does not exist."}


async def receive(ws: ClientConnection, timeout: float = 2.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def receive_n(ws: ClientConnection, n: int) -> list[Any]:
    return [await receive(ws) for _ in range(n)]


async def nothing_more(ws: ClientConnection, wait: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), wait)


async def ask(ws: ClientConnection, request: dict[str, Any]) -> Any:
    await ws.send(json.dumps(request))
    return await receive(ws)


def keys_for(exchange: FakeBinanceExchange, count: int, prefix: str = "acct") -> list[str]:
    """``count`` accounts with an active listenKey each (set up directly: the limits under test are the WS ones)."""
    keys = []
    for index in range(count):
        exchange.add_account(f"{prefix}{index}", f"secret{index}")
        keys.append(exchange.streams.start_key(f"{prefix}{index}"))
    return keys


async def test_listen_key_is_one_per_account_extended_by_put_and_expires_after_60_minutes(
        exchange: FakeBinanceExchange, client: Client, clock: FakeClock) -> None:
    key = await client.listen_key()
    assert len(key) == 64 and set(key) <= set(string.ascii_letters + string.digits)
    assert await client.listen_key() == key   # POST again: the same key, extended
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as ws:
        clock.advance(50 * 60)
        assert (await client.call("PUT", "/fapi/v1/listenKey", auth="key")).status == 200
        assert (await client.call("PUT", "/fapi/v1/listenKey", {"listenKey": key}, auth="key")).status == 200
        wrong = await client.call("PUT", "/fapi/v1/listenKey", {"listenKey": "x" * 64}, auth="key")
        assert (wrong.status, wrong.body) == (400, MISSING_KEY)
        clock.advance(50 * 60)   # 100 minutes after creation, 50 after the last PUT: still valid
        exchange.sweep()
        exchange.manual_order(client.api_key, "ETHUSDT", "BUY", "0.01")
        assert [e["e"] for e in await receive_n(ws, 3)] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE",
                                                             "ACCOUNT_UPDATE"]
        clock.advance(11 * 60)   # 61 minutes without a keepalive
        exchange.sweep()
        expired = await receive(ws)
        assert expired == {"e": "listenKeyExpired", "E": expired["E"], "listenKey": key}
        assert abs(expired["E"] - clock.now_ms()) < 2000
        sent = len(exchange.events_sent(client.api_key))
        exchange.manual_order(client.api_key, "ETHUSDT", "SELL", "0.01")
        await nothing_more(ws)   # nothing more for that key
        assert len(exchange.events_sent(client.api_key)) == sent
    late = await client.call("PUT", "/fapi/v1/listenKey", {"listenKey": key}, auth="key")
    assert (late.status, late.body) == (400, MISSING_KEY)
    fresh = await client.listen_key()
    assert fresh != key
    assert (await client.call("DELETE", "/fapi/v1/listenKey", auth="key")).body == {}
    assert (await client.call("PUT", "/fapi/v1/listenKey", auth="key")).body == MISSING_KEY


async def test_expiry_is_noticed_on_the_next_event_and_by_the_hook(
        exchange: FakeBinanceExchange, client: Client, clock: FakeClock) -> None:
    other = client_for(exchange, client.http, "bob")
    key, other_key = await client.listen_key(), await other.listen_key()
    async with websockets.connect(f"{exchange.ws_url}/stream?streams={key}/{other_key}") as ws:
        exchange.expire_listen_key(other.api_key)   # the hook: at once
        message = await receive(ws)
        assert message["stream"] == other_key and message["data"]["e"] == "listenKeyExpired"
        assert (await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}))["result"] == [key]
        clock.advance(3601)
        exchange.manual_order(client.api_key, "ETHUSDT", "BUY", "0.01")   # the event finds its key expired
        message = await receive(ws)
        assert message == {"stream": key, "data": {"e": "listenKeyExpired", "E": message["data"]["E"],
                                                   "listenKey": key}}
        await nothing_more(ws)
    assert exchange.events_sent(client.api_key) == []


async def test_combined_stream_follows_subscribe_unsubscribe_and_list(
        exchange: FakeBinanceExchange, client: Client) -> None:
    ka, kb, kc = keys_for(exchange, 3)
    async with websockets.connect(f"{exchange.ws_url}/stream?streams={ka}") as ws:
        assert await ask(ws, {"method": "SUBSCRIBE", "params": [kb, kc], "id": 1}) == {"result": None, "id": 1}
        assert await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2}) == {"result": [ka, kb, kc], "id": 2}
        exchange.manual_order("acct1", "ETHUSDT", "BUY", "0.01")
        messages = await receive_n(ws, 3)
        assert {m["stream"] for m in messages} == {kb}
        assert [m["data"]["e"] for m in messages] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
        assert await ask(ws, {"method": "UNSUBSCRIBE", "params": [kc], "id": 3}) == {"result": None, "id": 3}
        exchange.manual_order("acct2", "ETHUSDT", "BUY", "0.01")   # no longer listened to here
        exchange.manual_order("acct0", "ETHUSDT", "BUY", "0.01")
        assert {m["stream"] for m in await receive_n(ws, 3)} == {ka}
        unknown = await ask(ws, {"method": "SUBSCRIBE", "params": ["y" * 64], "id": 4})
        assert unknown["id"] == 4 and unknown["error"]["code"] == 2 and "result" not in unknown
        assert (await ask(ws, {"method": "NOPE", "id": 5}))["error"]["code"] == 2
    async with websockets.connect(f"{exchange.ws_url}/ws/{kc}") as raw:   # raw: the event itself
        exchange.manual_order("acct2", "ETHUSDT", "SELL", "0.01")
        event, *_ = await receive_n(raw, 3)
        assert event["e"] == "ORDER_TRADE_UPDATE" and "stream" not in event
        assert await ask(raw, {"method": "SUBSCRIBE", "params": [ka], "id": 7}) == {"result": None, "id": 7}
        exchange.manual_order("acct0", "ETHUSDT", "SELL", "0.01")
        assert (await receive(raw))["o"]["S"] == "SELL"


async def test_an_unknown_listen_key_in_the_url_is_refused(exchange: FakeBinanceExchange) -> None:
    [known] = keys_for(exchange, 1)
    for url in (f"{exchange.ws_url}/ws/{'x' * 64}", f"{exchange.ws_url}/stream?streams={known}/{'x' * 64}"):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 400
        assert json.loads(refused.value.response.body or b"{}") == MISSING_KEY
    assert exchange.ws_connections == 0


async def test_a_connection_listens_to_at_most_200_streams(exchange: FakeBinanceExchange) -> None:
    keys = keys_for(exchange, 201)
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{exchange.ws_url}/stream?streams={'/'.join(keys)}"):
            pass
    assert refused.value.response.status_code == 400
    async with websockets.connect(f"{exchange.ws_url}/stream?streams={'/'.join(keys[:200])}") as full:
        assert len((await ask(full, {"method": "LIST_SUBSCRIPTIONS", "id": 1}))["result"]) == 200
        over = await ask(full, {"method": "SUBSCRIBE", "params": [keys[200]], "id": 2})
        assert over["error"]["code"] == 2 and over["id"] == 2
        exchange.manual_order("acct199", "ETHUSDT", "BUY", "0.01")
        assert (await receive(full))["stream"] == keys[199]
    async with websockets.connect(f"{exchange.ws_url}/stream?streams={'/'.join(keys[:150])}") as part:
        over = await ask(part, {"method": "SUBSCRIBE", "params": keys[150:], "id": 3})   # 150 + 51
        assert "error" in over
        assert len((await ask(part, {"method": "LIST_SUBSCRIPTIONS", "id": 4}))["result"]) == 150   # none added
        assert await ask(part, {"method": "SUBSCRIBE", "params": keys[150:200], "id": 5}) == {"result": None, "id": 5}
        assert len((await ask(part, {"method": "LIST_SUBSCRIPTIONS", "id": 6}))["result"]) == 200


async def test_more_than_10_incoming_messages_a_second_closes_the_connection(
        exchange: FakeBinanceExchange, clock: FakeClock) -> None:
    [key] = keys_for(exchange, 1)
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as paced:
        for round_ in range(3):   # 10 a second, three seconds of the fake clock: all answered
            for index in range(10):
                await paced.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": index}))
            assert [m["id"] for m in await receive_n(paced, 10)] == list(range(10)), round_
            clock.advance(1.0)
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as burst:
        for index in range(11):
            await burst.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": index}))
        assert len(await receive_n(burst, 10)) == 10
        with pytest.raises(ConnectionClosed):
            await receive(burst)
        assert burst.close_code == 1008


async def test_300_connection_attempts_per_5_minutes_then_429(
        exchange: FakeBinanceExchange, clock: FakeClock) -> None:
    [key] = keys_for(exchange, 1)
    for _ in range(300):
        async with websockets.connect(f"{exchange.ws_url}/ws/{key}"):
            pass
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{exchange.ws_url}/ws/{key}"):
            pass
    assert refused.value.response.status_code == 429
    assert exchange.ws_connection_attempts == 301 and exchange.streams.connect_limit.refused == 1
    clock.advance(300)
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as ws:
        assert exchange.ws_connections == 1
        assert await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [key], "id": 1}
    assert exchange.rest_requests == 0   # connections are not REST weight


async def test_a_connection_is_closed_after_24_hours_of_the_fake_clock(
        exchange: FakeBinanceExchange, client: Client, clock: FakeClock) -> None:
    key = await client.listen_key()
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as ws:
        for _ in range(24):   # kept alive every hour, as a client does
            clock.advance(3500)
            assert (await client.call("PUT", "/fapi/v1/listenKey", auth="key")).status == 200
            exchange.sweep()
        assert exchange.ws_connections == 1
        clock.advance(86_400 - 24 * 3500)
        exchange.sweep()
        with pytest.raises(ConnectionClosed):
            await receive(ws)
        assert ws.close_code == 1000 and "24 h" in (ws.close_reason or "")
    assert exchange.ws_connections == 0


async def test_a_market_order_pushes_events_equal_to_the_rest_answers(
        exchange: FakeBinanceExchange, client: Client, clock: FakeClock) -> None:
    exchange.set_mark_price("BTCUSDT", "60000.0")
    clock.advance(3600)   # event times follow the fake clock, not the wall clock
    key = await client.listen_key()
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as ws:
        assert (await client.call("POST", "/fapi/v1/marginType", {"symbol": "BTCUSDT",
                                                                  "marginType": "ISOLATED"})).status == 200
        assert (await client.call("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 10})).status == 200
        config = await receive(ws)
        assert config["e"] == "ACCOUNT_CONFIG_UPDATE" and config["ac"] == {"s": "BTCUSDT", "l": 10}
        placed = await client.call("POST", "/fapi/v1/order", {
            "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010",
            "newClientOrderId": "bot1-t1-entry", "newOrderRespType": "RESULT"})
        order = placed.body
        new, trade, account = await receive_n(ws, 3)

        assert new["e"] == "ORDER_TRADE_UPDATE" and abs(new["E"] - clock.now_ms()) < 2000
        assert {k: new["o"][k] for k in ("s", "c", "S", "o", "ot", "x", "X", "i", "q", "z", "l")} == {
            "s": "BTCUSDT", "c": "bot1-t1-entry", "S": "BUY", "o": "MARKET", "ot": "MARKET", "x": "NEW",
            "X": "NEW", "i": order["orderId"], "q": order["origQty"], "z": "0", "l": "0"}
        [row] = (await client.call("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT",
                                                                  "orderId": order["orderId"]})).body
        o = trade["o"]
        assert (o["x"], o["X"], o["i"], o["c"]) == ("TRADE", "FILLED", order["orderId"], "bot1-t1-entry")
        assert (o["l"], o["z"], o["ap"], o["L"]) == (order["executedQty"], order["executedQty"],
                                                     order["avgPrice"], row["price"])
        assert (o["t"], o["n"], o["rp"], o["T"], o["N"]) == (row["id"], row["commission"], row["realizedPnl"],
                                                             row["time"], "USDT")
        assert Decimal(o["ap"]) == Decimal("60000")

        [risk] = (await client.call("GET", "/fapi/v3/positionRisk", {"symbol": "BTCUSDT"})).body
        [balance] = (await client.call("GET", "/fapi/v3/balance")).body
        assert account["e"] == "ACCOUNT_UPDATE" and account["a"]["m"] == "ORDER"
        assert account["a"]["B"] == [{"a": "USDT", "wb": balance["balance"], "cw": balance["crossWalletBalance"],
                                      "bc": "0"}]
        [position] = account["a"]["P"]
        assert position == {"s": "BTCUSDT", "pa": risk["positionAmt"], "ep": risk["entryPrice"],
                            "bep": risk["breakEvenPrice"], "cr": "0", "up": risk["unRealizedProfit"],
                            "mt": "isolated", "iw": risk["isolatedWallet"], "ps": "BOTH"}
        assert Decimal(position["pa"]) == Decimal("0.01") and Decimal(position["iw"]) == Decimal("60")

        exchange.set_mark_price("BTCUSDT", "59000.0")
        closed = await client.call("POST", "/fapi/v1/order", {
            "symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.010", "reduceOnly": "true",
            "newClientOrderId": "bot1-t1-close", "newOrderRespType": "RESULT"})
        _, close_trade, close_account = await receive_n(ws, 3)
        [close_row] = (await client.call("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT",
                                                                        "orderId": closed.body["orderId"]})).body
        assert close_trade["o"]["rp"] == close_row["realizedPnl"] and Decimal(close_row["realizedPnl"]) == -10
        assert close_trade["o"]["S"] == "SELL" and close_trade["o"]["R"] is True
        [flat] = close_account["a"]["P"]
        assert (flat["pa"], flat["cr"], flat["up"]) == ("0", "-10", "0")
        [after] = (await client.call("GET", "/fapi/v3/balance")).body
        assert close_account["a"]["B"][0]["wb"] == after["balance"]
    assert [e["e"] for e in exchange.events_sent(client.api_key)] == [
        "ACCOUNT_CONFIG_UPDATE"] + ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"] * 2


async def test_a_stop_loss_the_exchange_triggers_pushes_the_algo_sequence_and_the_fill(
        exchange: FakeBinanceExchange, client: Client) -> None:
    key = await client.listen_key()
    exchange.set_mark_price("BTCUSDT", "60000.0")
    async with websockets.connect(f"{exchange.ws_url}/stream?streams={key}") as ws:
        await client.call("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                     "quantity": "0.010", "newClientOrderId": "bot1-t1-entry"})
        await receive_n(ws, 3)
        algo_ids = {}
        for order_type, trigger, client_id in (("STOP_MARKET", "59000", "bot1-t1-sl"),
                                               ("TAKE_PROFIT_MARKET", "62000", "bot1-t1-tp")):
            placed = await client.call("POST", "/fapi/v1/algoOrder", {
                "algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "SELL", "type": order_type,
                "triggerPrice": trigger, "closePosition": "true", "workingType": "MARK_PRICE",
                "clientAlgoId": client_id})
            algo_ids[client_id] = placed.body["algoId"]
            new = (await receive(ws))["data"]
            assert new["e"] == "ALGO_UPDATE" and {k: new["o"][k] for k in (
                "caid", "aid", "at", "o", "s", "S", "X", "tp", "cp", "wt", "ai")} == {
                "caid": client_id, "aid": placed.body["algoId"], "at": "CONDITIONAL", "o": order_type,
                "s": "BTCUSDT", "S": "SELL", "X": "NEW", "tp": trigger, "cp": True, "wt": "MARK_PRICE", "ai": ""}

        exchange.set_mark_price("BTCUSDT", "58900.0")   # crosses the stop
        events = [m["data"] for m in await receive_n(ws, 7)]
        assert [(e["e"], e.get("o", {}).get("X"), e.get("o", {}).get("caid", e.get("o", {}).get("c")))
                for e in events] == [
            ("ALGO_UPDATE", "TRIGGERING", "bot1-t1-sl"),
            ("ALGO_UPDATE", "TRIGGERED", "bot1-t1-sl"),
            ("ORDER_TRADE_UPDATE", "NEW", "bot1-t1-sl"),
            ("ORDER_TRADE_UPDATE", "FILLED", "bot1-t1-sl"),
            ("ACCOUNT_UPDATE", None, None),
            ("ALGO_UPDATE", "FINISHED", "bot1-t1-sl"),
            ("ALGO_UPDATE", "EXPIRED", "bot1-t1-tp"),   # its position is gone: the close-all target expires
        ]
        _, triggered, order_new, fill, account, finished, _ = events
        order_id = fill["o"]["i"]
        assert triggered["o"]["ai"] == finished["o"]["ai"] == str(order_id) == str(order_new["o"]["i"])
        assert (fill["o"]["o"], fill["o"]["ot"], fill["o"]["sp"], fill["o"]["cp"], fill["o"]["R"]) == (
            "MARKET", "STOP_MARKET", "59000", True, True)
        assert (finished["o"]["ap"], finished["o"]["aq"]) == ("58900", "0.01")
        assert account["a"]["P"][0]["pa"] == "0"
        await nothing_more(ws)

    stop = (await client.call("GET", "/fapi/v1/algoOrder", {"algoId": algo_ids["bot1-t1-sl"]})).body
    target = (await client.call("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "bot1-t1-tp"})).body
    assert (stop["algoStatus"], stop["actualOrderId"], target["algoStatus"]) == ("FINISHED", str(order_id), "EXPIRED")
    assert (await client.call("GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})).body == []
    assert (await client.call("GET", "/fapi/v3/positionRisk")).body == []
    trades = (await client.call("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "orderId": order_id})).body
    assert [(t["id"], t["price"], t["realizedPnl"]) for t in trades] == [
        (fill["o"]["t"], "58900", fill["o"]["rp"])]
    order = (await client.call("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": order_id})).body
    assert (order["type"], order["origType"], order["status"]) == ("MARKET", "STOP_MARKET", "FILLED")


async def test_the_moving_feed_fires_a_seeded_take_profit_on_the_sweep(
        exchange: FakeBinanceExchange, client: Client, clock: FakeClock) -> None:
    now = exchange.mark_price("ETHUSDT")
    later = exchange.feed.source.bars("ETHUSDT", "1m", 1, (clock.now_ms() + 7_200_000) // 1000 * 1000)[-1].close
    assert abs(later - now) / now > Decimal("0.002")   # the path moves enough in two hours at this START
    rising = later > now
    halfway = ((now + later) / 2).quantize(Decimal("0.01"))
    far = (now / 2 if rising else now * 2).quantize(Decimal("0.01"))
    seeded = exchange.seed_position(client.api_key, "ETHUSDT", "LONG", "0.5", now, 5, "ISOLATED",
                                    stop_loss=halfway if not rising else far,
                                    take_profit=halfway if rising else far,
                                    stop_loss_client_id="seed-sl", take_profit_client_id="seed-tp")
    assert [s["algoStatus"] for s in seeded] == ["NEW", "NEW"] and exchange.rest_requests == 0
    key = await client.listen_key()
    [risk] = (await client.call("GET", "/fapi/v3/positionRisk")).body
    assert (risk["positionAmt"], risk["isolatedWallet"]) == ("0.5", str((now * Decimal("0.5") / 5).normalize()))
    assert exchange.events_sent(client.api_key) == []   # seeding pushes nothing
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as ws:
        for step in (3000, 3000, 1200):   # kept alive as a client does
            assert (await client.call("PUT", "/fapi/v1/listenKey", auth="key")).status == 200
            clock.advance(step)
        exchange.sweep()
        events = await receive_n(ws, 7)
    fired, expired = ("seed-tp", "seed-sl") if rising else ("seed-sl", "seed-tp")
    assert [(e["e"], e["o"]["X"], e["o"]["caid"]) for e in events if e["e"] == "ALGO_UPDATE"] == [
        ("ALGO_UPDATE", "TRIGGERING", fired), ("ALGO_UPDATE", "TRIGGERED", fired),
        ("ALGO_UPDATE", "FINISHED", fired), ("ALGO_UPDATE", "EXPIRED", expired)]
    assert exchange.position(client.api_key, "ETHUSDT").amount == 0


async def test_dropped_connections_end_without_a_close_frame_and_can_reconnect(
        exchange: FakeBinanceExchange) -> None:
    ka, kb = keys_for(exchange, 2)
    async with websockets.connect(f"{exchange.ws_url}/ws/{ka}") as raw, \
            websockets.connect(f"{exchange.ws_url}/stream?streams={ka}/{kb}") as combined:
        assert exchange.ws_connections == 2
        assert exchange.drop_stream_connections() == 2
        for ws in (raw, combined):
            with pytest.raises(ConnectionClosed):
                await receive(ws)
            assert ws.close_code == 1006   # abnormal: no close frame
    for _ in range(50):
        if exchange.ws_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert exchange.ws_connections == 0
    async with websockets.connect(f"{exchange.ws_url}/ws/{kb}") as again:
        exchange.manual_order("acct1", "ETHUSDT", "BUY", "0.01")
        assert (await receive(again))["e"] == "ORDER_TRADE_UPDATE"


async def test_gaps_drop_events_the_stream_never_delivers(exchange: FakeBinanceExchange) -> None:
    [key] = keys_for(exchange, 1)
    async with websockets.connect(f"{exchange.ws_url}/ws/{key}") as ws:
        exchange.drop_next_events("acct0", 2)
        exchange.manual_order("acct0", "ETHUSDT", "BUY", "0.01")
        assert (await receive(ws))["e"] == "ACCOUNT_UPDATE"   # NEW and TRADE were lost
        await nothing_more(ws)
        exchange.pause_events("acct0")
        exchange.manual_order("acct0", "ETHUSDT", "BUY", "0.01")
        await nothing_more(ws)
        exchange.resume_events("acct0")
        exchange.manual_order("acct0", "ETHUSDT", "SELL", "0.02")
        assert [e["e"] for e in await receive_n(ws, 3)] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE",
                                                             "ACCOUNT_UPDATE"]
    assert [e["e"] for e in exchange.events_sent("acct0")] == ["ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE",
                                                               "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
    assert len(exchange.streams.events_dropped("acct0")) == 5
