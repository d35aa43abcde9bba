"""What a bot's outcome writes: its ``botinstances`` update and its TradeLogs.

TradeLogs carry exactly the seed's fields (userId, botInstanceId, logType,
severity, action, message, data, createdAt). Nothing here formats a secret:
the inputs are bot documents without credentials and the services' answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tradebot.v1 import executor_pb2, strategy_pb2

from services.common.bot_documents import BotIdentity, BotStatisticsValues, StoredPosition
from services.common.position_documents import datetime_from_ms, position_to_document, side_name
from services.gateway.conversions import action_name, ai_to_document, analysis_to_document, signal_to_document

LOG_TYPES = ("TRADE", "ERROR", "ANALYSIS", "SAFETY", "SYSTEM")
SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
RELEASE_LEASE = {"lockOwner": "", "lockedUntil": ""}


def trade_log(
    identity: BotIdentity,
    created_at: datetime,
    log_type: str,
    severity: str,
    action: str,
    message: str,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "userId": identity.user_id,
        "botInstanceId": identity.instance_id,
        "logType": log_type if log_type in LOG_TYPES else "SYSTEM",
        "severity": severity if severity in SEVERITIES else "INFO",
        "action": action,
        "message": message,
        "data": data or {},
        "createdAt": created_at,
    }


def failure_update(error: str, now: datetime) -> dict[str, Any]:
    return {"$set": {"lastError": error, "lastRunAt": now, "updatedAt": now}, "$unset": RELEASE_LEASE}


def release_update() -> dict[str, Any]:
    return {"$unset": RELEASE_LEASE}


@dataclass(frozen=True)
class TradeTally:
    trades: int
    wins: int
    losses: int
    profit: float     # sum of winning trades' net PnL
    loss: float       # sum of losing trades' net PnL, as a positive number
    consecutive_losses: int


def tally(previous_streak: int, closed: Sequence[executor_pb2.ClosedTrade]) -> TradeTally:
    wins = losses = 0
    profit = loss = Decimal(0)
    streak = previous_streak
    for trade in sorted(closed, key=lambda item: item.close_time_ms):
        pnl = _decimal(trade.realized_pnl)
        if pnl > 0:
            wins += 1
            profit += pnl
            streak = 0
        else:
            losses += 1
            loss += -pnl
            streak += 1
    return TradeTally(len(closed), wins, losses, float(profit), float(loss), streak)


def statistics_update(statistics: BotStatisticsValues, closed: Sequence[executor_pb2.ClosedTrade]) -> dict[str, Any]:
    """$inc for the counters (safe against a concurrent writer), $set for what $inc cannot derive.

    winRate and avgProfit are recomputed from the values read at the start of
    the tick plus this tick's trades; the lease guarantees no other tick
    booked trades for this bot in between.
    """
    if not closed:
        return {}
    this_tick = tally(statistics.consecutive_losses, closed)
    total = statistics.total_trades + this_tick.trades
    wins = statistics.winning_trades + this_tick.wins
    total_profit = statistics.total_profit + this_tick.profit
    total_loss = statistics.total_loss + this_tick.loss
    derived = {
        "consecutiveLosses": this_tick.consecutive_losses,
        "winRate": round(wins / total * 100, 2) if total else 0.0,
        "avgProfit": round((total_profit - total_loss) / total, 8) if total else 0.0,
    }
    if not statistics.stored_as_object:
        # statistics is missing or null in the document: $inc on its paths would fail.
        return {
            "$set": {
                "statistics": {
                    "totalTrades": total,
                    "winningTrades": wins,
                    "losingTrades": statistics.losing_trades + this_tick.losses,
                    "totalProfit": total_profit,
                    "totalLoss": total_loss,
                    **derived,
                }
            }
        }
    return {
        "$inc": {
            "statistics.totalTrades": this_tick.trades,
            "statistics.winningTrades": this_tick.wins,
            "statistics.losingTrades": this_tick.losses,
            "statistics.totalProfit": this_tick.profit,
            "statistics.totalLoss": this_tick.loss,
        },
        "$set": {f"statistics.{key}": value for key, value in derived.items()},
    }


def opening_signal(analysis: strategy_pb2.AnalyzeResponse, cycle: executor_pb2.RunCycleResponse,
                   now: datetime) -> dict[str, Any]:
    """What opened a position: the strategy, its confidence, the AI's verdict (or its absence), the stop."""
    ai = analysis.ai
    return {
        "strategy": analysis.strategy_name,
        "action": action_name(analysis.signal.action),
        "confidence": analysis.signal.confidence,
        "technicalConfidence": analysis.technical_signal.confidence,
        "aiRequested": ai.requested,
        "aiVerdict": action_name(ai.signal.action) if ai.used else None,
        "stopLoss": cycle.order.stop_loss or None,
        "analysisAt": now,
    }


