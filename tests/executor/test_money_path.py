"""The money path's invariants through the real executor, live broker and python-binance against the protocol
fake: a stop from the fill onwards whatever the caller's deadline, protection on every path, stops judged on
what they close, leftovers cleared before an entry, partial closes, leverage and unreadable PnL."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from tradebot.v1 import common_pb2, executor_pb2

from services.executor.admin import store_connection_async
from services.executor.binance.account import shared_state
from tests.executor.builders import config, request
from tests.executor.conftest import CycleClient
from tests.fakes.binance_futures import FakeBinanceFutures

API_KEY = "money-path-key-0001"
HOLD = common_pb2.ACTION_HOLD


@pytest.fixture
def api_secret() -> str:
    return f"money-path-secret-{uuid.uuid4().hex}"


@pytest.fixture(params=[True, False], ids=["stream", "rest"])
def user_streams(request: pytest.FixtureRequest) -> bool:
    """Every invariant holds both with the account kept from its user-data stream and over REST alone."""
    return bool(request.param)


@pytest.fixture
async def fake(api_secret: str) -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(api_key=API_KEY, api_secret=api_secret) as server:
        yield server


@pytest.fixture
async def live_user(db, fernet_key, api_secret) -> str:
    user_id = str(ObjectId())
    await store_connection_async(db, user_id, "testnet", API_KEY, api_secret, Fernet(fernet_key.encode()))
    return user_id


def open_stops(fake: FakeBinanceFutures, order_type: str = "STOP_MARKET") -> list[dict]:
    return [a for a in fake.default_account.algo_orders if a["algoStatus"] == "NEW" and a["orderType"] == order_type]


async def opened(live_stub: CycleClient, user: str, tick: str = "t1", **fields: object):
    reply = await live_stub.run_cycle(request(user_id=user, tick_id=tick, **fields))
    assert reply.order.placed and reply.has_position, reply.decision
    return reply


async def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


# (1) ----------------------------------------------------------------------------------------------------
async def test_a_deadline_between_fill_and_stop_still_ends_with_the_stop_and_the_result_stored(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str, db
):
    fake.slow_answer_next(2.0)   # the entry fills at once, its answer arrives after the caller's deadline
    cycle = request(user_id=live_user, tick_id="deadline-1")
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await live_stub.run_cycle(cycle, timeout=1.0)
    assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fake.position("BTCUSDT").amount > 0   # filled while nobody was waiting any more

    await until(lambda: len(open_stops(fake)) == 1)
    [stop] = open_stops(fake)
    assert stop["side"] == "SELL" and stop["closePosition"] and Decimal(stop["triggerPrice"]) == Decimal("49000")

    async def recorded() -> bool:
        bot = await db.botinstances.find_one({"_id": ObjectId(cycle.bot_instance_id)})
        return bot is not None and bot.get("currentPosition") is not None
    deadline = time.monotonic() + 10
    while not await recorded():
        assert time.monotonic() < deadline, "the late result never reached MongoDB"
        await asyncio.sleep(0.05)
    bot = await db.botinstances.find_one({"_id": ObjectId(cycle.bot_instance_id)})
    assert bot["currentPosition"]["side"] == "LONG" and bot["currentPosition"]["stopLoss"] == 49000.0
    [trade] = await db.tradelogs.find({"botInstanceId": ObjectId(cycle.bot_instance_id)}).to_list()
    assert trade["action"] == "OPEN_LONG" and "deadline passed" in trade["message"]

    # The next tick monitors the position it now knows about; nothing is entered twice.
    again = await live_stub.stub.RunCycle(executor_pb2.RunCycleRequest(   # the bot as the executor stored it
        tick_id="deadline-2", bot=executor_pb2.BotRef(bot_instance_id=cycle.bot_instance_id),
        signal=common_pb2.Signal(action=HOLD)))
    assert again.has_position and not again.order.placed
    assert len(fake.orders_sent("/fapi/v1/order")) == 1


# (3) is proved on the broker itself: tests/executor_live/test_orders.py (an entry keeps room for its protection).

# (4) ----------------------------------------------------------------------------------------------------
async def test_a_position_filling_its_cap_is_not_paused_by_a_small_price_move(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str
):
    capped = config(max_position_notional="600")
    first = await opened(live_stub, live_user, bot_config=capped)   # 0.012 BTC at 50000 = exactly the cap
    assert Decimal(first.order.quantity) * Decimal(first.order.fill_price) == Decimal("600")
    fake.set_mark_price("BTCUSDT", "50010")   # +0.02 %
    later = await live_stub.run_cycle(request(user_id=live_user, tick_id="t2", bot_config=capped, price="50010",
                                              action=HOLD, stored_position=first.position))
    assert not later.safety.tripped, later.safety.message
    assert later.has_position and "monitoring" in later.decision


async def test_a_size_trip_still_audits_the_stop(live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str):
    first = await opened(live_stub, live_user)
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.5"))   # grown by hand far beyond the bot's share
    for stop in open_stops(fake):
        fake.cancel_algo_by_hand(stop)                     # and its stop cancelled by hand
    tripped = await live_stub.run_cycle(request(user_id=live_user, tick_id="t2", action=HOLD,
                                                stored_position=first.position))
    assert tripped.safety.tripped and tripped.safety.rule == "POSITION_SIZE" and tripped.safety.pause_bot
    assert any(e.action == "STOP_LOSS_RESTORED" for e in tripped.events)
    [stop] = open_stops(fake)
    assert stop["closePosition"] and stop["side"] == "SELL"


# (5) ----------------------------------------------------------------------------------------------------
async def test_leftover_protective_orders_are_cancelled_before_an_entry(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str
):
    # A stop and a target from an earlier entry whose answer was lost: closePosition orders on a flat symbol.
    old_stop = fake.manual_algo_order("BTCUSDT", "SELL", "STOP_MARKET", "49900")
    old_target = fake.manual_algo_order("BTCUSDT", "SELL", "TAKE_PROFIT_MARKET", "50100")
    reply = await opened(live_stub, live_user)
    assert old_stop["algoStatus"] == old_target["algoStatus"] == "CANCELED"
    [stop] = open_stops(fake)
    assert stop["clientAlgoId"] == reply.order.stop_loss_order_id and Decimal(stop["triggerPrice"]) == Decimal("49000")
    fake.set_mark_price("BTCUSDT", "50150")   # the old target's price: the new position stays open
    assert fake.position("BTCUSDT").amount == Decimal(reply.order.quantity)


# (6) ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impostor", [
    {"side": "SELL", "order_type": "STOP_MARKET", "trigger": "30000"},    # a manual stop, far below the bot's
    {"side": "BUY", "order_type": "STOP_MARKET", "trigger": "60000"},     # the other side's stop (after a flip)
    {"side": "SELL", "order_type": "STOP_MARKET", "trigger": "49000", "close_position": False, "quantity": "0.001"},
])
async def test_the_stop_audit_accepts_only_a_stop_that_closes_this_position_as_configured(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str, impostor: dict
):
    first = await opened(live_stub, live_user)
    for stop in open_stops(fake):
        fake.cancel_algo_by_hand(stop)
    fake.manual_algo_order("BTCUSDT", **impostor)
    audited = await live_stub.run_cycle(request(user_id=live_user, tick_id="t2", action=HOLD,
                                                stored_position=first.position))
    assert any(e.action == "STOP_LOSS_RESTORED" for e in audited.events), audited.decision
    [stop] = open_stops(fake)   # the impostor was cancelled, the bot's own stop placed
    assert stop["side"] == "SELL" and stop["closePosition"] and Decimal(stop["triggerPrice"]) == Decimal("49000")
    assert audited.position.stop_loss == "49000"


async def test_a_healthy_stop_is_left_alone(live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str):
    first = await opened(live_stub, live_user)
    sent = len(fake.orders_sent("/fapi/v1/algoOrder"))
    audited = await live_stub.run_cycle(request(user_id=live_user, tick_id="t2", action=HOLD,
                                                stored_position=first.position))
    assert not audited.events and len(fake.orders_sent("/fapi/v1/algoOrder")) == sent


# (7) ----------------------------------------------------------------------------------------------------
async def test_an_emergency_close_that_fills_in_part_keeps_the_stop_on_the_rest(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str
):
    tight = config(max_daily_loss="5")
    first = await opened(live_stub, live_user, bot_config=tight)
    fake.set_mark_price("BTCUSDT", "49500")   # -6 USDT open: the daily-loss rule closes
    fake.partial_fill_next("0.5")
    tripped = await live_stub.run_cycle(request(user_id=live_user, tick_id="t2", bot_config=tight, price="49500",
                                                action=HOLD, stored_position=first.position))
    assert tripped.safety.tripped and tripped.safety.rule == "DAILY_LOSS"
    assert not tripped.safety.position_closed
    assert any(e.action == "CLOSE_PARTIAL" and e.severity == "CRITICAL" for e in tripped.events)
    left = Decimal(first.order.quantity) / 2
    assert fake.position("BTCUSDT").amount == left
    [stop] = open_stops(fake)                  # still protecting what is left
    assert stop["closePosition"] and tripped.has_position and Decimal(tripped.position.quantity) == left


# (8) ----------------------------------------------------------------------------------------------------
async def test_a_take_profit_that_failed_to_place_is_placed_by_the_next_audit(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str
):
    fake.fail_next("POST", "/fapi/v1/algoOrder", code=-1001, msg="Internal error; unable to process your request.",
                   status=400, params={"type": "TAKE_PROFIT_MARKET"})
    first = await opened(live_stub, live_user)
    assert first.order.take_profit_order_id == "" and not open_stops(fake, "TAKE_PROFIT_MARKET")
    audited = await live_stub.run_cycle(request(user_id=live_user, tick_id="t2", action=HOLD,
                                                stored_position=first.position))
    assert any(e.action == "TAKE_PROFIT_RESTORED" for e in audited.events)
    [target] = open_stops(fake, "TAKE_PROFIT_MARKET")
    assert Decimal(target["triggerPrice"]) == Decimal("52000") and len(open_stops(fake)) == 1


# (9) ----------------------------------------------------------------------------------------------------
async def test_leverage_changed_by_hand_is_set_back_before_the_next_entry(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str
):
    first = await opened(live_stub, live_user)
    assert fake.default_account.leverage["BTCUSDT"] == 10
    fake.set_mark_price("BTCUSDT", "48900")                        # the stop fires: flat again
    fake.set_leverage_by_hand("BTCUSDT", 75)                       # changed on Binance's site
    fake.set_mark_price("BTCUSDT", "50000")
    await opened(live_stub, live_user, tick="t2", stored_position=first.position)
    assert fake.default_account.leverage["BTCUSDT"] == 10


# (10) ---------------------------------------------------------------------------------------------------
async def test_an_unreadable_daily_pnl_does_not_stop_the_protection_of_an_open_position(
    live_stub: CycleClient, fake: FakeBinanceFutures, live_user: str, api_secret: str
):
    first = await opened(live_stub, live_user)
    for stop in open_stops(fake):
        fake.cancel_algo_by_hand(stop)
    shared = shared_state(hashlib.sha256(f"{fake.url}\n{API_KEY}".encode()).hexdigest()[:16])
    shared.baselines.clear()                                       # today's PnL must be read again...
    fake.fail_next("GET", "/fapi/v1/userTrades", status=503, code=-1001, msg="Internal error", times=1000)  # ...and cannot

    audited = await live_stub.run_cycle(request(user_id=live_user, tick_id="t2", action=common_pb2.ACTION_BUY,
                                                stored_position=first.position))
    assert any(e.action == "DAILY_PNL_UNKNOWN" for e in audited.events)
    assert any(e.action == "STOP_LOSS_RESTORED" for e in audited.events)
    assert len(open_stops(fake)) == 1 and not audited.order.placed
    assert len(fake.orders_sent("/fapi/v1/order")) == 1           # no new entry without today's PnL
