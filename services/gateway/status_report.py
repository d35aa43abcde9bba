"""The monitoring report behind ``tradebot status`` and the gateway's ``GET /api/status``.

``build_status_report(db)`` takes an async pymongo database (the gateway's)
and returns a JSON-ready dict:

- ``botsByStatus``: count per status (ACTIVE, PAUSED, STOPPED, ERROR, ...)
- ``openPositions``: every bot with a ``currentPosition``, its unrealised PnL
- ``realizedPnlToday``: per bot, the sum of ``data.realizedPnl`` of TRADE logs since 00:00 UTC
- ``tradeLogsLast24h``: ANALYSIS entries (logType), ERROR and CRITICAL entries (severity)
- ``tradingControls``: the operator's halts (fleet, per user; who, why, since when, flatten) and the fleet
  circuit breaker (open or not, cause, evidence, until when), from ``tradingcontrols``
- ``lastTick``: from the latest ``ticks`` document ({tickId, startedAt, finishedAt, outcome,
  summary}) when the gateway records ticks; else the time of the newest ANALYSIS/ERROR TradeLog
  or bot ``lastRunAt`` (every tick writes those), outcome unknown.

Amounts are decimal strings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.common.stored_values import as_utc, to_decimal
from services.common.trading_controls import COLLECTION as TRADING_CONTROLS, describe_halts

_POSITION_FIELDS = {"botName": 1, "symbol": 1, "status": 1, "currentPosition": 1}
# Where a closed trade's realised PnL may sit in a TRADE log's data, most specific first.
_PNL_KEYS = ("realizedPnl", "realisedPnl", "realized_pnl", "pnl")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


async def bots_by_status(db: AsyncDatabase) -> dict[str, int]:
    counts: dict[str, int] = {}
    async for row in await db.botinstances.aggregate([{"$group": {"_id": "$status", "count": {"$sum": 1}}}]):
        counts[str(row["_id"])] = int(row["count"])
    return dict(sorted(counts.items()))


async def _open_positions(db: AsyncDatabase) -> list[dict[str, Any]]:
    positions = []
    cursor = db.botinstances.find({"currentPosition": {"$type": "object"}}, _POSITION_FIELDS).sort("createdAt", 1)
    async for bot in cursor:
        position = bot["currentPosition"]
        positions.append({
            "botInstanceId": str(bot["_id"]),
            "botName": bot.get("botName"),
            "status": bot.get("status"),
            "symbol": position.get("symbol", bot.get("symbol")),
            "side": position.get("side"),
            "quantity": _amount(to_decimal(position.get("quantity"))),
            "entryPrice": _amount(to_decimal(position.get("entryPrice"))),
            "pnl": _amount(to_decimal(position.get("pnl"))),
            "pnlPercent": _amount(to_decimal(position.get("pnlPercent"))),
            "openTime": _iso(as_utc(position.get("openTime"))),
        })
    return positions


def _realized_pnl(data: Any) -> Decimal | None:
    if not isinstance(data, dict):
        return None
    for key in _PNL_KEYS:
        value = to_decimal(data.get(key))
        if value is not None:
            return value
    return None


async def _realized_today(db: AsyncDatabase, since: datetime) -> list[dict[str, Any]]:
    per_bot: dict[str, dict[str, Any]] = {}
    bot_ids: list[Any] = []
    cursor = db.tradelogs.find({"logType": "TRADE", "createdAt": {"$gte": since}}, {"botInstanceId": 1, "data": 1})
    async for entry in cursor:
        pnl = _realized_pnl(entry.get("data"))
        if pnl is None:
            continue  # an opening trade: nothing realised yet
        key = str(entry.get("botInstanceId"))
        if key not in per_bot:
            bot_ids.append(entry.get("botInstanceId"))
            per_bot[key] = {"botInstanceId": key, "botName": None, "realizedPnl": Decimal(0), "closedTrades": 0}
        per_bot[key]["realizedPnl"] += pnl
        per_bot[key]["closedTrades"] += 1
    async for bot in db.botinstances.find({"_id": {"$in": bot_ids}}, {"botName": 1}):
        per_bot[str(bot["_id"])]["botName"] = bot.get("botName")
    rows = sorted(per_bot.values(), key=lambda row: row["botInstanceId"])
    return [{**row, "realizedPnl": _amount(row["realizedPnl"])} for row in rows]


async def _log_counts(db: AsyncDatabase, since: datetime) -> dict[str, int]:
    window = {"createdAt": {"$gte": since}}
    return {
        "ANALYSIS": await db.tradelogs.count_documents({**window, "logType": "ANALYSIS"}),
        "ERROR": await db.tradelogs.count_documents({**window, "severity": "ERROR"}),
        "CRITICAL": await db.tradelogs.count_documents({**window, "severity": "CRITICAL"}),
    }


async def _last_tick(db: AsyncDatabase) -> dict[str, Any] | None:
    tick = await db.ticks.find_one({}, sort=[("finishedAt", -1)])
    if tick is not None:
        return {
            "at": _iso(as_utc(tick.get("finishedAt") or tick.get("startedAt"))),
            "tickId": tick.get("tickId"),
            "outcome": tick.get("outcome") or ("success" if tick.get("success") else "failed"),
            "summary": tick.get("summary"),
            "source": "ticks",
        }
    latest = await db.tradelogs.find_one({"logType": {"$in": ["ANALYSIS", "ERROR"]}}, sort=[("createdAt", -1)])
    last_run = await db.botinstances.find_one({"lastRunAt": {"$type": "date"}}, {"lastRunAt": 1},
                                              sort=[("lastRunAt", -1)])
    moments = [moment for moment in (as_utc(latest.get("createdAt")) if latest else None,
                                     as_utc(last_run.get("lastRunAt")) if last_run else None) if moment is not None]
    if not moments:
        return None
    # Without a ticks record the outcome is unknown: the newest per-bot write is when a tick last ran.
    return {"at": _iso(max(moments)), "tickId": None, "outcome": None, "summary": None, "source": "tradelogs"}


async def trading_controls(db: AsyncDatabase, now: datetime) -> dict[str, Any]:
    return describe_halts(await db[TRADING_CONTROLS].find({}).to_list(), now)


async def build_status_report(db: AsyncDatabase, now: datetime | None = None) -> dict[str, Any]:
    current = now or datetime.now(UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "generatedAt": _iso(current),
        "tradingControls": await trading_controls(db, current),
        "botsByStatus": await bots_by_status(db),
        "openPositions": await _open_positions(db),
        "realizedPnlToday": await _realized_today(db, midnight),
        "tradeLogsLast24h": await _log_counts(db, current - timedelta(hours=24)),
        "lastTick": await _last_tick(db),
    }
