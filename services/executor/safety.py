"""Safety rules: small, independent, each deciding from numbers it is given.

A rule that trips stops the bot for this cycle (no order); ``close_position``
says whether the cycle must also cancel the protective orders and close the
open position at market, ``pause_bot`` whether the gateway sets the bot PAUSED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from services.common.decimals import format_decimal
from services.executor.bot_config import BotSettings
from services.executor.brokers.base import AccountSnapshot, ClosedTradeRecord, ExchangePosition

HUNDRED = Decimal(100)
# An open position is judged at its entry price, not at the mark: sizing fills the cap exactly, so
# mark-to-market noise would trip it. The tolerance covers step rounding and fees, and the wallet shrinking
# by a few realised losses; a position grown by hand (a second entry, a manual order) is far beyond it.
POSITION_SIZE_TOLERANCE = Decimal("1.02")


@dataclass(frozen=True)
class SafetyContext:
    settings: BotSettings
    account: AccountSnapshot
    position: ExchangePosition | None
    daily_realized_pnl: Decimal | None          # today's (UTC) realised PnL for the bot's symbol; None: unreadable
    consecutive_losses: int                     # from the bot's statistics before this cycle
    trades_closed_this_cycle: Sequence[ClosedTradeRecord] = ()


@dataclass(frozen=True)
class Trip:
    rule: str
    message: str
    details: dict[str, str] = field(default_factory=dict)
    close_position: bool = False
    pause_bot: bool = True


class SafetyRule(Protocol):
    name: str

    def check(self, context: SafetyContext) -> Trip | None: ...


class DailyLossRule:
    """Today's realised PnL plus the open position's unrealised PnL below -maxDailyLoss: close and pause."""

    name = "DAILY_LOSS"

    def check(self, context: SafetyContext) -> Trip | None:
        unrealized = context.position.unrealized_pnl if context.position else Decimal(0)
        # Today's realised PnL unreadable: the open position's own loss can still trip the rule.
        realized = context.daily_realized_pnl if context.daily_realized_pnl is not None else Decimal(0)
        total = realized + unrealized
        limit = context.settings.max_daily_loss
        if total >= -limit:
            return None
        unknown = "" if context.daily_realized_pnl is not None else " (today's realised PnL unknown: the open loss alone)"
        return Trip(
            rule=self.name,
            message=f"daily loss {format_decimal(-total)} USDT exceeds the limit of {format_decimal(limit)} USDT{unknown}",
            details={
                "dailyRealizedPnl": format_decimal(realized) if context.daily_realized_pnl is not None else "unknown",
                "unrealizedPnl": format_decimal(unrealized),
                "dailyPnl": format_decimal(total),
                "maxDailyLoss": format_decimal(limit),
            },
            close_position=True,
        )


class PositionSizeRule:
    """An open position larger than the bot may hold: pause (a human decides about the position).

    Entries are sized within the limits (``check_entry``); an open position is judged on what it was
    entered at (quantity x entry price, margin at the bot's leverage), never on the mark, with a stated
    tolerance: a price move cannot trip it, a position grown beyond the bot's share does."""

    name = "POSITION_SIZE"

    def check(self, context: SafetyContext) -> Trip | None:
        position = context.position
        if position is None:
            return None
        settings = context.settings
        notional = position.quantity * position.entry_price
        cap = settings.max_position_notional
        if cap is not None and notional > cap * POSITION_SIZE_TOLERANCE:
            return Trip(
                rule=self.name,
                message=f"position notional at entry {format_decimal(notional)} USDT exceeds the cap of "
                f"{format_decimal(cap)} USDT",
                details={"notional": format_decimal(notional), "maxPositionNotional": format_decimal(cap)},
            )
        margin = notional / settings.leverage
        allowed = context.account.wallet_balance * settings.position_size_percent / HUNDRED
        if margin > allowed * POSITION_SIZE_TOLERANCE:
            return Trip(
                rule=self.name,
                message=f"position margin at entry {format_decimal(margin)} USDT exceeds "
                f"{format_decimal(settings.position_size_percent)}% of the balance ({format_decimal(allowed)} USDT)",
                details={
                    "margin": format_decimal(margin),
                    "walletBalance": format_decimal(context.account.wallet_balance),
                    "positionSizePercent": format_decimal(settings.position_size_percent),
                    "allowedMargin": format_decimal(allowed),
                },
            )
        return None

    def check_entry(self, settings: BotSettings, account: AccountSnapshot, margin: Decimal,
                    notional: Decimal) -> str | None:
        """Why a proposed entry must be refused, or None (a refusal is not a trip)."""
        allowed = account.available_balance * settings.position_size_percent / HUNDRED
        if margin > allowed:
            return (f"entry refused: margin {format_decimal(margin)} USDT above {format_decimal(allowed)} USDT "
                    f"({format_decimal(settings.position_size_percent)}% of the available balance)")
        cap = settings.max_position_notional
        if cap is not None and notional > cap:
            return (f"entry refused: notional {format_decimal(notional)} USDT above the cap of "
                    f"{format_decimal(cap)} USDT")
        return None


class ConsecutiveLossesRule:
    """maxConsecutiveLosses losing trades in a row (counting trades booked this cycle): pause."""

    name = "CONSECUTIVE_LOSSES"

    def check(self, context: SafetyContext) -> Trip | None:
        limit = context.settings.max_consecutive_losses
        if limit <= 0:
            return None
        streak = losing_streak(context.consecutive_losses, context.trades_closed_this_cycle)
        if streak < limit:
            return None
        return Trip(
            rule=self.name,
            message=f"{streak} consecutive losing trades reached the limit of {limit}",
            details={"consecutiveLosses": str(streak), "maxConsecutiveLosses": str(limit)},
        )


def losing_streak(previous: int, trades: Sequence[ClosedTradeRecord]) -> int:
    # A trade that made nothing net of fees counts as a loss, exactly as the
    # gateway's statistics do (records.tally): the streak the user sees in
    # statistics.consecutiveLosses is the one this rule enforces.
    streak = previous
    for trade in sorted(trades, key=lambda t: t.close_time_ms):
        streak = streak + 1 if trade.realized_pnl <= 0 else 0
    return streak


DEFAULT_RULES: tuple[SafetyRule, ...] = (DailyLossRule(), PositionSizeRule(), ConsecutiveLossesRule())


def first_trip(context: SafetyContext, rules: Sequence[SafetyRule] = DEFAULT_RULES) -> Trip | None:
    for rule in rules:
        trip = rule.check(context)
        if trip is not None:
            return trip
    return None
