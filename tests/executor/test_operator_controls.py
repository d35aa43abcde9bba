"""The cycle under an operator's controls, through the executor's gRPC server on a real MongoDB wire server:
a halt or an open circuit breaker stops new entries only; open positions are still audited and closed by their
stop; a halt with flatten closes them reduce-only and opens nothing after."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo.errors import ConnectionFailure
from tradebot.v1 import common_pb2

from services.common import metrics
from services.common.trading_controls import (
    BREAKER_ID,
    COLLECTION,
    breaker_document,
    halt_document,
)
from services.executor.admin import store_connection_async
from services.executor.trading_controls_reader import TradingControlsReader
from tests.executor.builders import MINUTE_MS, candle, request
from tests.fakes.binance_futures import FakeBinanceFutures


async def _halt(db, *, user_id: str | None = None, reason: str = "exchange maintenance", flatten: bool = False) -> None:
    document = halt_document(user_id=user_id, reason=reason, by="tester", now=datetime.now(UTC), flatten=flatten)
    await db[COLLECTION].replace_one({"_id": document["_id"]}, document, upsert=True)


async def _breaker(db, *, open_for_seconds: float) -> None:
    now = datetime.now(UTC)
    document = breaker_document(cause="exchange_errors", reason="the exchange failed for 5 accounts",
                                evidence={"failingAccounts": 5}, by="tester", now=now - timedelta(seconds=1),
                                cooldown_seconds=open_for_seconds + 1)
    await db[COLLECTION].replace_one({"_id": BREAKER_ID}, document, upsert=True)


def _later_candle(low: str, high: str) -> list:
    return [candle(int(time.time() * 1000) + MINUTE_MS, low, high)]


async def test_a_fleet_halt_stops_the_entry_and_says_why(executor, paper_connection, db):
    user_id, _ = paper_connection
    await _halt(db)

    reply = await executor.run_cycle(request(user_id=user_id, confidence=90))

    assert not reply.order.placed and not reply.has_position
    assert reply.entries_stopped == "halted: exchange maintenance"
    assert reply.decision == "halted: exchange maintenance: the BUY confidence 90 entry was not made"
    [blocked] = reply.events
    assert (blocked.log_type, blocked.severity, blocked.action) == ("SYSTEM", "WARNING", "ENTRY_HALTED")
    assert await db.paperpositions.count_documents({}) == 0
    assert metrics.TRADING_HALTED.labels(scope="fleet")._value.get() == 1


async def test_the_halt_applies_from_the_very_next_cycle_and_resume_lifts_it(executor, paper_connection, db):
    user_id, _ = paper_connection
    await _halt(db)
    halted = await executor.run_cycle(request(user_id=user_id, tick_id="t1"))
    assert not halted.order.placed and halted.entries_stopped

    await db[COLLECTION].delete_many({})   # tradebot resume
    resumed = await executor.run_cycle(request(user_id=user_id, tick_id="t2"))

    assert resumed.order.placed and resumed.entries_stopped == ""
    assert metrics.TRADING_HALTED.labels(scope="fleet")._value.get() == 0


async def test_a_user_halt_stops_only_that_users_entries(executor, paper_connection, db, fernet_key):
    halted_user, _ = paper_connection
    other_user = str(ObjectId())
    await store_connection_async(db, other_user, "paper", "paper-key-654321", "paper-secret-654321",
                                 Fernet(fernet_key.encode()))
    await _halt(db, user_id=halted_user, reason="margin call review")

    halted = await executor.run_cycle(request(user_id=halted_user, bot_instance_id=str(ObjectId())))
    trading = await executor.run_cycle(request(user_id=other_user, bot_instance_id=str(ObjectId())))

    assert not halted.order.placed and halted.entries_stopped == "halted: margin call review"
    assert trading.order.placed and trading.entries_stopped == ""
    assert metrics.TRADING_HALTED.labels(scope="user")._value.get() == 1


async def test_a_hold_under_a_halt_logs_nothing_extra(executor, paper_connection):
    user_id, _ = paper_connection
    await _halt(executor.db)
    reply = await executor.run_cycle(request(user_id=user_id, action=common_pb2.ACTION_HOLD))
    assert reply.decision == "halted: exchange maintenance: no new entry" and not reply.events


async def test_an_open_position_is_still_audited_under_a_halt(executor, paper_connection, db):
    user_id, connection_id = paper_connection
    opened = await executor.run_cycle(request(user_id=user_id, tick_id="t1"))
    await _halt(db)
    # The stop vanished from the exchange (cancelled by hand): the audit puts it back, halt or not.
    await db.paperpositions.update_one({"connectionId": connection_id}, {"$unset": {"stopLossId": ""}})

    audited = await executor.run_cycle(request(user_id=user_id, tick_id="t2", stored_position=opened.position))

    assert audited.has_position and not audited.order.placed
    assert audited.entries_stopped == "halted: exchange maintenance"
    assert [event.action for event in audited.events] == ["STOP_LOSS_RESTORED"]
    stored = await db.paperpositions.find_one({"connectionId": connection_id})
    assert stored["stopLossId"]


async def test_a_stop_loss_still_closes_the_position_under_a_halt_and_nothing_reopens(executor, paper_connection, db):
    user_id, _ = paper_connection
    opened = await executor.run_cycle(request(user_id=user_id, tick_id="t1"))
    await _halt(db)

    later = await executor.run_cycle(request(
        user_id=user_id, tick_id="t2", price="49200", candles=_later_candle("48800", "50100"),
        stored_position=opened.position, confidence=95,   # a strong BUY: the halt keeps it from re-entering
    ))

    assert not later.has_position and not later.order.placed
    [trade] = later.closed_trades
    assert trade.reason == "STOP_LOSS" and trade.exit_price == "49000"
    assert later.entries_stopped == "halted: exchange maintenance"
    assert await db.paperpositions.count_documents({}) == 0


async def test_flatten_closes_the_position_books_it_and_does_not_reopen(executor, paper_connection, db):
    user_id, _ = paper_connection
    opened = await executor.run_cycle(request(user_id=user_id, tick_id="t1"))
    await _halt(db, reason="incident", flatten=True)

    flattened = await executor.run_cycle(request(
        user_id=user_id, tick_id="t2", price="50500", stored_position=opened.position, confidence=95,
    ))

    assert not flattened.has_position and not flattened.order.placed
    [trade] = flattened.closed_trades
    assert trade.reason == "FLATTENED" and trade.exit_price == "50500"
    assert Decimal(flattened.daily_realized_pnl) == Decimal(trade.realized_pnl)
    assert [event.action for event in flattened.events] == ["POSITION_FLATTENED", "ENTRY_HALTED"]
    assert "closed reduce-only at 50500 (flatten)" in flattened.decision
    assert flattened.decision.startswith("halted: incident: the BUY confidence 95 entry was not made")
    assert await db.paperpositions.count_documents({}) == 0

    again = await executor.run_cycle(request(user_id=user_id, tick_id="t3", confidence=95))
    assert not again.order.placed and not again.has_position and not again.closed_trades


async def test_an_open_breaker_stops_entries_and_closes_on_its_own(executor, paper_connection, db):
    user_id, _ = paper_connection
    await _breaker(db, open_for_seconds=60)
    paused = await executor.run_cycle(request(user_id=user_id, tick_id="t1"))
    assert not paused.order.placed
    assert paused.entries_stopped == "circuit breaker open: the exchange failed for 5 accounts"
    assert metrics.CIRCUIT_BREAKER_OPEN._value.get() == 1

    await db[COLLECTION].update_one({"_id": BREAKER_ID}, {"$set": {"until": datetime.now(UTC) - timedelta(seconds=1)}})
    cooled = await executor.run_cycle(request(user_id=user_id, tick_id="t2"))

    assert cooled.order.placed and cooled.entries_stopped == ""
    assert metrics.CIRCUIT_BREAKER_OPEN._value.get() == 0


async def test_an_unreadable_halt_document_still_stops_entries(executor, paper_connection, db):
    user_id, _ = paper_connection
    await db[COLLECTION].insert_one({"_id": "halt:fleet", "reason": 42})
    reply = await executor.run_cycle(request(user_id=user_id))
    assert not reply.order.placed and reply.entries_stopped.startswith("halted: (the stored control document")


# --- live: the flatten order is reduce-only on the exchange ------------------------------------------------

LIVE_SECRET = f"live-secret-{uuid.uuid4().hex}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(api_key="live-key-0001", api_secret=LIVE_SECRET) as server:
        yield server


async def test_flatten_on_binance_sends_a_reduce_only_close(live_stub, fake, db, fernet_key):
    user_id = str(ObjectId())
    await store_connection_async(db, user_id, "testnet", "live-key-0001", LIVE_SECRET, Fernet(fernet_key.encode()))
    opened = await live_stub.run_cycle(request(user_id=user_id, tick_id="live-1"))
    assert opened.order.placed, opened.decision
    await _halt(db, flatten=True)

    flattened = await live_stub.run_cycle(request(user_id=user_id, tick_id="live-2", stored_position=opened.position))

    assert not flattened.has_position and not flattened.order.placed, flattened.decision
    close = fake.orders_sent("/fapi/v1/order")[-1]
    assert close.params["reduceOnly"] == "true" and close.params["side"] == "SELL"
    assert fake.position("BTCUSDT").amount == 0
    assert not [algo for algo in fake.default_account.algo_orders if algo["algoStatus"] == "NEW"]


# --- reading the controls ----------------------------------------------------------------------------------


class _Controls:
    """A ``tradingcontrols`` collection that counts its reads (or cannot be read at all)."""

    def __init__(self, documents: list[dict], broken: bool = False) -> None:
        self.documents, self.broken, self.reads = documents, broken, 0

    def find(self, query: dict):
        if self.broken:
            raise ConnectionFailure("connection refused")
        self.reads += 1
        wanted = set(query["_id"]["$in"])
        found = [document for document in self.documents if document["_id"] in wanted]

        class Cursor:
            async def to_list(self) -> list[dict]:
                await asyncio.sleep(0.01)   # a round trip: the cycles asking meanwhile wait for the next read
                return found

        return Cursor()


async def test_concurrent_cycles_share_a_few_reads_and_each_gets_its_own_users_controls():
    halted = halt_document(user_id="u7", reason="review", by="tester", now=datetime.now(UTC), flatten=False)
    collection = _Controls([halted])
    reader = TradingControlsReader({COLLECTION: collection})  # type: ignore[arg-type]

    answers = await asyncio.gather(*(reader.for_user(f"u{index % 10}") for index in range(500)))

    assert collection.reads <= 3
    assert {answer.entries_stopped for index, answer in enumerate(answers) if index % 10 == 7} == {"halted: review"}
    assert {answer.entries_stopped for index, answer in enumerate(answers) if index % 10 != 7} == {""}


async def test_controls_that_cannot_be_read_stop_entries_and_nothing_else():
    reader = TradingControlsReader({COLLECTION: _Controls([], broken=True)})  # type: ignore[arg-type]
    controls = await reader.for_user("u1")
    assert controls.entries_stopped.startswith("halted: trading controls could not be read (ConnectionFailure)")
    assert not controls.flatten and controls.breaker is None