def _opened_this_cycle(cycle: executor_pb2.RunCycleResponse) -> bool:
    return cycle.order.placed or any(event.log_type == "TRADE" and event.action.startswith("OPEN_")
                                     for event in cycle.events)


def position_document(stored: StoredPosition | None, analysis: strategy_pb2.AnalyzeResponse,
                      cycle: executor_pb2.RunCycleResponse, now: datetime) -> dict[str, Any] | None:
    """``currentPosition`` after the cycle, with the signal that opened it: this tick's when it entered,
    else the stored one while the position is the same (same side, same opening time when known)."""
    if not cycle.has_position:
        return None
    document = position_to_document(cycle.position)
    if _opened_this_cycle(cycle):
        document["openingSignal"] = opening_signal(analysis, cycle, now)
    elif stored is not None and stored.opening_signal is not None and stored.side == document["side"] and (
            stored.open_time is None or document["openTime"] is None
            or abs((stored.open_time - document["openTime"]).total_seconds()) < 1):
        document["openingSignal"] = stored.opening_signal
    return document


def cycle_update(
    statistics: BotStatisticsValues,
    analysis: strategy_pb2.AnalyzeResponse,
    cycle: executor_pb2.RunCycleResponse,
    now: datetime,
    stored: StoredPosition | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "lastAnalysis": analysis_to_document(analysis, now),
        "currentPosition": position_document(stored, analysis, cycle, now),
        "lastError": cycle_error(cycle),
        "lastRunAt": now,
        "updatedAt": now,
    }
    if cycle.safety.tripped and cycle.safety.pause_bot:
        fields["status"] = "PAUSED"
    update: dict[str, Any] = {"$set": fields, "$unset": RELEASE_LEASE}
    stats = statistics_update(statistics, cycle.closed_trades)
    if "$inc" in stats:
        update["$inc"] = stats["$inc"]
    fields.update(stats.get("$set", {}))
    return update


def safety_error(safety: executor_pb2.SafetyVerdict) -> str | None:
    if not safety.tripped:
        return None
    verdict = "paused" if safety.pause_bot else "stopped"
    return f"Safety rule {safety.rule or 'UNKNOWN'} {verdict} the bot: {safety.message}"


def cycle_error(cycle: executor_pb2.RunCycleResponse) -> str | None:
    """What the bot's owner must see after a cycle that ran: a safety stop, else the first
    ERROR/CRITICAL event (an order the exchange rejected, say); None when all went well."""
    tripped = safety_error(cycle.safety)
    if tripped is not None:
        return tripped
    for event in cycle.events:
        if event.severity in ("ERROR", "CRITICAL"):
            return event.message
    return None


