"""Entries and account preparation through the real python-binance client against the fake exchange."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from services.executor.brokers.base import EntryOrder
from services.executor.binance.account import HEDGE_MODE_BELIEVED_S
from services.executor.binance.broker import BinanceFuturesBroker
from tests.executor_live.conftest import Credentials, connect, set_request_timeout
from tests.fakes.binance_futures import UNKNOWN_STATUS_MESSAGE, FakeBinanceFutures


def entry(side: str = "LONG", quantity: str = "0.012", client_id: str = "bot1-tick1-entry", symbol: str = "BTCUSDT") -> EntryOrder:
    return EntryOrder(symbol=symbol, side=side, quantity=Decimal(quantity), client_order_id=client_id,  # type: ignore[arg-type]
                      reference_price=Decimal("50000"))


@pytest.mark.parametrize(("side", "binance_side", "signed_amount"), [("LONG", "BUY", "0.012"), ("SHORT", "SELL", "-0.012")])
async def test_entry_is_a_signed_market_order_on_the_right_side(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker, side: str, binance_side: str, signed_amount: str
) -> None:
    fill = await broker.open_position(entry(side))

    [sent] = fake.orders_sent()
    assert sent.status == 200  # the fake verified key, HMAC signature and timestamp
    assert sent.params["side"] == binance_side
    assert sent.params["type"] == "MARKET"
    assert sent.params["quantity"] == "0.012"
    assert sent.params["newClientOrderId"] == "bot1-tick1-entry"
    assert sent.params["newOrderRespType"] == "RESULT"
    assert fill.price == Decimal("50000")
    assert fill.quantity == Decimal("0.012")
    assert fill.fee == Decimal("0.3")  # 0.012 × 50000 × 0.05 % taker fee, from userTrades
    assert fill.client_order_id == "bot1-tick1-entry"
    assert fake.position("BTCUSDT").amount == Decimal(signed_amount)
    position = await broker.position("BTCUSDT")
    assert position is not None and position.side == side and position.quantity == Decimal("0.012")


async def test_quantity_off_the_step_or_below_min_notional_is_rejected_as_invalid(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    with pytest.raises(InvalidArgument, match="-1111"):
        await broker.open_position(entry(quantity="0.0125", client_id="bot1-tick1-a"))
    with pytest.raises(InvalidArgument, match="-4164"):
        await broker.open_position(entry(quantity="0.001", client_id="bot1-tick1-b"))  # 50 USDT < 100 minimum
    assert await broker.position("BTCUSDT") is None
    await broker.open_position(entry(quantity="0.002", client_id="bot1-tick1-c"))  # rounded to the step: accepted
    assert fake.position("BTCUSDT").amount == Decimal("0.002")


async def test_prepare_symbol_sets_leverage_before_every_entry_even_after_a_change_by_hand(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await broker.prepare_symbol("BTCUSDT", 7, "ISOLATED")
    assert fake.default_account.leverage["BTCUSDT"] == 7
    assert fake.default_account.margin_type["BTCUSDT"] == "ISOLATED"
    fake.default_account.leverage["BTCUSDT"] = 50   # changed on Binance's site between two entries

    await broker.prepare_symbol("BTCUSDT", 7, "ISOLATED")

    assert fake.default_account.leverage["BTCUSDT"] == 7   # set back before money goes in
    assert len(fake.orders_sent("/fapi/v1/leverage")) == 2


async def test_no_need_to_change_margin_type_is_success(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker, credentials: Credentials
) -> None:
    await broker.prepare_symbol("BTCUSDT", 5, "ISOLATED")
    restarted = await connect(fake, credentials.api_key, credentials.api_secret)
    try:
        await restarted.prepare_symbol("BTCUSDT", 5, "ISOLATED")
    finally:
        await restarted.close()
    answers = [r.status for r in fake.requests if r.path == "/fapi/v1/marginType"]
    assert answers == [200, 400]  # the second answer was -4046, taken as success


async def test_hedge_mode_is_learnt_from_binances_refusal_without_a_weight_30_read(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    fake.default_account.dual_side = True
    await broker.prepare_symbol("BTCUSDT", 5, "ISOLATED")   # settings are accepted in either mode

    with pytest.raises(FailedPrecondition, match="hedge mode"):
        await broker.open_position(entry())                  # -4061: refused, nothing executed
    with pytest.raises(FailedPrecondition, match="hedge mode"):
        await broker.open_position(entry(client_id="tb-second-entry"))   # remembered: not even sent
    with pytest.raises(FailedPrecondition, match="hedge mode"):
        await broker.prepare_symbol("ETHUSDT", 5, "ISOLATED")

    assert fake.reads("/fapi/v1/positionSide/dual") == []   # never the weight-30 mode read
    assert len(fake.orders_sent("/fapi/v1/order")) == 1 and fake.position("BTCUSDT").amount == 0


async def test_a_user_back_in_one_way_mode_trades_again_without_a_restart(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    fake.default_account.dual_side = True
    with pytest.raises(FailedPrecondition, match="hedge mode"):
        await broker.open_position(entry())
    fake.default_account.dual_side = False          # the user switched back to one-way mode
    seen = broker.shared.hedge_mode_seen_at
    assert seen is not None
    broker.shared.clock = lambda: seen + HEDGE_MODE_BELIEVED_S + 1   # ten minutes later
    await broker.open_position(entry(client_id="tb-after-switch"))
    assert fake.position("BTCUSDT").amount > 0


async def test_insufficient_margin_is_a_failed_precondition(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    fake.default_account.wallet_balance = Decimal("20")
    with pytest.raises(FailedPrecondition, match="margin is insufficient"):
        await broker.open_position(entry(quantity="0.012"))  # needs 30 USDT margin at 20×
    assert fake.position("BTCUSDT").amount == 0


async def test_duplicated_tick_finds_its_entry_instead_of_opening_twice(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    first = await broker.open_position(entry())
    again = await broker.open_position(entry())

    assert again.exchange_order_id == first.exchange_order_id
    assert len(fake.orders_sent()) == 1
    assert fake.position("BTCUSDT").amount == Decimal("0.012")
    found = await broker.find_entry("BTCUSDT", "bot1-tick1-entry")
    assert found is not None and found.exchange_order_id == first.exchange_order_id
    assert await broker.find_entry("BTCUSDT", "bot1-tick2-entry") is None


async def test_duplicate_client_id_answer_returns_the_existing_order(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    first = await broker.open_position(entry())
    # The look-up misses it (say, a lagging replica), so the order is sent and Binance answers -4116.
    fake.fail_next("GET", "/fapi/v1/order", code=-2013, msg="Order does not exist.")

    again = await broker.open_position(entry())

    assert again.exchange_order_id == first.exchange_order_id
    assert [r.status for r in fake.orders_sent()] == [200, 400]
    assert fake.position("BTCUSDT").amount == Decimal("0.012")


async def test_concurrent_duplicates_open_one_position(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    fills = await asyncio.gather(*(broker.open_position(entry()) for _ in range(3)))
    assert len({f.exchange_order_id for f in fills}) == 1
    assert fake.position("BTCUSDT").amount == Decimal("0.012")


async def test_unknown_execution_status_is_resolved_by_client_id(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    fake.unknown_status_next()  # executes the order, answers 503 "Unknown error"

    fill = await broker.open_position(entry())

    assert [r.status for r in fake.orders_sent()] == [503]  # sent once, never blindly again
    assert fill.quantity == Decimal("0.012") and fill.price == Decimal("50000")
    assert fake.position("BTCUSDT").amount == Decimal("0.012")


async def test_timed_out_order_answer_is_resolved_by_client_id(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    set_request_timeout(broker, 0.2)
    fake.slow_answer_next(0.5)  # executed at once, answered after the client gave up

    fill = await broker.open_position(entry())

    assert len(fake.orders_sent()) == 1
    assert fill.quantity == Decimal("0.012")
    assert fake.position("BTCUSDT").amount == Decimal("0.012")


async def test_unknown_status_of_an_order_that_never_executed_is_reported_not_resent(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    fake.fail_next("POST", "/fapi/v1/order", status=503, code=-1000, msg=UNKNOWN_STATUS_MESSAGE)

    with pytest.raises(Unavailable, match="execution status unknown"):
        await broker.open_position(entry())

    assert len(fake.orders_sent()) == 1
    assert fake.position("BTCUSDT").amount == 0


async def test_an_entry_leaves_room_in_the_order_rate_for_its_stop_target_and_close(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    fake.order_count_bias = 266  # other clients of the account already sent 266 orders in this window
    await broker.open_position(entry(client_id="bot1-tick1-entry"))  # answer reports 267 of 300 per 10 s

    # A second entry would fit under the 270 line, but its stop, target and a close would not: refused.
    with pytest.raises(ResourceExhausted, match="keeping 3 for the orders that protect it") as refused:
        await broker.open_position(entry(client_id="bot2-tick1-entry"))
    assert refused.value.retry_after > 0
    assert len(fake.orders_sent()) == 1

    # The first entry's protection and its close still go through, into the head-room.
    placed = await broker.protect("BTCUSDT", "LONG", Decimal("48500"), Decimal("53000"), "bot1-tick1-sl", "bot1-tick1-tp")
    assert placed.stop_loss_id == "bot1-tick1-sl" and placed.take_profit_id == "bot1-tick1-tp"
    assert await broker.close_position("BTCUSDT", "bot1-tick1-close", "EMERGENCY_STOP") is not None


async def test_protective_orders_stop_only_at_the_limit_itself(fake: FakeBinanceFutures,
                                                               broker: BinanceFuturesBroker) -> None:
    fake.order_count_bias = 297
    await broker.open_position(entry(client_id="bot1-tick1-entry"))  # 298 of 300
    await broker.protect("BTCUSDT", "LONG", Decimal("48500"), Decimal("53000"), "bot1-tick1-sl", "bot1-tick1-tp")
    with pytest.raises(ResourceExhausted, match="order rate") as refused:   # 300 reached: a 301st is not sent
        await broker.close_position("BTCUSDT", "bot1-tick1-close", "EMERGENCY_STOP")
    assert refused.value.retry_after > 0
    assert [r.params.get("reduceOnly") for r in fake.orders_sent()] == [None]


async def test_rate_limit_answer_is_resource_exhausted_with_retry_after(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    fake.fail_next("POST", "/fapi/v1/order", status=429, code=-1003, msg="Too many requests.", headers={"Retry-After": "7"})
    with pytest.raises(ResourceExhausted) as refused:
        await broker.open_position(entry())
    assert refused.value.retry_after == 7.0


async def test_clock_offset_is_synced_and_resynced_after_1021(
    fake: FakeBinanceFutures, credentials: Credentials
) -> None:
    fake.clock_skew_ms = 30_000  # the exchange clock runs 30 s ahead of ours
    live = await connect(fake, credentials.api_key, credentials.api_secret)
    try:
        assert (await live.account()).available_balance == Decimal("10000")
        fake.clock_skew_ms = -30_000  # drift: the next signed request is outside recvWindow
        fill = await live.open_position(entry())
    finally:
        await live.close()
    assert fill.quantity == Decimal("0.012")
    assert any(r.status == 400 for r in fake.requests)  # the -1021 answer that forced the resync
    assert [r.status for r in fake.orders_sent()] == [200]  # and the order executed once


async def test_an_executed_entry_is_reported_even_when_its_fee_cannot_be_read(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    fake.fail_next("GET", "/fapi/v1/userTrades", status=500, code=-1001, msg="Internal error", times=3)

    fill = await broker.open_position(entry())  # raising here would orphan an unprotected position

    assert fill.quantity == Decimal("0.012") and fill.fee == 0
    assert fake.position("BTCUSDT").amount == Decimal("0.012")


async def test_an_order_in_hedge_mode_is_refused_with_a_clear_mode_error(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    fake.default_account.dual_side = True  # switched in Binance's app after preparation
    with pytest.raises(FailedPrecondition, match="hedge mode.*-4061"):
        await broker.open_position(entry())
    assert fake.position("BTCUSDT").amount == 0


async def test_fake_mark_price_is_served_as_binance_premium_index(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    fake.set_mark_price("BTCUSDT", "61234.5")
    answer = await broker.rest.client.futures_mark_price(symbol="BTCUSDT")  # the real client's own call
    assert answer["symbol"] == "BTCUSDT" and Decimal(answer["markPrice"]) == Decimal("61234.5")
