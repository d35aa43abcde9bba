"""Each safety rule on its own, with the numbers behind its decision."""

from __future__ import annotations

from decimal import Decimal as D

from services.executor.bot_config import validate_config
from services.executor.brokers.base import AccountSnapshot, ClosedTradeRecord, ExchangePosition
from services.executor.safety import (
    ConsecutiveLossesRule,
    DailyLossRule,
    PositionSizeRule,
    SafetyContext,
    first_trip,
)
from tests.executor.builders import config

ACCOUNT = AccountSnapshot(available_balance=D("9000"), wallet_balance=D("10000"))


def position(unrealized: str = "0", margin: str = "1000", quantity: str = "0.2", mark: str = "50000") -> ExchangePosition:
    return ExchangePosition("BTCUSDT", "LONG", D(quantity), D("50000"), D(mark), D(unrealized), 10, D(margin))


def trade(pnl: str, closed_at: int) -> ClosedTradeRecord:
    return ClosedTradeRecord("BTCUSDT", "LONG", D("1"), D("1"), D("1"), D(pnl), D("0"), "STOP_LOSS", 0, closed_at)


def context(*, daily: str = "0", pos: ExchangePosition | None = None, streak: int = 0,
            trades: tuple[ClosedTradeRecord, ...] = (), **overrides: object) -> SafetyContext:
    return SafetyContext(validate_config(config(max_daily_loss="100", **overrides)), ACCOUNT, pos, D(daily),
                         streak, trades)


def test_daily_loss_counts_realised_plus_unrealised():
    assert DailyLossRule().check(context(daily="-60", pos=position("-40"))) is None       # exactly -100: allowed
    trip = DailyLossRule().check(context(daily="-60", pos=position("-40.01")))
    assert trip is not None and trip.rule == "DAILY_LOSS" and trip.close_position and trip.pause_bot
    assert trip.details == {"dailyRealizedPnl": "-60", "unrealizedPnl": "-40.01", "dailyPnl": "-100.01",
                            "maxDailyLoss": "100"}


def test_daily_loss_with_an_unreadable_realised_pnl_still_trips_on_the_open_loss():
    unknown = SafetyContext(validate_config(config(max_daily_loss="100")), ACCOUNT, position("-150"), None, 0)
    trip = DailyLossRule().check(unknown)
    assert trip is not None and trip.close_position and "realised PnL unknown" in trip.message
    assert trip.details["dailyRealizedPnl"] == "unknown"
    quiet = SafetyContext(validate_config(config(max_daily_loss="100")), ACCOUNT, position("-50"), None, 0)
    assert DailyLossRule().check(quiet) is None


def test_daily_loss_without_position_uses_realised_only():
    assert DailyLossRule().check(context(daily="-100.5")) is not None
    assert DailyLossRule().check(context(daily="-99")) is None


def test_position_size_trips_on_oversize_margin_or_notional_cap():
    rule = PositionSizeRule()
    # 0.2 BTC entered at 50000 at leverage 10: margin 1000 = 10 % of the 10,000 wallet.
    assert rule.check(context(pos=position())) is None
    oversize = rule.check(context(pos=position(quantity="0.3")))                     # grown by hand: 1500
    assert oversize is not None and oversize.rule == "POSITION_SIZE" and not oversize.close_position
    assert oversize.details["allowedMargin"] == "1000" and oversize.details["margin"] == "1500"
    capped = rule.check(context(pos=position(), max_position_notional="5000"))     # 0.2 * 50000 = 10000
    assert capped is not None and capped.details["notional"] == "10000"


def test_position_size_is_judged_at_entry_not_on_mark_to_market_noise():
    rule = PositionSizeRule()
    # Sizing fills the cap exactly; a move of the mark, up or down, is no reason to pause the bot.
    for mark in ("50010", "51000", "60000", "40000"):
        assert rule.check(context(pos=position(mark=mark), max_position_notional="10000")) is None
        assert rule.check(context(pos=position(mark=mark, margin="1400"))) is None   # cross margin moving too
    # Rounding and fees within the stated 2 % tolerance; beyond it, a trip.
    assert rule.check(context(pos=position(quantity="0.2039"), max_position_notional="10000")) is None
    assert rule.check(context(pos=position(quantity="0.2041"), max_position_notional="10000")) is not None


def test_position_size_refuses_an_oversize_entry():
    settings = validate_config(config(max_position_notional="5000"))
    assert PositionSizeRule().check_entry(settings, ACCOUNT, D("900"), D("5000")) is None
    assert "above 900" in PositionSizeRule().check_entry(settings, ACCOUNT, D("901"), D("5000"))
    assert "cap" in PositionSizeRule().check_entry(settings, ACCOUNT, D("100"), D("5000.1"))


def test_consecutive_losses_include_trades_booked_this_cycle():
    rule = ConsecutiveLossesRule()
    assert rule.check(context(streak=2)) is None
    trip = rule.check(context(streak=2, trades=(trade("-5", 1),)))
    assert trip is not None and trip.pause_bot and not trip.close_position
    assert trip.details == {"consecutiveLosses": "3", "maxConsecutiveLosses": "3"}
    assert rule.check(context(streak=2, trades=(trade("-5", 1), trade("3", 2)))) is None   # a win resets
    assert rule.check(context(streak=9, max_consecutive_losses=0)) is None                 # 0 = off


def test_first_trip_checks_daily_loss_first():
    trip = first_trip(context(daily="-500", streak=5))
    assert trip is not None and trip.rule == "DAILY_LOSS"
