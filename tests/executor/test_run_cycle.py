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
    assert any(e.action == "POSITION_OPENED" for e in reply.events)
    stored = await db.paperpositions.find_one({"connectionId": connection_id})
    assert stored["quantity"] == "0.2" and stored["stopLoss"] == "49000"


async def test_confidence_at_or_below_threshold_places_nothing(executor, paper_connection, db):
    user_id, _ = paper_connection
    reply = await executor.stub.RunCycle(request(user_id=user_id, confidence=70))
    assert not reply.order.placed and not reply.has_position
    assert "not above the threshold 70" in reply.decision
    assert await db.paperpositions.count_documents({}) == 0
