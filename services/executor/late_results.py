"""A protected entry that finished after its caller had gone still reaches MongoDB.

The gateway writes each bot's result when RunCycle answers. When the tick's
deadline cancels the call while an entry is between its fill and its stop,
the entry is finished anyway (cycle.py) and nobody is left to record it: the
executor writes the position into the bot's ``currentPosition`` and the trade
and its events into ``tradelogs`` itself, so the next tick monitors a known
position and the user sees what happened.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from tradebot.v1 import executor_pb2

from services.common.position_documents import position_to_document, side_name

log = logging.getLogger(__name__)

LATE = "recorded by the executor: the tick's deadline passed before the cycle could answer"


class LateResults:
    def __init__(self, db: AsyncDatabase) -> None:
        self._bots = db["botinstances"]
        self._logs = db["tradelogs"]

    async def record(self, bot_instance_id: str, user_id: str, response: executor_pb2.RunCycleResponse) -> None:
        now = datetime.now(UTC)
        bot, user = ObjectId(bot_instance_id), ObjectId(user_id)
        position = position_to_document(response.position) if response.has_position else None
        await self._bots.update_one({"_id": bot}, {"$set": {"currentPosition": position, "updatedAt": now}})
        logs = [self._log(user, bot, now, event.log_type, event.severity, event.action, f"{event.message} ({LATE})",
                          dict(event.data)) for event in response.events]
        order = response.order
        if order.placed:
            side = side_name(order.side) or "UNKNOWN"
            logs.insert(0, self._log(
                user, bot, now, "TRADE", "INFO", f"OPEN_{side}",
                f"Opened {side} {order.quantity} at {order.fill_price} (stop-loss {order.stop_loss}, take-profit "
                f"{order.take_profit}; {LATE})",
                {"clientOrderId": order.client_order_id, "exchangeOrderId": order.exchange_order_id, "side": side,
                 "quantity": order.quantity, "fillPrice": order.fill_price, "stopLoss": order.stop_loss,
                 "takeProfit": order.take_profit, "stopLossOrderId": order.stop_loss_order_id,
                 "decision": response.decision},
            ))
        if logs:
            await self._logs.insert_many(logs)
        log.warning("late cycle result recorded", extra={"botInstanceId": bot_instance_id,
                                                         "hasPosition": response.has_position,
                                                         "decision": response.decision})

    @staticmethod
    def _log(user: ObjectId, bot: ObjectId, now: datetime, log_type: str, severity: str, action: str, message: str,
             data: dict[str, Any]) -> dict[str, Any]:
        return {"_id": ObjectId(), "userId": user, "botInstanceId": bot, "logType": log_type, "severity": severity,
                "action": action, "message": message, "data": data, "createdAt": now}
