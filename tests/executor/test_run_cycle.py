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
    reply = await executor.stub.RunCycle(request(user_id=user_id, confidence=80))

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
    reply = await executor.stub.RunCycle(request(user_id=user_id, confidence=70))
    assert not reply.order.placed and not reply.has_position
    assert "not above the threshold 70" in reply.decision
    assert await db.paperpositions.count_documents({}) == 0


def _later_candle(low: str, high: str) -> list:
    # Starts after the entry's wall-clock time, as the next candles will.
    return [candle(int(time.time() * 1000) + MINUTE_MS, low, high)]


async def test_duplicated_tick_opens_one_position(executor, paper_connection, db):
    user_id, _ = paper_connection
    first = await executor.stub.RunCycle(request(user_id=user_id, tick_id="dup"))
    again = await executor.stub.RunCycle(request(user_id=user_id, tick_id="dup"))
    assert first.order.placed and not again.order.placed
    assert again.has_position and again.position.entry_client_order_id == first.order.client_order_id
    assert await db.paperpositions.count_documents({}) == 1
    assert await db.paperfills.count_documents({"kind": "ENTRY"}) == 1


async def test_concurrent_duplicated_tick_opens_one_position(executor, paper_connection, db):
    import asyncio
    user_id, _ = paper_connection
    replies = await asyncio.gather(*(executor.stub.RunCycle(request(user_id=user_id, tick_id="race")) for _ in range(3)))
    assert all(reply.has_position for reply in replies)
    assert await db.paperpositions.count_documents({}) == 1
    account = await db.paperaccounts.find_one({})
    assert account["walletBalance"] == "9995"                      # one entry fee, not three


async def test_stop_loss_on_a_later_candle_books_the_closed_trade(executor, paper_connection):
    user_id, _ = paper_connection
    opened = await executor.stub.RunCycle(request(user_id=user_id, tick_id="t1"))
    later = await executor.stub.RunCycle(request(
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
    opened = await executor.stub.RunCycle(request(user_id=user_id, tick_id="t1", bot_config=tight))
    tripped = await executor.stub.RunCycle(request(
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
    reply = await executor.stub.RunCycle(request(user_id=user_id, consecutive_losses=3))
    assert reply.safety.tripped and reply.safety.rule == "CONSECUTIVE_LOSSES" and reply.safety.pause_bot
    assert not reply.order.placed and await db.paperpositions.count_documents({}) == 0


async def test_missing_stop_loss_is_re_placed(executor, paper_connection, db):
    user_id, _ = paper_connection
    opened = await executor.stub.RunCycle(request(user_id=user_id, tick_id="t1"))
    await db.paperpositions.update_one({}, {"$unset": {"stopLoss": "", "stopLossId": ""}})   # cancelled by hand
    audited = await executor.stub.RunCycle(request(user_id=user_id, tick_id="t2", stored_position=opened.position))
    assert audited.has_position and audited.position.stop_loss == "49000"
    assert any(e.action == "STOP_LOSS_RESTORED" and e.severity == "CRITICAL" for e in audited.events)
    assert (await db.paperpositions.find_one({}))["stopLoss"] == "49000"


async def test_missing_connection_is_not_found(executor):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.stub.RunCycle(request(user_id=str(ObjectId())))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "exchange connection not found"


async def test_connection_of_another_user_is_denied(executor, paper_connection):
    _, connection_id = paper_connection
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.stub.RunCycle(request(user_id=str(ObjectId()), connection_id=connection_id))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_two_active_connections_without_a_choice_fail(executor, paper_connection, db, fernet_key):
    from cryptography.fernet import Fernet

    from services.executor.admin import store_connection_async
    user_id, connection_id = paper_connection
    await store_connection_async(db, user_id, "paper", "k-1234567", "s-1234567", Fernet(fernet_key.encode()))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.stub.RunCycle(request(user_id=user_id))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    chosen = await executor.stub.RunCycle(request(user_id=user_id, connection_id=connection_id))
    assert chosen.order.placed


async def test_bad_token_fails_that_bot_with_failed_precondition(executor, db):
    from cryptography.fernet import Fernet
    user_id = ObjectId()
    token = Fernet(Fernet.generate_key()).encrypt(b"some-other-secret").decode()   # not our key
    await db.exchangeconnections.insert_one({"userId": user_id, "exchange": "binance", "mode": "paper",
                                             "apiKey": token, "apiSecret": token, "isActive": True})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.stub.RunCycle(request(user_id=str(user_id)))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "credentials could not be decrypted"
    assert await db.paperpositions.count_documents({}) == 0


async def test_out_of_range_config_is_invalid_argument_before_any_order(executor, paper_connection, db):
    user_id, _ = paper_connection
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.stub.RunCycle(request(user_id=user_id, bot_config=config(leverage=200)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for bad in (request(user_id=user_id, confidence=150), request(user_id=user_id, price="-1"),
                request(user_id=user_id, symbol="BTC.USDT")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await executor.stub.RunCycle(bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await db.paperaccounts.count_documents({}) == 0


async def test_live_connection_without_the_live_broker_is_refused(executor, db, fernet_key, monkeypatch):
    import sys

    from cryptography.fernet import Fernet

    from services.executor.admin import store_connection_async
    monkeypatch.setitem(sys.modules, "services.executor.brokers.binance", None)   # the module cannot be imported
    user_id = str(ObjectId())
    await store_connection_async(db, user_id, "live", "k-1234567", "s-1234567", Fernet(fernet_key.encode()))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executor.stub.RunCycle(request(user_id=user_id))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "live trading not available"


async def test_get_position_reports_the_open_position(executor, paper_connection):
    from tradebot.v1 import executor_pb2
    user_id, _ = paper_connection
    await executor.stub.RunCycle(request(user_id=user_id))
    reply = await executor.stub.GetPosition(executor_pb2.GetPositionRequest(
        bot=executor_pb2.BotRef(user_id=user_id, symbol="BTCUSDT")))
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
                await executor_pb2_grpc.ExecutorStub(channel).RunCycle(request(user_id=str(ObjectId())))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await service.stop(0)
        await app.close()