def cycle_logs(
    identity: BotIdentity,
    interval: str,
    price: str,
    analysis: strategy_pb2.AnalyzeResponse,
    cycle: executor_pb2.RunCycleResponse,
    now: datetime,
    stored: StoredPosition | None = None,
) -> list[dict[str, Any]]:
    logs = [analysis_log(identity, interval, price, analysis, now, decision=cycle.decision)]
    logs.extend(ai_fallback_logs(identity, analysis, now))
    # The executor's own TRADE/SAFETY events are the record when it sends them; the
    # gateway writes its own from the structured fields only when it does not.
    executor_trades = any(event.log_type == "TRADE" for event in cycle.events)
    executor_safety = any(event.log_type == "SAFETY" for event in cycle.events)
    if cycle.order.placed and not executor_trades:
        order = cycle.order
        side = side_name(order.side) or "UNKNOWN"
        logs.append(
            trade_log(
                identity, now, "TRADE", "INFO", f"OPEN_{side}",
                f"Opened {side} {order.quantity} {identity.symbol} at {order.fill_price} "
                f"(stop-loss {order.stop_loss}, take-profit {order.take_profit})",
                {
                    "clientOrderId": order.client_order_id,
                    "exchangeOrderId": order.exchange_order_id,
                    "side": side,
                    "quantity": order.quantity,
                    "fillPrice": order.fill_price,
                    "stopLoss": order.stop_loss,
                    "takeProfit": order.take_profit,
                    "fee": order.fee,
                    "stopLossOrderId": order.stop_loss_order_id,
                    "takeProfitOrderId": order.take_profit_order_id,
                },
            )
        )  # fmt: skip
    for trade in [] if executor_trades else cycle.closed_trades:
        side = side_name(trade.side) or "UNKNOWN"
        logs.append(
            trade_log(
                identity, now, "TRADE", "INFO", "CLOSE_POSITION",
                f"Closed {side} {trade.quantity} {trade.symbol} at {trade.exit_price} "
                f"({trade.reason}): net PnL {trade.realized_pnl}",
                {
                    "side": side,
                    "entryPrice": trade.entry_price,
                    "exitPrice": trade.exit_price,
                    "quantity": trade.quantity,
                    "realizedPnl": trade.realized_pnl,
                    "fees": trade.fees,
                    "reason": trade.reason,
                    "openTime": datetime_from_ms(trade.open_time_ms),
                    "closeTime": datetime_from_ms(trade.close_time_ms),
                    # The trade closed is the stored position: link it to the signal that opened it.
                    **({"openingSignal": stored.opening_signal}
                       if stored is not None and stored.opening_signal is not None else {}),
                },
            )
        )  # fmt: skip
    if cycle.safety.tripped and not executor_safety:
        safety = cycle.safety
        logs.append(
            trade_log(
                identity, now, "SAFETY", "CRITICAL", "EMERGENCY_STOP",
                safety_error(safety) or "",
                {
                    "rule": safety.rule,
                    "details": dict(safety.details),
                    "positionClosed": safety.position_closed,
                    "botPaused": safety.pause_bot,
                },
            )
        )  # fmt: skip
    for event in cycle.events:
        logs.append(trade_log(identity, now, event.log_type, event.severity, event.action, event.message, dict(event.data)))
    return logs


def analysis_log(
    identity: BotIdentity,
    interval: str,
    price: str,
    analysis: strategy_pb2.AnalyzeResponse,
    now: datetime,
    *,
    decision: str = "",
) -> dict[str, Any]:
    signal = analysis.signal
    action = action_name(signal.action)
    data: dict[str, Any] = {
        "strategy": analysis.strategy_name,
        "interval": interval,
        "price": price,
        "signal": signal_to_document(signal),
        "technicalSignal": signal_to_document(analysis.technical_signal),
        "indicators": dict(analysis.indicators),
        "trend": {"direction": analysis.trend.direction, "strength": analysis.trend.strength},
        "ai": ai_to_document(analysis.ai),
        "lastCandleOpenTime": datetime_from_ms(analysis.last_candle_open_time_ms),
    }
    if decision:
        data["decision"] = decision
    return trade_log(
        identity, now, "ANALYSIS", "INFO", action,
        f"{analysis.strategy_name or 'Strategy'}: {action} with {signal.confidence:.1f}% confidence. {signal.reason}".strip(),
        data,
    )  # fmt: skip


def ai_fallback_logs(identity: BotIdentity, analysis: strategy_pb2.AnalyzeResponse, now: datetime) -> list[dict[str, Any]]:
    ai = analysis.ai
    if not ai.requested or ai.used or not ai.fallback_reason:
        return []
    return [
        trade_log(
            identity, now, "SYSTEM", "WARNING", "AI_FALLBACK",
            f"AI confirmation unavailable, signal from technical indicators only: {ai.fallback_reason}",
            {"fallbackReason": ai.fallback_reason, "model": ai.model},
        )
    ]  # fmt: skip


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return value if value.is_finite() else Decimal(0)

