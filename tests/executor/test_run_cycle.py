"""RunCycle through a real grpc.aio server with the paper broker on a real MongoDB wire server."""

from __future__ import annotations

import time
from decimal import Decimal

import grpc
import pytest
from bson import ObjectId
from tradebot.v1 import common_pb2

from tests.executor.builders import MINUTE_MS, candle, config, request


async def test_buy_above_threshold_opens_a_protected_paper_position(executor, paper_connection, db):
    user_id, connection_id = paper_connection
    reply = await executor.run_cycle(request(user_id=user_id, confidence=80))

    # 10 % of 10000 = 1000 margin, x10 = 10000 notional, / 50000 = 0.2 BTC.
    assert reply.order.placed
    assert reply.order.quantity == "0.2"
    assert reply.order.fill_price == "50000"
    assert reply.order.fee == "5"                      # 10000 * 0.0005
    assert reply.order.stop_loss == "49000"            # 2 % below the fill
    assert reply.order.take_profit == "52000"          # 4 % above the fill
    assert reply.has_position and reply.position.side == common_pb2.SIDE_LONG
    assert reply.position.stop_loss == "49000"
    assert reply.available_balance == "8995"           # 10000 - 1000 margin - 5 fee
    assert reply.position.entry_client_order_id == reply.order.client_order_id
    assert not reply.events                            # the gateway logs the entry from `order`
    stored = await db.paperpositions.find_one({"connectionId": connection_id})
    assert stored["quantity"] == "0.2" and stored["stopLoss"] == "49000"


async def test_confidence_at_or_below_threshold_places_nothing(executor, paper_connection, db):
    user_id, _ = paper_connection
    reply = await executor.run_cycle(request(user_id=user_id, confidence=70))
    assert not reply.order.placed and not reply.has_position
    assert "not above the threshold 70" in reply.decision
    assert await db.paperpositions.count_documents({}) == 0


def _later_candle(low: str, high: str) -> list:
    # Starts after the entry's wall-clock time, as the next candles will.
    return [candle(int(time.time() * 1000) + MINUTE_MS, low, high)]


async def test_duplicated_tick_opens_one_position(executor, paper_connection, db):
    user_id, _ = paper_connection
    first = await executor.run_cycle(request(user_id=user_id, tick_id="dup"))
    again = await executor.run_cycle(request(user_id=user_id, tick_id="dup"))
    assert first.order.placed and not again.order.placed
    assert again.has_position and again.position.entry_client_order_id == first.order.client_order_id
    assert await db.paperpositions.count_documents({}) == 1
    assert await db.paperfills.count_documents({"kind": "ENTRY"}) == 1


async def test_concurrent_duplicated_tick_opens_one_position(executor, paper_connection, db):
    import asyncio
    user_id, _ = paper_connection
    replies = await asyncio.gather(*(executor.run_cycle(request(user_id=user_id, tick_id="race")) for _ in range(3)))
    assert all(reply.has_position for reply in replies)
    assert await db.paperpositions.count_documents({}) == 1
    account = await db.paperaccounts.find_one({})
    assert account["walletBalance"] == "9995"                      # one entry fee, not three


async def test_stop_loss_on_a_later_candle_books_the_closed_trade(executor, paper_connection):
    user_id, _ = paper_connection
    opened = await executor.run_cycle(request(user_id=user_id, tick_id="t1"))
    later = await executor.run_cycle(request(
        user_id=user_id, tick_id="t2", price="49200", action=common_pb2.ACTION_HOLD,
        candles=_later_candle("48800", "50100"), stored_position=opened.position,
    ))
    assert not later.has_position
    [trade] = later.closed_trades
    assert trade.reason == "STOP_LOSS" and trade.exit_price == "49000"
    assert trade.realized_pnl == "-209.9"                          # -200 - 5 - 4.9
    assert later.daily_realized_pnl == "-209.9"
    assert not later.events                            # the gateway logs the trade from `closed_trades`
    assert not later.order.placed                                  # HOLD: no new entry


