"""Order size and protective prices, exact with Decimal and rounded to the symbol's filters.

Size: margin = positionSizePercent % of the available balance, notional =
margin x leverage (capped by max_position_notional, and so that margin plus
the entry fee fit the available balance), quantity = notional /
price rounded DOWN to the (market) step size. Too small for minQty or the
minimum notional: no order, with the reason, instead of an exchange rejection.

Protective prices are price distances from the entry FILL, rounded to the
tick size on the safe side: the stop is never further from the entry than
configured (long SL rounds up, short SL rounds down) and the take-profit
rounds toward the entry too (long TP down, short TP up).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from services.common.decimals import format_decimal, parse_decimal
from services.common.errors import InvalidArgument
from services.executor.bot_config import BotSettings
from services.executor.brokers.base import PositionSide

HUNDRED = Decimal(100)
# Room kept for the entry's taker fee so a 100 % position still fits the balance
# (Binance USDⓈ-M taker fees are at most 0.05 %; twice that is kept).
FEE_ALLOWANCE = Decimal("0.001")


@dataclass(frozen=True)
class SymbolRules:
    tick_size: Decimal
    step_size: Decimal          # MARKET_LOT_SIZE.stepSize when present, else LOT_SIZE
    min_qty: Decimal
    max_qty: Decimal | None
    min_notional: Decimal

    @classmethod
    def from_filters(cls, tick_size: str, step_size: str, min_qty: str, max_qty: str,
                     min_notional: str, market_step_size: str = "", market_max_qty: str = "") -> SymbolRules:
        tick = parse_decimal(tick_size, "market.filters.tick_size", positive=True)
        step = parse_decimal(market_step_size or step_size, "market.filters.step_size", positive=True)
        minimum = parse_decimal(min_qty or "0", "market.filters.min_qty")
        maximum = parse_decimal(market_max_qty or max_qty, "market.filters.max_qty", allow_empty=True)
        notional = parse_decimal(min_notional or "0", "market.filters.min_notional")
        assert tick is not None and step is not None and minimum is not None and notional is not None
        return cls(tick, step, minimum, maximum if maximum else None, notional)


@dataclass(frozen=True)
class EntrySize:
    quantity: Decimal
    notional: Decimal
    margin: Decimal


@dataclass(frozen=True)
class NoEntry:
    reason: str


def round_down(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def round_up(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def size_entry(available_balance: Decimal, price: Decimal, settings: BotSettings,
               rules: SymbolRules) -> EntrySize | NoEntry:
    if price <= 0:
        raise InvalidArgument("market.price must be greater than 0")
    if available_balance <= 0:
        return NoEntry(f"no available balance ({format_decimal(available_balance)} USDT)")
    margin_budget = available_balance * settings.position_size_percent / HUNDRED
    notional = margin_budget * settings.leverage
    affordable = available_balance / (Decimal(1) / settings.leverage + FEE_ALLOWANCE)
    notional = min(notional, affordable)
    capped = ""
    if settings.max_position_notional is not None and notional > settings.max_position_notional:
        notional = settings.max_position_notional
        capped = f" (capped at max_position_notional {format_decimal(notional)})"
    quantity = round_down(notional / price, rules.step_size)
    if rules.max_qty is not None and quantity > rules.max_qty:
        quantity = round_down(rules.max_qty, rules.step_size)
    if quantity <= 0 or quantity < rules.min_qty:
        return NoEntry(
            f"order too small: quantity {format_decimal(quantity)} below the minimum "
            f"{format_decimal(rules.min_qty)} (notional {format_decimal(notional)} USDT{capped})"
        )
    final_notional = quantity * price
    if final_notional < rules.min_notional:
        return NoEntry(
            f"order too small: notional {format_decimal(final_notional)} USDT below the minimum "
            f"{format_decimal(rules.min_notional)} USDT"
        )
    return EntrySize(quantity, final_notional, final_notional / settings.leverage)


def protective_prices(side: PositionSide, fill_price: Decimal, stop_loss_percent: Decimal,
                      take_profit_percent: Decimal, tick_size: Decimal) -> tuple[Decimal, Decimal]:
    """(stop_loss, take_profit) for a position filled at ``fill_price``."""
    sl_distance = fill_price * stop_loss_percent / HUNDRED
    tp_distance = fill_price * take_profit_percent / HUNDRED
    if side == "LONG":
        stop = round_up(fill_price - sl_distance, tick_size)
        take = round_down(fill_price + tp_distance, tick_size)
        # A stop rounded onto (or above) the entry would close at once: keep one tick below.
        stop = min(stop, round_down(fill_price, tick_size) - tick_size)
        take = max(take, round_up(fill_price, tick_size) + tick_size)
    else:
        stop = round_down(fill_price + sl_distance, tick_size)
        take = round_up(fill_price - tp_distance, tick_size)
        stop = max(stop, round_up(fill_price, tick_size) + tick_size)
        take = min(take, round_down(fill_price, tick_size) - tick_size)
    return max(stop, tick_size), max(take, tick_size)
