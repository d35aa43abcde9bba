"""Issue 7: the daily realised PnL without an income-history read (weight 30) per account per tick.

The income baseline is read at start-up, then at most every 30 minutes and only while the IP weight
(X-MBX-USED-WEIGHT-1M) has room; fills this system sees itself move the sum at once; past 2 hours the
refresh is forced, and if it fails the daily PnL is unknown (no entry).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from services.common.errors import Unavailable
from services.executor.brokers.base import EntryOrder
from services.executor.brokers.binance import BinanceFuturesBroker
from services.executor.brokers.binance_account import AccountShared, IncomeBaseline, ip_weight
from tests.fakes.binance_futures import FakeBinanceFutures

INCOME = "/fapi/v1/income"
MINUTE = 60.0


@pytest.fixture(autouse=True)
def fresh_ip_weight() -> Iterator[None]:
    ip_weight().reset()
    yield
    ip_weight().reset()


def income_reads(fake: FakeBinanceFutures) -> int:
    return len(fake.reads(INCOME))


async def report_weight(fake: FakeBinanceFutures, broker: BinanceFuturesBroker, used: int) -> None:
    """The tick's account read carries Binance's used-weight header to the process-wide tracker."""
    fake.used_weight_1m = used
    await broker.account()
    assert ip_weight().used() == used


async def test_income_is_read_at_start_up_then_every_30_minutes_while_our_fills_count_at_once(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    now = [1000.0]
    broker.shared.clock = lambda: now[0]
    assert await broker.realized_pnl_since("BTCUSDT", 0) == 0   # start-up: the baseline is read (empty day)
    assert income_reads(fake) == 1

    await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.010"), "bot1-t1-entry", Decimal("50000")))
    await broker.protect("BTCUSDT", "LONG", Decimal("48500.0"), Decimal("53000.0"), "bot1-t1-sl", "bot1-t1-tp")
    assert await broker.realized_pnl_since("BTCUSDT", 0) == Decimal("-0.25")   # our entry fee (0.01 × 50000 × 0.0005)

    fake.set_mark_price("BTCUSDT", "48400")   # the stop fires on the exchange
    record = await broker.closed_trade("BTCUSDT", "LONG", 0)   # the cycle books it when the position is gone
    assert record is not None and record.realized_pnl == Decimal("-16.492")
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.010"))   # by hand, at 48400: fee 0.242, not ours
    for minutes in (5, 15, 29):   # ticks inside 30 minutes: the booking counts, no income read
        now[0] = 1000.0 + minutes * MINUTE
        assert await broker.realized_pnl_since("BTCUSDT", 0) == Decimal("-16.492")
    assert income_reads(fake) == 1

    now[0] = 1000.0 + 30 * MINUTE + 1   # due, and the IP weight is low: refreshed, the hand trade appears
    await report_weight(fake, broker, 100)
    assert await broker.realized_pnl_since("BTCUSDT", 0) == Decimal("-16.492") - Decimal("0.242")
    assert income_reads(fake) == 2
    assert await broker.realized_pnl_since("ETHUSDT", 0) == 0   # one read serves every symbol of the account
    assert income_reads(fake) == 2


async def test_a_due_refresh_waits_for_weight_and_is_forced_after_two_hours(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    now = [1000.0]
    broker.shared.clock = lambda: now[0]
    await broker.realized_pnl_since("BTCUSDT", 0)
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.010"))   # by hand at 50000: fee 0.25

    now[0] += 31 * MINUTE
    await report_weight(fake, broker, 1420)   # 1420 + 30 > 60 % of 2400: postponed
    assert await broker.realized_pnl_since("BTCUSDT", 0) == 0
    assert income_reads(fake) == 1

    now[0] += 60 * MINUTE   # still under the 2-hour maximum: still postponed
    await report_weight(fake, broker, 2000)
    assert await broker.realized_pnl_since("BTCUSDT", 0) == 0
    assert income_reads(fake) == 1

    now[0] += 30 * MINUTE   # 2 h 1 min since the baseline: refreshed whatever the weight
    await report_weight(fake, broker, 2000)
    assert await broker.realized_pnl_since("BTCUSDT", 0) == Decimal("-0.25")
    assert income_reads(fake) == 2


async def test_a_failed_refresh_keeps_the_baseline_until_two_hours_then_the_daily_pnl_is_unknown(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker
) -> None:
    now = [1000.0]
    broker.shared.clock = lambda: now[0]
    await broker.realized_pnl_since("BTCUSDT", 0)
    fake.fail_next("GET", INCOME, status=503, code=-1001, msg="Internal error", times=1000)

    now[0] += 45 * MINUTE   # due, weight low, the read fails: the old baseline still answers
    assert await broker.realized_pnl_since("BTCUSDT", 0) == 0

    now[0] += 80 * MINUTE   # past 2 hours and still unreadable: unknown, so the cycle opens nothing
    with pytest.raises(Unavailable, match="daily realised PnL unknown"):
        await broker.realized_pnl_since("BTCUSDT", 0)


def test_our_fills_count_once_whether_or_not_the_income_history_holds_them_yet() -> None:
    shared = AccountShared(clock=lambda: 0.0)
    fill = {"id": 7, "symbol": "BTCUSDT", "time": 2000, "realizedPnl": "-16", "commission": "0.242",
            "commissionAsset": "USDT"}
    shared.record_trades([fill])
    income = [{"symbol": "BTCUSDT", "incomeType": "REALIZED_PNL", "income": "-16", "asset": "USDT", "time": 2000,
               "tradeId": "7"},
              {"symbol": "BTCUSDT", "incomeType": "COMMISSION", "income": "-0.242", "asset": "USDT", "time": 2000,
               "tradeId": "7"}]
    shared.baseline = IncomeBaseline.of(0, 0.0, income)          # the income history holds fill 7
    assert shared.daily_pnl("BTCUSDT", 0) == Decimal("-16.242")
    shared.baseline = IncomeBaseline.of(0, 0.0, [])              # not indexed yet at read time
    assert shared.daily_pnl("BTCUSDT", 0) == Decimal("-16.242")
    assert shared.daily_pnl("BTCUSDT", 2001) == 0                # before the day began: not today's
