"""The response of a tick: one result per bot and the seed's summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

BotStatus = Literal["success", "failed", "skipped"]


@dataclass
class BotResult:
    bot_instance_id: str
    bot_name: str
    symbol: str
    status: BotStatus
    action: str | None = None
    confidence: float | None = None
    order_placed: bool = False
    has_position: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "botInstanceId": self.bot_instance_id,
            "botName": self.bot_name,
            "symbol": self.symbol,
            "status": self.status,
            "action": self.action,
            "confidence": self.confidence,
            "orderPlaced": self.order_placed,
            "hasPosition": self.has_position,
            "error": self.error,
        }


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: 2025-10-07T12:00:00.000Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def summarize(results: Sequence[BotResult]) -> dict[str, int]:
    return {
        "totalBots": len(results),
        "successful": sum(1 for result in results if result.status == "success"),
        "failed": sum(1 for result in results if result.status == "failed"),
        "withPositions": sum(1 for result in results if result.has_position),
        "skipped": sum(1 for result in results if result.status == "skipped"),
    }


def response_body(
    timestamp: datetime,
    results: Sequence[BotResult],
    *,
    message: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"success": error is None, "timestamp": iso_utc(timestamp)}
    if message is not None:
        body["message"] = message
    if error is not None:
        body["error"] = error
    body["summary"] = summarize(results)
    body["results"] = [result.to_json() for result in results]
    return body
