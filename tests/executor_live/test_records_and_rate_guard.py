"""Pure pieces of the live broker: booking a round trip from userTrades, and the order-rate guard."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.common.errors import ResourceExhausted, Unavailable
from services.executor.binance.ratelimit import OrderRateGuard
from services.executor.binance.records import book_trade, parse_position


def trade(trade_id: int, side: str, qty: str, price: str, pnl: str = "0", fee: str = "0", at: int = 0,
          order_id: int = 1, asset: str = "USDT") -> dict[str, object]:
    return {"id": trade_id, "orderId": order_id, "side": side, "qty": qty, "price": price, "realizedPnl": pnl,
            "commission": fee, "commissionAsset": asset, "time": at or trade_id}


def test_round_trip_with_partial_fills_books_weighted_prices_and_net_pnl() -> None:
    trades = [
        trade(1, "SELL", "0.5", "100", pnl="-3", fee="0.1", order_id=9),   # tail of an earlier position: ignored
        trade(2, "BUY", "1", "200", fee="0.1", order_id=10),
        trade(3, "BUY", "1", "202", fee="0.1", order_id=10),
        trade(4, "SELL", "1.5", "210", pnl="13.5", fee="0.15", order_id=11),
        trade(5, "SELL", "0.5", "206", pnl="2.5", fee="0.05", order_id=12),
        trade(6, "BUY", "1", "205", fee="0.1", order_id=13),               # the next position: ignored
    ]
    booked = book_trade(trades, "LONG")
    assert booked is not None
    assert booked.entry_price == Decimal("201")
    assert booked.exit_price == Decimal("209")        # (1.5×210 + 0.5×206) / 2
    assert booked.quantity == Decimal("2")
    assert booked.fees == Decimal("0.4")
    assert booked.realized_pnl == Decimal("15.6")     # 13.5 + 2.5 − 0.4
    assert booked.closing_order_ids == frozenset({"11", "12"})
    assert (booked.open_time_ms, booked.close_time_ms) == (2, 5)


def test_position_still_partly_open_is_not_booked() -> None:
    assert book_trade([trade(1, "SELL", "2", "100"), trade(2, "BUY", "1", "99", pnl="1")], "SHORT") is None


def test_fees_in_another_asset_are_not_counted_as_usdt() -> None:
    booked = book_trade([trade(1, "BUY", "1", "100", fee="0.01", asset="BNB"), trade(2, "SELL", "1", "101", pnl="1", fee="0.05")], "LONG")
    assert booked is not None and booked.fees == Decimal("0.05")


def test_an_unreadable_position_row_raises_instead_of_reading_flat() -> None:
    with pytest.raises(Unavailable):
        parse_position([{"symbol": "BTCUSDT", "positionAmt": "garbage"}], "BTCUSDT", 5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_guard_counts_orders_sent_since_the_last_report_and_frees_after_the_window() -> None:
    clock = Clock()
    guard = OrderRateGuard(clock)
    guard.before_order()
    guard.observe({"X-MBX-ORDER-COUNT-10S": "265", "X-MBX-ORDER-COUNT-1M": "265"})
    for _ in range(5):
        guard.before_order()           # orders 266 … 270: up to the 10 % head-room line (300 − 30)
    with pytest.raises(ResourceExhausted) as refused:
        guard.before_order()           # the 271st would cross it
    assert 0 < refused.value.retry_after <= 10
    clock.now += 10.5
    guard.before_order()               # the 10 s window rolled over


def test_rate_guard_minute_limit() -> None:
    clock = Clock()
    guard = OrderRateGuard(clock)
    guard.observe({"X-MBX-ORDER-COUNT-10S": "1", "X-MBX-ORDER-COUNT-1M": "1140"})
    with pytest.raises(ResourceExhausted, match="1200"):
        guard.before_order()
