"""Between stored documents and the proto messages: one place for every mapping."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tradebot.v1 import common_pb2, executor_pb2, strategy_pb2


ACTIONS = {common_pb2.ACTION_BUY: "BUY", common_pb2.ACTION_SELL: "SELL", common_pb2.ACTION_HOLD: "HOLD"}
SIDES = {common_pb2.SIDE_LONG: "LONG", common_pb2.SIDE_SHORT: "SHORT"}


def action_name(action: int) -> str:
    return ACTIONS.get(action, "HOLD")


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


def signal_to_document(signal: common_pb2.Signal) -> dict[str, Any]:
    return {"action": action_name(signal.action), "confidence": signal.confidence, "reason": signal.reason}


def analysis_to_document(analysis: strategy_pb2.AnalyzeResponse, timestamp: datetime) -> dict[str, Any]:
    """``lastAnalysis``: the seed's timestamp and signal, plus what explains the signal."""
    return {
        "timestamp": timestamp,
        "signal": signal_to_document(analysis.signal),
        "indicators": dict(analysis.indicators),
        "trend": {
            "direction": analysis.trend.direction,
            "strength": analysis.trend.strength,
            "rule": analysis.trend.rule,
        },
        "ai": ai_to_document(analysis.ai),
    }


def ai_to_document(ai: strategy_pb2.AiVerdict) -> dict[str, Any]:
    document: dict[str, Any] = {"requested": ai.requested, "used": ai.used, "cached": ai.cached}
    if ai.model:
        document["model"] = ai.model
    if ai.used:
        document["signal"] = signal_to_document(ai.signal)
    if ai.fallback_reason:
        document["fallbackReason"] = ai.fallback_reason
    return document
