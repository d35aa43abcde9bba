"""Reading numbers and dates out of documents written by any app version, for display."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from services.common.stored_values import as_utc, to_decimal


def show_amount(value: Any, places: int = 2) -> str:
    number = to_decimal(value)
    if number is None:
        return "-"
    return f"{number:,.{places}f}"


def show_quantity(value: Any) -> str:
    number = to_decimal(value)
    return "-" if number is None else format(number.normalize(), "f")


def show_time(value: Any) -> str:
    moment = as_utc(value)
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def win_rate(statistics: dict[str, Any]) -> Decimal | None:
    """Percent of closed trades that won (None before the first closed trade)."""
    total = to_decimal(statistics.get("totalTrades")) or Decimal(0)
    if total <= 0:
        return None
    stored = to_decimal(statistics.get("winRate"))
    if stored is not None and stored > 0:
        return stored
    winning = to_decimal(statistics.get("winningTrades")) or Decimal(0)
    return winning * 100 / total


def net_profit(statistics: dict[str, Any]) -> Decimal | None:
    """Realised profit minus realised loss (the loss may be stored positive or negative)."""
    profit = to_decimal(statistics.get("totalProfit"))
    loss = to_decimal(statistics.get("totalLoss"))
    if profit is None and loss is None:
        return None
    return (profit or Decimal(0)) - abs(loss or Decimal(0))