async def test_daily_loss_trip_closes_and_pauses(executor, paper_connection, db, caplog):
    user_id, _ = paper_connection
    tight = config(max_daily_loss="100")
    opened = await executor.run_cycle(request(user_id=user_id, tick_id="t1", bot_config=tight))
    tripped = await executor.run_cycle(request(
        user_id=user_id, tick_id="t2", price="49100", bot_config=tight, stored_position=opened.position,
    ))
    assert tripped.safety.tripped and tripped.safety.rule == "DAILY_LOSS"
    assert tripped.safety.pause_bot and tripped.safety.position_closed
    assert tripped.safety.details["unrealizedPnl"] == "-180"       # (49100 - 50000) * 0.2
    assert not tripped.has_position and not tripped.order.placed
    [trade] = tripped.closed_trades
    assert trade.reason == "EMERGENCY_STOP"
    assert tripped.safety.details["maxDailyLoss"] == "100"
    assert "safety stop DAILY_LOSS" in tripped.decision
    assert any(r.levelname == "CRITICAL" and r.getMessage() == "safety stop" for r in caplog.records)
    assert await db.paperpositions.count_documents({}) == 0


async def test_consecutive_losses_trip_pauses_without_an_order(executor, paper_connection, db):
    user_id, _ = paper_connection
    reply = await executor.run_cycle(request(user_id=user_id, consecutive_losses=3))
    assert reply.safety.tripped and reply.safety.rule == "CONSECUTIVE_LOSSES" and reply.safety.pause_bot
    assert not reply.order.placed and await db.paperpositions.count_documents({}) == 0


async def test_missing_stop_loss_is_re_placed(executor, paper_connection, db):
    user_id, _ = paper_connection
    opened = await executor.run_cycle(request(user_id=user_id, tick_id="t1"))
    await db.paperpositions.update_one({}, {"$unset": {"stopLoss": "", "stopLossId": ""}})   # cancelled by hand
    audited = await executor.run_cycle(request(user_id=user_id, tick_id="t2", stored_position=opened.position))
    assert audited.has_position and audited.position.stop_loss == "49000"
    assert any(e.action == "STOP_LOSS_RESTORED" and e.severity == "CRITICAL" for e in audited.events)
    assert (await db.paperpositions.find_one({}))["stopLoss"] == "49000"


async def test_missing_connection_is_not_found(executor):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.run_cycle(request(user_id=str(ObjectId())))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "exchange connection not found"


async def test_connection_of_another_user_is_denied(executor, paper_connection):
    _, connection_id = paper_connection
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.run_cycle(request(user_id=str(ObjectId()), connection_id=connection_id))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_two_active_connections_without_a_choice_fail(executor, paper_connection, db, fernet_key):
    from cryptography.fernet import Fernet

    from services.executor.admin import store_connection_async
    user_id, connection_id = paper_connection
    await store_connection_async(db, user_id, "paper", "k-1234567", "s-1234567", Fernet(fernet_key.encode()))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.run_cycle(request(user_id=user_id))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    chosen = await executor.run_cycle(request(user_id=user_id, connection_id=connection_id))
    assert chosen.order.placed


async def test_bad_token_fails_that_bot_with_failed_precondition(executor, db):
    from cryptography.fernet import Fernet
    user_id = ObjectId()
    token = Fernet(Fernet.generate_key()).encrypt(b"some-other-secret").decode()   # not our key
    await db.exchangeconnections.insert_one({"userId": user_id, "exchange": "binance", "mode": "paper",
                                             "apiKey": token, "apiSecret": token, "isActive": True})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.run_cycle(request(user_id=str(user_id)))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "credentials could not be decrypted"
    assert await db.paperpositions.count_documents({}) == 0


