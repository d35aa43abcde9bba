"""Paper broker accounting with hand-computed numbers (taker fee 0.05 %, leverage 10)."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from services.common.errors import FailedPrecondition
from services.executor.brokers.base import Candle, EntryOrder, MarketView
from services.executor.brokers.paper import PaperBroker

T0 = 1_700_000_000_000
FIVE_MIN = 300_000


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make_broker(db, clock: Clock, connection_id: str = "conn-1") -> PaperBroker:
    return PaperBroker(db, connection_id, initial_balance=D("10000"), taker_fee=D("0.0005"), clock=clock)



def bar(open_time: int, low: str, high: str) -> Candle:
    return Candle(open_time, open_time + FIVE_MIN - 1, open=D(low), high=D(high), low=D(low), close=D(high))


async def open_protected(broker: PaperBroker, side: str, stop: str, target: str, cid: str = "tb-entry-E",
                         symbol: str = "BTCUSDT"):
    await broker.observe(MarketView(symbol, D("50000")))
    await broker.prepare_symbol(symbol, 10, "ISOLATED")
    fill = await broker.open_position(EntryOrder(symbol, side, D("0.2"), cid, D("50000")))
    await broker.protect(symbol, side, D(stop), D(target), "tb-x-SL", "tb-x-TP")
    return fill


async def test_long_entry_charges_fee_and_locks_margin(db):
    broker = make_broker(db, Clock())
    fill = await open_protected(broker, "LONG", "49000", "52000")
    assert (fill.price, fill.quantity, fill.fee) == (D("50000"), D("0.2"), D("5"))   # 10000 * 0.0005
    account = await broker.account()
    assert account.wallet_balance == D("9995")
    assert account.available_balance == D("8995")                                   # 1000 margin locked
    position = await broker.position("BTCUSDT")
    assert position is not None and position.margin == D("1000") and position.leverage == 10


async def test_long_take_profit_on_a_later_candle(db):
    clock = Clock()
    broker = make_broker(db, clock)
    await open_protected(broker, "LONG", "49000", "52000")
    clock.now = T0 + 2 * FIVE_MIN
    await broker.observe(MarketView("BTCUSDT", D("51000"), [bar(T0 + FIVE_MIN, "50500", "52100")]))
    assert await broker.position("BTCUSDT") is None
    trade = await broker.closed_trade("BTCUSDT", "LONG", T0)
    assert trade is not None and trade.reason == "TAKE_PROFIT"
    assert trade.exit_price == D("52000")                      # filled at the trigger price
    assert trade.fees == D("10.2")                             # 5 entry + 52000*0.2*0.0005 = 5.2 exit
    assert trade.realized_pnl == D("389.8")                    # 400 gross - 10.2
    account = await broker.account()
    assert account.wallet_balance == account.available_balance == D("10389.8")


async def test_short_stop_loss_on_a_later_candle(db):
    clock = Clock()
    broker = make_broker(db, clock)
    await open_protected(broker, "SHORT", "51000", "48000")
    clock.now = T0 + 2 * FIVE_MIN
    await broker.observe(MarketView("BTCUSDT", D("50500"), [bar(T0 + FIVE_MIN, "49900", "51200")]))
    trade = await broker.closed_trade("BTCUSDT", "SHORT", T0)
    assert trade is not None and trade.reason == "STOP_LOSS" and trade.exit_price == D("51000")
    assert trade.realized_pnl == D("-210.1")                   # -200 gross - 5 - 5.1
    assert (await broker.account()).wallet_balance == D("9789.9")
    assert await broker.realized_pnl_since("BTCUSDT", T0) == D("-210.1")
    assert await broker.realized_pnl_since("BTCUSDT", T0 + 10 * FIVE_MIN) == D("0")


async def test_stop_wins_when_one_candle_touches_both(db):
    clock = Clock()
    broker = make_broker(db, clock)
    await open_protected(broker, "LONG", "49000", "52000")
    clock.now = T0 + 2 * FIVE_MIN
    await broker.observe(MarketView("BTCUSDT", D("50000"), [bar(T0 + FIVE_MIN, "48900", "52500")]))
    trade = await broker.closed_trade("BTCUSDT", "LONG", T0)
    assert trade is not None and trade.reason == "STOP_LOSS" and trade.exit_price == D("49000")
    assert trade.realized_pnl == D("-209.9")                   # -200 - 5 - 49000*0.2*0.0005 (4.9)


async def test_candles_from_before_the_entry_do_not_trigger(db):
    clock = Clock()
    broker = make_broker(db, clock)
    await open_protected(broker, "LONG", "49000", "52000")
    await broker.observe(MarketView("BTCUSDT", D("50100"), [bar(T0 - FIVE_MIN, "40000", "60000")]))
    position = await broker.position("BTCUSDT")
    assert position is not None and position.mark_price == D("50100")
    assert position.unrealized_pnl == D("20")                  # (50100 - 50000) * 0.2


async def test_state_survives_a_new_broker_instance(db):
    clock = Clock()
    await open_protected(make_broker(db, clock), "LONG", "49000", "52000")
    restarted = make_broker(db, clock)
    position = await restarted.position("BTCUSDT")
    assert position is not None and position.quantity == D("0.2") and position.entry_price == D("50000")
    protection = await restarted.protective_orders(position)
    assert protection.stop_loss_price == D("49000") and protection.take_profit_price == D("52000")
    assert (await restarted.account()).available_balance == D("8995")


async def test_entry_is_idempotent_by_client_order_id(db):
    broker = make_broker(db, Clock())
    first = await open_protected(broker, "LONG", "49000", "52000", cid="tb-same-E")
    again = await broker.open_position(EntryOrder("BTCUSDT", "LONG", D("0.2"), "tb-same-E", D("50000")))
    assert again == first
    assert await broker.find_entry("BTCUSDT", "tb-same-E") == first
    assert (await broker.account()).wallet_balance == D("9995")         # one fee only
    assert await db.paperpositions.count_documents({}) == 1


async def test_second_entry_on_an_open_symbol_is_rejected(db):
    broker = make_broker(db, Clock())
    await open_protected(broker, "LONG", "49000", "52000", cid="tb-a-E")
    with pytest.raises(FailedPrecondition, match="already open"):
        await broker.open_position(EntryOrder("BTCUSDT", "LONG", D("0.2"), "tb-b-E", D("50000")))
    assert (await broker.account()).wallet_balance == D("9995")


async def test_insufficient_margin_is_rejected_and_leaves_nothing(db):
    broker = make_broker(db, Clock())
    await broker.prepare_symbol("BTCUSDT", 1, "ISOLATED")
    with pytest.raises(FailedPrecondition, match="margin is insufficient"):
        await broker.open_position(EntryOrder("BTCUSDT", "LONG", D("0.2"), "tb-big-E", D("50000")))
    assert await broker.position("BTCUSDT") is None
    assert (await broker.account()).available_balance == D("10000")


async def test_concurrent_bots_of_one_account_lose_no_update(db):
    clock = Clock()
    symbols = [f"COIN{i}USDT" for i in range(6)]
    brokers = [make_broker(db, clock) for _ in symbols]   # one instance per bot, as in the server
    for broker, symbol in zip(brokers, symbols, strict=True):
        await broker.prepare_symbol(symbol, 10, "ISOLATED")
    await asyncio.gather(*(
        broker.open_position(EntryOrder(symbol, "LONG", D("0.2"), f"tb-{symbol}-E", D("50000")))
        for broker, symbol in zip(brokers, symbols, strict=True)
    ))
    account = await make_broker(db, clock).account()
    assert account.wallet_balance == D("10000") - 6 * D("5")
    assert account.available_balance == D("10000") - 6 * D("1005")


async def test_close_at_market_books_the_trade(db):
    clock = Clock()
    broker = make_broker(db, clock)
    await open_protected(broker, "LONG", "49000", "52000")
    clock.now = T0 + FIVE_MIN
    await broker.observe(MarketView("BTCUSDT", D("49500")))
    fill = await broker.close_position("BTCUSDT", "tb-x-X", "EMERGENCY_STOP")
    assert fill is not None and fill.price == D("49500") and fill.fee == D("4.95")
    assert await broker.close_position("BTCUSDT", "tb-x-X", "EMERGENCY_STOP") is None
    trade = await broker.closed_trade("BTCUSDT", "LONG", T0)
    assert trade is not None and trade.reason == "EMERGENCY_STOP"
    assert trade.realized_pnl == D("-109.95")                  # -100 - 5 - 4.95


@pytest.mark.parametrize("store", ["mongo", "memory"])
async def test_every_symbols_daily_pnl_in_one_read_matches_the_per_symbol_sums(db, store):
    from services.executor.brokers.paper_store import MemoryPaperStore

    clock = Clock()
    broker = make_broker(db if store == "mongo" else MemoryPaperStore(), clock)
    other_account = make_broker(db if store == "mongo" else MemoryPaperStore(), clock, connection_id="conn-2")
    await open_protected(broker, "SHORT", "51000", "48000")
    await open_protected(broker, "LONG", "49000", "52000", cid="tb-entry-F", symbol="ETHUSDT")
    await open_protected(other_account, "LONG", "49000", "52000")
    clock.now = T0 + 2 * FIVE_MIN
    for account, symbol in ((broker, "BTCUSDT"), (broker, "ETHUSDT"), (other_account, "BTCUSDT")):
        await account.observe(MarketView(symbol, D("50500"), [bar(T0 + FIVE_MIN, "49900", "52100")]))

    by_symbol = await broker.realized_pnl_by_symbol_since(T0)
    assert by_symbol == {"BTCUSDT": D("-210.1"), "ETHUSDT": D("389.8")}   # the other account's trade is not in it
    assert by_symbol == {s: await broker.realized_pnl_since(s, T0) for s in ("BTCUSDT", "ETHUSDT")}
    assert await broker.realized_pnl_by_symbol_since(T0 + 10 * FIVE_MIN) == {}
