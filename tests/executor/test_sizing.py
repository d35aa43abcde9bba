"""Sizing and protective prices: Decimal, step/tick rounding, minimums, safe-side rounding; client ids."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from services.executor.bot_config import validate_config
from services.executor.client_ids import CLIENT_ID_PATTERN, OrderPurpose, client_order_id
from services.executor.sizing import EntrySize, NoEntry, SymbolRules, protective_prices, size_entry
from tests.executor.builders import config

RULES = SymbolRules(tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001"), max_qty=D("120"),
                    min_notional=D("100"))


def settings(**overrides: object):
    return validate_config(config(**overrides))


def test_quantity_is_margin_times_leverage_over_price_rounded_down_to_the_step():
    # 10 % of 1234.56 = 123.456 margin, x 10 = 1234.56 notional, / 43210.7 = 0.028570... -> 0.028
    size = size_entry(D("1234.56"), D("43210.7"), settings(), RULES)
    assert isinstance(size, EntrySize)
    assert size.quantity == D("0.028")
    assert size.notional == D("0.028") * D("43210.7")
    assert size.margin == size.notional / 10


def test_market_lot_size_step_is_used_when_present():
    rules = SymbolRules.from_filters("0.1", "0.001", "0.001", "1000", "5", market_step_size="0.01")
    size = size_entry(D("10000"), D("30000"), settings(), rules)   # 10000 / 30000 = 0.3333
    assert isinstance(size, EntrySize) and size.quantity == D("0.33")


def test_too_small_for_min_qty_or_min_notional_gives_a_reason_not_an_order():
    tiny = size_entry(D("1"), D("50000"), settings(), RULES)          # 1 USDT notional -> 0.00002 BTC
    assert isinstance(tiny, NoEntry) and "below the minimum 0.001" in tiny.reason
    small = size_entry(D("60"), D("50000"), settings(), RULES)       # 60 notional -> 0.001 BTC = 50 USDT
    assert isinstance(small, NoEntry) and "notional 50 USDT below the minimum 100 USDT" in small.reason


def test_notional_is_capped_by_max_position_notional():
    size = size_entry(D("10000"), D("50000"), settings(max_position_notional="2500"), RULES)
    assert isinstance(size, EntrySize) and size.quantity == D("0.05") and size.notional == D("2500")


def test_full_balance_position_leaves_room_for_the_fee():
    size = size_entry(D("1000"), D("100"), settings(position_size_percent="100", leverage=1), RULES)
    assert isinstance(size, EntrySize)
    assert size.margin + size.notional * D("0.0005") <= D("1000")


def test_long_stop_rounds_up_and_target_down_toward_the_entry():
    stop, target = protective_prices("LONG", D("50000.05"), D("3"), D("6"), D("0.1"))
    # raw stop 48500.0485 -> 48500.1 (never further than 3 %); raw target 53000.053 -> 53000.0
    assert (stop, target) == (D("48500.1"), D("53000.0"))


def test_short_stop_rounds_down_and_target_up_toward_the_entry():
    stop, target = protective_prices("SHORT", D("50000.05"), D("3"), D("6"), D("0.1"))
    # raw stop 51500.0515 -> 51500.0; raw target 47000.047 -> 47000.1
    assert (stop, target) == (D("51500.0"), D("47000.1"))


def test_a_stop_never_rounds_onto_the_entry():
    stop, _ = protective_prices("LONG", D("100"), D("0.01"), D("1"), D("1"))   # raw 99.99 would round up to 100
    assert stop == D("99")


@pytest.mark.parametrize("overrides, field", [
    ({"leverage": 0}, "leverage"), ({"leverage": 126}, "leverage"),
    ({"stop_loss_percent": "0"}, "stop_loss_percent"), ({"stop_loss_percent": "-1"}, "stop_loss_percent"),
    ({"position_size_percent": "100.5"}, "position_size_percent"),
    ({"take_profit_percent": "abc"}, "take_profit_percent"),
    ({"confidence_threshold": 101.0}, "confidence_threshold"),
    ({"max_daily_loss": "0"}, "max_daily_loss"),
])
def test_out_of_range_config_is_rejected(overrides, field):
    from services.common.errors import InvalidArgument
    with pytest.raises(InvalidArgument, match=field):
        settings(**overrides)


def test_client_ids_are_deterministic_and_fit_binance_format():
    entry = client_order_id("6650f0f0f0f0f0f0f0f0f0f0", "2026-11-25T15:00:00Z", OrderPurpose.ENTRY)
    assert entry == client_order_id("6650f0f0f0f0f0f0f0f0f0f0", "2026-11-25T15:00:00Z", OrderPurpose.ENTRY)
    assert entry != client_order_id("6650f0f0f0f0f0f0f0f0f0f0", "2026-11-25T15:05:00Z", OrderPurpose.ENTRY)
    assert entry != client_order_id("6650f0f0f0f0f0f0f0f0f0f1", "2026-11-25T15:00:00Z", OrderPurpose.ENTRY)
    for purpose in OrderPurpose:
        cid = client_order_id("bot", "tick", purpose)
        assert CLIENT_ID_PATTERN.match(cid) and cid.endswith(f"-{purpose.value}") and cid.startswith("tb-")


from hypothesis import given, settings as hypothesis_settings, strategies as st  # noqa: E402

_money = st.decimals(min_value=D("0.01"), max_value=D("1000000"), places=2)
_price = st.decimals(min_value=D("0.0001"), max_value=D("200000"), places=4)
_percent = st.decimals(min_value=D("0.01"), max_value=D("100"), places=2)
_steps = st.sampled_from([D("1"), D("0.1"), D("0.001"), D("0.00001")])


@hypothesis_settings(max_examples=200, deadline=None)
# Up to 90x: beyond it no stop distance (at least 0.05 %) fires before liquidation, so no config exists.
@given(balance=_money, price=_price, percent=_percent, leverage=st.integers(1, 90), step=_steps)
def test_any_entry_is_on_the_step_and_within_its_share_of_the_balance(balance, price, percent, leverage, step):
    rules = SymbolRules(tick_size=D("0.0001"), step_size=step, min_qty=step, max_qty=None, min_notional=D("5"))
    size = size_entry(balance, price, settings(position_size_percent=str(percent), leverage=leverage,
                                               stop_loss_percent="0.05"), rules)
    if isinstance(size, EntrySize):
        assert size.quantity % step == 0 and size.quantity >= step
        assert size.margin <= balance * percent / 100
        assert size.notional >= D("5")
    else:
        assert "too small" in size.reason


@hypothesis_settings(max_examples=200, deadline=None)
@given(fill=_price, stop_pct=_percent, take_pct=_percent, tick=st.sampled_from([D("0.0001"), D("0.01"), D("0.1")]))
def test_stops_are_never_further_than_configured(fill, stop_pct, take_pct, tick):
    fill = max(fill, tick * 10)
    stop, target = protective_prices("LONG", fill, stop_pct, take_pct, tick)
    assert stop % tick == 0 and target % tick == 0
    assert tick <= stop < fill < target
    # Never further than configured, unless the configured distance is under a tick: then one tick away.
    assert stop >= min(fill * (1 - stop_pct / 100), fill - 2 * tick)
    assert target <= max(fill * (1 + take_pct / 100), fill + 2 * tick)
    stop, target = protective_prices("SHORT", fill, stop_pct, take_pct, tick)
    assert target < fill < stop
    assert stop <= max(fill * (1 + stop_pct / 100), fill + 2 * tick)
