"""Today's realised PnL of an account whose user-data stream is not live: one userTrades read (weight 5) of the
symbol asked about, never the income history (weight 30), and trades made by hand count like ours."""

from __future__ import annotations

from decimal import Decimal

from services.executor.binance.broker import BinanceFuturesBroker
from services.executor.brokers.base import EntryOrder
from tests.fakes.binance_futures import FakeBinanceFutures

INCOME = "/fapi/v1/income"
USER_TRADES = "/fapi/v1/userTrades"


async def test_todays_pnl_is_the_symbols_trades_net_of_fees_hand_trades_included(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    assert await broker.realized_pnl_since("BTCUSDT", 0) == 0
    await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.010"), "bot1-t1-entry", Decimal("50000")))
    await broker.protect("BTCUSDT", "LONG", Decimal("48500.0"), Decimal("53000.0"), "bot1-t1-sl", "bot1-t1-tp")
    assert await broker.realized_pnl_since("BTCUSDT", 0) == Decimal("-0.25")   # our entry fee (0.01 × 50000 × 0.0005)

    fake.set_mark_price("BTCUSDT", "48400")   # the stop fires on the exchange: -16 and a 0.242 fee
    assert await broker.realized_pnl_since("BTCUSDT", 0) == Decimal("-16.492")
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.010"))   # by hand, at 48400: fee 0.242, not ours
    assert await broker.realized_pnl_since("BTCUSDT", 0) == Decimal("-16.734")
    assert await broker.realized_pnl_since("ETHUSDT", 0) == 0   # per symbol: another symbol's day is its own

    assert fake.reads(INCOME) == []
    assert {r.params["symbol"] for r in fake.reads(USER_TRADES)} == {"BTCUSDT", "ETHUSDT"}


async def test_trades_before_the_day_began_do_not_count(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.010"), "bot1-t1-entry", Decimal("50000")))
    after_the_entry = fake.server_time_ms() + 1
    assert await broker.realized_pnl_since("BTCUSDT", after_the_entry) == 0


async def test_the_account_has_no_account_wide_daily_read(broker: BinanceFuturesBroker) -> None:
    # None tells the per-tick cache to ask per symbol: the live broker has no cheaper account-wide read.
    assert await broker.realized_pnl_by_symbol_since(0) is None
