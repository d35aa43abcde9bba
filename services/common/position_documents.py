"""Writing a position into ``botinstances.currentPosition``: one shape for every writer.

The gateway writes it after each tick; the executor writes it itself when a
protected entry finished after its caller had gone (the tick's deadline).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tradebot.v1 import common_pb2, executor_pb2

SIDES = {common_pb2.SIDE_LONG: "LONG", common_pb2.SIDE_SHORT: "SHORT"}


def side_name(side: int) -> str | None:
    return SIDES.get(side)


def to_number(text: str) -> float | None:
    """A decimal string from the wire as the float the Next.js app displays (None when empty/invalid)."""
    if not text:
        return None
    try:
        value = float(Decimal(text))
    except (InvalidOperation, ValueError):
        return None
    return value if math.isfinite(value) else None


def datetime_from_ms(milliseconds: int) -> datetime | None:
    return datetime.fromtimestamp(milliseconds / 1000, UTC) if milliseconds > 0 else None


def position_to_document(position: executor_pb2.Position) -> dict[str, Any]:
    """The seed's ``currentPosition`` shape (numbers for the app; the executor keeps exact values)."""
    return {
        "symbol": position.symbol,
        "side": side_name(position.side),
        "entryPrice": to_number(position.entry_price),
        "quantity": to_number(position.quantity),
        "leverage": position.leverage,
        "stopLoss": to_number(position.stop_loss),
        "takeProfit": to_number(position.take_profit),
        "pnl": to_number(position.pnl) or 0.0,
        "pnlPercent": to_number(position.pnl_percent) or 0.0,
        "openTime": datetime_from_ms(position.open_time_ms),
    }
