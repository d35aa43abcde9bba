"""Between stored documents and the proto messages: one place for every mapping."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tradebot.v1 import common_pb2, executor_pb2, strategy_pb2

from services.common.decimals import format_decimal
from services.gateway.documents import BotConfigValues, BotStatisticsValues, StoredPosition

ACTIONS = {common_pb2.ACTION_BUY: "BUY", common_pb2.ACTION_SELL: "SELL", common_pb2.ACTION_HOLD: "HOLD"}
SIDES = {common_pb2.SIDE_LONG: "LONG", common_pb2.SIDE_SHORT: "SHORT"}
_SIDE_VALUES = {"LONG": common_pb2.SIDE_LONG, "SHORT": common_pb2.SIDE_SHORT}


def action_name(action: int) -> str:
    return ACTIONS.get(action, "HOLD")


def side_name(side: int) -> str | None:
    return SIDES.get(side)


def config_to_proto(config: BotConfigValues) -> executor_pb2.BotConfig:
    return executor_pb2.BotConfig(
        leverage=config.leverage,
        stop_loss_percent=format_decimal(config.stop_loss_percent),
        take_profit_percent=format_decimal(config.take_profit_percent),
        position_size_percent=format_decimal(config.position_size_percent),
        max_daily_loss=format_decimal(config.max_daily_loss),
        confidence_threshold=config.confidence_threshold,
        max_consecutive_losses=config.max_consecutive_losses,
        max_position_notional=(
            "" if config.max_position_notional is None else format_decimal(config.max_position_notional)
        ),
        interval=config.interval,
        margin_type=config.margin_type,
    )


def statistics_to_proto(statistics: BotStatisticsValues) -> executor_pb2.BotStatistics:
    return executor_pb2.BotStatistics(
        total_trades=statistics.total_trades,
        winning_trades=statistics.winning_trades,
        losing_trades=statistics.losing_trades,
        total_profit=format_decimal(Decimal(repr(statistics.total_profit))),
        total_loss=format_decimal(Decimal(repr(statistics.total_loss))),
        consecutive_losses=statistics.consecutive_losses,
    )


def position_to_proto(position: StoredPosition) -> executor_pb2.Position:
    def text(value: Decimal | None) -> str:
        return "" if value is None else format_decimal(value)

    return executor_pb2.Position(
        symbol=position.symbol,
        side=_SIDE_VALUES[position.side],
        entry_price=text(position.entry_price),
        quantity=text(position.quantity),
        leverage=position.leverage,
        stop_loss=text(position.stop_loss),
        take_profit=text(position.take_profit),
        pnl=text(position.pnl),
        pnl_percent=text(position.pnl_percent),
        open_time_ms=0 if position.open_time is None else int(position.open_time.timestamp() * 1000),
    )


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
