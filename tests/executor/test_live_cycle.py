"""RunCycle on a testnet connection: the real cycle, the live broker and python-binance against the local
fake Binance Futures server (tests/fakes/binance_futures.py), through the executor's gRPC server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from tradebot.v1 import common_pb2

from services.executor.admin import store_connection_async
from tests.executor.builders import request
from tests.fakes.binance_futures import FakeBinanceFutures

LIVE_SECRET = f"live-secret-{uuid.uuid4().hex}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(api_key="live-key-0001", api_secret=LIVE_SECRET) as server:
        yield server


async def _testnet_user(db, fernet_key: str, secret: str = LIVE_SECRET) -> str:
    user_id = str(ObjectId())
    await store_connection_async(db, user_id, "testnet", "live-key-0001", secret, Fernet(fernet_key.encode()))
    return user_id


async def test_buy_on_testnet_opens_a_signed_protected_position(live_stub, fake, db, fernet_key, caplog):
    user_id = await _testnet_user(db, fernet_key)
    reply = await live_stub.run_cycle(request(user_id=user_id, tick_id="live-1"))
    assert reply.order.placed, reply.decision
    assert reply.order.quantity == "0.2" and reply.order.stop_loss and reply.order.take_profit
    assert fake.position("BTCUSDT").amount == Decimal("0.2")
    assert fake.default_account.leverage["BTCUSDT"] == 10
    working = {algo["orderType"]: algo for algo in fake.default_account.algo_orders if algo["algoStatus"] == "NEW"}
    assert Decimal(working["STOP_MARKET"]["triggerPrice"]) == Decimal(reply.order.stop_loss)   # on the exchange
    assert Decimal(working["TAKE_PROFIT_MARKET"]["triggerPrice"]) == Decimal(reply.order.take_profit)
    assert reply.has_position and reply.position.side == common_pb2.SIDE_LONG

    again = await live_stub.run_cycle(request(user_id=user_id, tick_id="live-1"))   # duplicated tick
    assert not again.order.placed and again.has_position
    assert len(fake.orders_sent("/fapi/v1/order")) == 1
    assert all(LIVE_SECRET not in record.getMessage() for record in caplog.records)


async def test_stop_loss_fired_on_the_exchange_is_booked(live_stub, fake, db, fernet_key):
    user_id = await _testnet_user(db, fernet_key)
    opened = await live_stub.run_cycle(request(user_id=user_id, tick_id="live-1"))
    assert opened.order.placed, opened.decision
    fake.set_mark_price("BTCUSDT", Decimal(opened.order.stop_loss) - 10)
    later = await live_stub.run_cycle(request(
        user_id=user_id, tick_id="live-2", price="48900", action=common_pb2.ACTION_HOLD,
        stored_position=opened.position,
    ))
    assert not later.has_position
    [trade] = later.closed_trades
    assert Decimal(trade.realized_pnl) < 0 and Decimal(trade.fees) > 0


async def test_a_wrong_secret_fails_visibly_and_opens_nothing(live_stub, fake, db, fernet_key):
    user_id = await _testnet_user(db, fernet_key, secret="not-the-right-secret-123")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await live_stub.run_cycle(request(user_id=user_id, tick_id="live-1"))
    assert raised.value.code() != grpc.StatusCode.UNKNOWN
    assert "not-the-right-secret-123" not in (raised.value.details() or "")
    assert fake.position("BTCUSDT").amount == 0