async def test_bad_input_is_refused_before_any_order_with_the_field_named(executor, paper_connection, db):
    user_id, _ = paper_connection
    # The caller's part: a confidence outside 0..100.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.run_cycle(request(user_id=user_id, confidence=150))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "signal.confidence" in raised.value.details()
    # What the executor reads itself: a broken stored bot, a market price that makes no sense.
    for bad, field in ((request(user_id=user_id, bot_config=config(leverage=200)), "config.leverage"),
                       (request(user_id=user_id, symbol="BTC.USDT"), "symbol"),
                       (request(user_id=user_id, price="-1"), "market price")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await executor.run_cycle(bad)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION and field in raised.value.details()
    assert await db.paperaccounts.count_documents({}) == 0


async def test_live_connection_without_the_live_broker_is_refused(executor, db, fernet_key, monkeypatch):
    import sys

    from cryptography.fernet import Fernet

    from services.executor.admin import store_connection_async
    monkeypatch.setitem(sys.modules, "services.executor.binance.broker", None)   # the module cannot be imported
    user_id = str(ObjectId())
    await store_connection_async(db, user_id, "live", "k-1234567", "s-1234567", Fernet(fernet_key.encode()))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.run_cycle(request(user_id=user_id))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "live trading not available"


async def test_get_position_reports_the_open_position(executor, paper_connection):
    from tradebot.v1 import executor_pb2
    user_id, _ = paper_connection
    opened = request(user_id=user_id)
    await executor.run_cycle(opened)
    reply = await executor.stub.GetPosition(executor_pb2.GetPositionRequest(
        bot=executor_pb2.BotRef(bot_instance_id=opened.bot_instance_id)))
    assert reply.has_position and reply.position.quantity == "0.2" and reply.position.stop_loss == "49000"
    assert Decimal(reply.available_balance) == Decimal("8995")


async def test_unreachable_database_is_unavailable_not_internal(executor_settings):
    from dataclasses import replace

    from services.common.grpc_server import start_server
    from services.executor.server import ExecutorApp
    from tests.support.processes import free_port
    from tradebot.v1 import executor_pb2_grpc

    app = ExecutorApp(replace(executor_settings, mongodb_uri=f"mongodb://127.0.0.1:{free_port()}"),
                      mongo_timeout_ms=200)
    service = await start_server([app.binding()], port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await executor_pb2_grpc.ExecutorStub(channel).RunCycle(request(user_id=str(ObjectId())).request())
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await service.stop(0)
        await app.close()


async def test_the_stored_notional_cap_leverage_and_margin_type_are_what_the_entry_uses(executor, paper_connection, db):
    user_id, connection_id = paper_connection
    stored = config(leverage=4, max_position_notional="2500", margin_type="CROSSED")
    reply = await executor.run_cycle(request(user_id=user_id, bot_config=stored))
    # 10 % of 10,000 as margin at leverage 4 would be 4,000 notional: the stored cap of 2,500 wins.
    assert reply.order.placed and reply.order.quantity == "0.05"
    account = await db.paperaccounts.find_one({"_id": connection_id})
    assert account["symbols"]["BTCUSDT"] == {"leverage": 4, "marginType": "CROSSED"}


async def test_an_unreachable_market_service_fails_the_cycle_without_naming_its_address(executor_settings, db,
                                                                                       paper_connection):
    from dataclasses import replace

    from services.common.grpc_server import start_server
    from services.executor.server import ExecutorApp
    from tests.executor.conftest import CycleClient, FakeMarket
    from tests.support.processes import free_port
    from tradebot.v1 import executor_pb2_grpc

    port = free_port()
    app = ExecutorApp(replace(executor_settings, market_addr=f"127.0.0.1:{port}"))   # the real market client
    service = await start_server([app.binding()], port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            client = CycleClient(executor_pb2_grpc.ExecutorStub(channel), db, FakeMarket())
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.run_cycle(request(user_id=paper_connection[0]), timeout=20)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "market data GetPrice: UNAVAILABLE" in raised.value.details()
        assert str(port) not in raised.value.details() and "127.0.0.1" not in raised.value.details()
        assert await db.paperaccounts.count_documents({}) == 0   # nothing was sized, nothing opened
    finally:
        await service.stop(0)
        await app.close()
