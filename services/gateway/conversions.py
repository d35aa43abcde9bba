"""Between stored documents and the proto messages: one place for every mapping."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tradebot.v1 import common_pb2, strategy_pb2

ACTIONS = {common_pb2.ACTION_BUY: "BUY", common_pb2.ACTION_SELL: "SELL", common_pb2.ACTION_HOLD: "HOLD"}


def action_name(action: int) -> str:
    return ACTIONS.get(action, "HOLD")


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
