"""Stop-loss / take-profit on /fapi/v1/algoOrder, closing, and booking closed trades from exchange records."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.executor.brokers.base import EntryOrder, ExchangePosition, ProtectiveOrders
from services.executor.binance.broker import BinanceFuturesBroker
from tests.fakes.binance_futures import FakeBinanceFutures


def long_btc(quantity: str = "0.01") -> ExchangePosition:
    """The position the audit asks about (its side and size decide which orders protect it)."""
    return ExchangePosition("BTCUSDT", "LONG", Decimal(quantity), Decimal("50000"), Decimal("50000"), Decimal(0), 10,
                            Decimal(50))


async def open_long(broker: BinanceFuturesBroker, quantity: str = "0.010") -> int:
    fill = await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal(quantity), "bot1-t1-entry", Decimal("50000")))
    return fill.time_ms


async def protect_long(broker: BinanceFuturesBroker) -> ProtectiveOrders:
    return await broker.protect("BTCUSDT", "LONG", Decimal("48500.0"), Decimal("53000.0"), "bot1-t1-sl", "bot1-t1-tp")


async def test_protection_goes_to_the_algo_endpoint_with_the_callers_ids(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await open_long(broker)

    placed = await protect_long(broker)

    stop, target = fake.orders_sent("/fapi/v1/algoOrder")
    assert stop.status == target.status == 200
    assert stop.params == stop.params | {
        "algoType": "CONDITIONAL", "type": "STOP_MARKET", "side": "SELL", "triggerPrice": "48500",
        "closePosition": "true", "workingType": "MARK_PRICE", "clientAlgoId": "bot1-t1-sl",
    }
    assert target.params["type"] == "TAKE_PROFIT_MARKET" and target.params["clientAlgoId"] == "bot1-t1-tp"
    assert target.params["triggerPrice"] == "53000"
    # Conditional types never went to /fapi/v1/order, so no -4120 was ever answered.
    assert all(r.params.get("type") == "MARKET" for r in fake.orders_sent("/fapi/v1/order"))
    assert placed == ProtectiveOrders("bot1-t1-sl", Decimal("48500"), "bot1-t1-tp", Decimal("53000"))
    assert await broker.protective_orders(long_btc()) == placed


async def test_a_short_is_protected_by_buy_side_orders(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    await broker.open_position(EntryOrder("ETHUSDT", "SHORT", Decimal("0.1"), "bot2-t1-entry", Decimal("3000")))
    await broker.protect("ETHUSDT", "SHORT", Decimal("3090"), Decimal("2900"), "bot2-t1-sl", "bot2-t1-tp")
    assert {r.params["side"] for r in fake.orders_sent("/fapi/v1/algoOrder")} == {"BUY"}


async def test_protect_again_finds_its_orders_instead_of_duplicating(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await open_long(broker)
    first = await protect_long(broker)
    again = await protect_long(broker)
    assert again == first
    assert len(fake.orders_sent("/fapi/v1/algoOrder")) == 2


async def test_stop_loss_failure_raises_and_the_position_can_be_closed_at_once(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await open_long(broker)
    fake.fail_next("POST", "/fapi/v1/algoOrder", code=-2021, msg="Order would immediately trigger.")

    with pytest.raises(FailedPrecondition, match="-2021"):
        await protect_long(broker)

    fill = await broker.close_position("BTCUSDT", "bot1-t1-close", "EMERGENCY_STOP")
    assert fill is not None and fill.quantity == Decimal("0.01")
    [close] = [r for r in fake.orders_sent() if r.params.get("reduceOnly") == "true"]
    assert close.params["side"] == "SELL" and close.params["newClientOrderId"] == "bot1-t1-close"
    assert fake.position("BTCUSDT").amount == 0
    assert await broker.position("BTCUSDT") is None
    assert await broker.close_position("BTCUSDT", "bot1-t1-close2", "EMERGENCY_STOP") is None  # flat: nothing sent


async def test_take_profit_failure_keeps_the_stop_and_reports_the_gap(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await open_long(broker)
    placed = await broker.protect("BTCUSDT", "LONG", Decimal("48500.0"), Decimal("49000.0"), "bot1-t1-sl", "bot1-t1-tp")
    # 49000 is below the mark for a long's take-profit: Binance refuses it (-2021), the stop stays.
    assert placed.stop_loss_id == "bot1-t1-sl" and placed.take_profit_id is None
    assert [r.status for r in fake.orders_sent("/fapi/v1/algoOrder")] == [200, 400]
    assert await broker.protective_orders(long_btc()) == placed


async def test_stop_loss_fires_on_the_exchange_and_the_trade_is_booked_from_user_trades(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    open_time = await open_long(broker)
    await protect_long(broker)
    assert await broker.closed_trade("BTCUSDT", "LONG", open_time) is None  # still open

    fake.set_mark_price("BTCUSDT", "48400")  # crosses the 48500 stop; fills at the mark

    assert await broker.position("BTCUSDT") is None
    record = await broker.closed_trade("BTCUSDT", "LONG", open_time)
    assert record is not None
    # (48400 − 50000) × 0.01 = −16; fees 0.01×50000×0.0005 + 0.01×48400×0.0005 = 0.25 + 0.242
    assert record.entry_price == Decimal("50000") and record.exit_price == Decimal("48400")
    assert record.quantity == Decimal("0.01")
    assert record.fees == Decimal("0.492")
    assert record.realized_pnl == Decimal("-16.492")
    assert record.reason == "STOP_LOSS"
    assert await broker.realized_pnl_since("BTCUSDT", open_time - 1000) == Decimal("-16.492")

    await broker.cancel_protective_orders("BTCUSDT")  # the leftover take-profit
    assert await broker.protective_orders(long_btc()) == ProtectiveOrders(None, None, None, None)


async def test_take_profit_of_a_short_is_booked_with_its_reason(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    fill = await broker.open_position(EntryOrder("ETHUSDT", "SHORT", Decimal("0.1"), "bot2-t1-entry", Decimal("3000")))
    await broker.protect("ETHUSDT", "SHORT", Decimal("3090"), Decimal("2900"), "bot2-t1-sl", "bot2-t1-tp")

    fake.set_mark_price("ETHUSDT", "2890")

    record = await broker.closed_trade("ETHUSDT", "SHORT", fill.time_ms)
    assert record is not None
    # (3000 − 2890) × 0.1 = 11; fees 0.1×3000×0.0005 + 0.1×2890×0.0005 = 0.15 + 0.1445
    assert record.realized_pnl == Decimal("10.7055")
    assert record.fees == Decimal("0.2945")
    assert record.reason == "TAKE_PROFIT"


async def test_our_own_close_is_booked_with_the_reason_we_gave(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    open_time = await open_long(broker)
    fake.set_mark_price("BTCUSDT", "51000")
    await broker.close_position("BTCUSDT", "bot1-t1-close", "EMERGENCY_STOP")

    record = await broker.closed_trade("BTCUSDT", "LONG", open_time)
    assert record is not None
    assert record.reason == "EMERGENCY_STOP"
    assert record.realized_pnl == Decimal("10") - Decimal("0.25") - Decimal("0.255")


async def test_a_close_made_outside_the_bot_is_external(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    open_time = await open_long(broker)
    fake.manual_order("BTCUSDT", "SELL", Decimal("0.010"))  # the user closes it in Binance's app
    record = await broker.closed_trade("BTCUSDT", "LONG", open_time)
    assert record is not None and record.reason == "EXTERNAL"


async def test_unknown_open_time_books_the_latest_round_trip_with_one_history_read(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.010"), "bot1-t1-entry", Decimal("50000")))
    await broker.close_position("BTCUSDT", "bot1-t1-close", "EMERGENCY_STOP")
    fake.set_mark_price("BTCUSDT", "52000")
    await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.020"), "bot1-t2-entry", Decimal("52000")))
    fake.set_mark_price("BTCUSDT", "52500")
    fake.manual_order("BTCUSDT", "SELL", Decimal("0.020"))
    reads_before = len(fake.orders_sent("/fapi/v1/userTrades", "GET"))

    record = await broker.closed_trade("BTCUSDT", "LONG", 0)  # the caller did not know when it opened

    assert record is not None
    assert (record.entry_price, record.exit_price, record.quantity) == (Decimal("52000"), Decimal("52500"), Decimal("0.02"))
    assert record.reason == "EXTERNAL"
    assert len(fake.orders_sent("/fapi/v1/userTrades", "GET")) - reads_before == 1


async def test_a_stop_price_off_the_tick_is_invalid_and_nothing_is_placed(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await open_long(broker)
    with pytest.raises(InvalidArgument, match="-4014"):
        await broker.protect("BTCUSDT", "LONG", Decimal("48500.05"), Decimal("53000.0"), "bot1-t1-sl", "bot1-t1-tp")
    assert await broker.protective_orders(long_btc()) == ProtectiveOrders(None, None, None, None)


async def test_daily_realized_pnl_follows_our_closes_and_hand_trades_without_the_income_history(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    open_time = await open_long(broker)
    fake.set_mark_price("BTCUSDT", "51000")
    await broker.close_position("BTCUSDT", "bot1-t1-close", "EMERGENCY_STOP")
    since = open_time - 1000
    first_close = Decimal("10") - Decimal("0.25") - Decimal("0.255")   # +10 PnL, entry and exit fees
    assert await broker.realized_pnl_since("BTCUSDT", since) == first_close

    fake.manual_order("BTCUSDT", "BUY", Decimal("0.010"))          # a trade by hand at 51000: fee 0.255
    fake.set_mark_price("BTCUSDT", "50000")
    await broker.close_position("BTCUSDT", "bot1-t2-close", "EMERGENCY_STOP")   # PnL −10, fee 0.25
    assert await broker.realized_pnl_since("BTCUSDT", since) == (first_close - Decimal("0.255") - Decimal("10")
                                                                 - Decimal("0.25"))
    assert fake.orders_sent("/fapi/v1/income", "GET") == []


async def test_stop_loss_with_unknown_status_is_found_by_its_client_algo_id(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    await open_long(broker)
    fake.unknown_status_next()  # the stop is placed, the answer is a 503

    placed = await protect_long(broker)

    assert placed.stop_loss_id == "bot1-t1-sl" and placed.take_profit_id == "bot1-t1-tp"
    assert [r.status for r in fake.orders_sent("/fapi/v1/algoOrder")] == [503, 200]  # the stop was not sent twice


async def test_duplicate_client_algo_id_returns_the_working_order(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    await open_long(broker)
    first = await protect_long(broker)
    fake.fail_next("GET", "/fapi/v1/openAlgoOrders", status=500, code=-1001, msg="Internal error", times=3)

    again = await protect_long(broker)  # cannot list, so it sends; Binance answers -4116 for both ids

    assert again == first
    assert [r.status for r in fake.orders_sent("/fapi/v1/algoOrder")] == [200, 200, 400, 400]
    assert len([a for a in fake.default_account.algo_orders if a["algoStatus"] == "NEW"]) == 2
