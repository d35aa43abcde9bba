"""The live broker's account-wide read: one GET /fapi/v3/account serves balances and every position."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.common.errors import FailedPrecondition, Unavailable
from services.executor.binance.records import parse_account_positions

ACCOUNT = "/fapi/v3/account"


async def test_balances_and_all_open_positions_in_one_request(broker, fake):
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.01"))     # entry 50000
    fake.manual_order("ETHUSDT", "SELL", Decimal("2"))       # entry 3000
    fake.set_mark_price("BTCUSDT", "51234.5")
    fake.set_mark_price("ETHUSDT", "2987.25")
    fake.requests.clear()

    account = await broker.account()
    positions = await broker.positions()

    assert len(fake.reads(ACCOUNT)) == 1
    assert fake.reads("/fapi/v3/balance") == [] and fake.reads("/fapi/v3/positionRisk") == []
    assert set(positions) == {"BTCUSDT", "ETHUSDT"}
    btc, eth = positions["BTCUSDT"], positions["ETHUSDT"]
    # v3 account rows carry no prices: entry and mark are derived from notional and unrealised PnL.
    assert (btc.side, btc.quantity, btc.entry_price, btc.mark_price) == ("LONG", Decimal("0.01"), Decimal("50000"), Decimal("51234.5"))
    assert (eth.side, eth.quantity, eth.entry_price, eth.mark_price) == ("SHORT", Decimal("2"), Decimal("3000"), Decimal("2987.25"))
    assert btc.unrealized_pnl == Decimal("12.345") and eth.unrealized_pnl == Decimal("25.5")
    for symbol in ("BTCUSDT", "ETHUSDT"):   # the same view as the exact per-symbol positionRisk read
        assert positions[symbol] == await broker.position(symbol)
    # wallet 10000 − fees (0.25 + 3); margin 0.01×50000/20 + 2×3000/20 = 325 → available 9671.75
    assert account.wallet_balance == Decimal("9996.75")
    assert account.available_balance == Decimal("9671.75")


async def test_the_next_reads_ask_the_exchange_again(broker, fake):
    await broker.account()
    await broker.positions()
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.01"))
    assert set(await broker.positions()) == {"BTCUSDT"}   # a second positions read is not served stale
    assert len(fake.reads(ACCOUNT)) == 2


async def test_a_flat_account_is_an_empty_snapshot_but_a_failed_read_raises(broker, fake):
    assert await broker.positions() == {}
    fake.fail_next("GET", ACCOUNT, status=503, code=-1001, msg="Internal error", times=10)
    with pytest.raises(Unavailable):
        await broker.positions()


def test_hedge_mode_rows_are_refused():
    rows = [{"symbol": "BTCUSDT", "positionSide": "LONG", "positionAmt": "0.01", "unrealizedProfit": "1",
             "notional": "501", "initialMargin": "25.05", "isolatedWallet": "0"}]
    with pytest.raises(FailedPrecondition, match="hedge-mode"):
        parse_account_positions(rows, {})
