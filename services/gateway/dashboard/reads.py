"""What the dashboard shows, read from MongoDB: every query bounded by an index and a page size.

Each function returns JSON-ready data (the ``/dashboard/api/*`` endpoints send it as is; the pages render
it). Nothing here reads a secret: exchange connections are projected to their mode and state only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from services.analytics.calibration import calibrate, report_document
from services.analytics.trade_signals import has_stored_signal, join_trades
from services.common.bot_documents import PRESET_NAMES
from services.common.stored_values import as_utc, to_decimal

PAGE_SIZE = 50
TICKS_SHOWN = 48              # four hours of five-minute ticks
SIGNALS_SHOWN = 300           # a bot's last analyses on its price chart
TRADES_SHOWN = 500            # a bot's last closed trades in its PnL curve
ERRORS_SHOWN = 10
AUDIT_EVENTS_SHOWN = 50
CALIBRATION_TRADES = 5000     # the newest closed trades the dashboard calibrates on (the CLI reads them all)
BOT_STATUSES = ("ACTIVE", "PAUSED", "STOPPED", "ERROR")
PROTECTION_ACTIONS = ("STOP_LOSS_RESTORED", "STOP_LOSS_FAILED", "STOP_LOSS_NOT_PLACED", "UNPROTECTED_POSITION",
                      "EMERGENCY_STOP", "TAKE_PROFIT_MISSING", "TAKE_PROFIT_RESTORED")
BOT_FIELDS = {"userId": 1, "botId": 1, "botName": 1, "symbol": 1, "status": 1, "config": 1, "currentPosition": 1,
              "statistics": 1, "lastError": 1, "lastRunAt": 1, "exchangeConnectionId": 1}
OPEN_POSITION = {"currentPosition.side": {"$in": ["LONG", "SHORT"]}}

# The indexes behind every query below (created at start-up, best effort, by the gateway).
INDEXES: dict[str, list[IndexModel]] = {
    "botinstances": [
        IndexModel([("status", ASCENDING), ("_id", ASCENDING)], name="dashboard_status"),
        IndexModel([("botId", ASCENDING), ("_id", ASCENDING)], name="dashboard_strategy"),
        IndexModel([("symbol", ASCENDING), ("_id", ASCENDING)], name="dashboard_symbol"),
        IndexModel([("userId", ASCENDING), ("_id", ASCENDING)], name="dashboard_user"),
        IndexModel([("currentPosition.side", ASCENDING), ("_id", ASCENDING)], name="dashboard_positions"),
    ],
    "exchangeconnections": [
        IndexModel([("userId", ASCENDING), ("isActive", ASCENDING)], name="dashboard_user_connections"),
    ],
    "tradelogs": [
        IndexModel([("botInstanceId", ASCENDING), ("logType", ASCENDING), ("createdAt", DESCENDING)],
                   name="dashboard_bot_type_time"),
        IndexModel([("botInstanceId", ASCENDING), ("severity", ASCENDING), ("createdAt", DESCENDING)],
                   name="dashboard_bot_severity_time"),
        IndexModel([("severity", ASCENDING), ("createdAt", DESCENDING)], name="dashboard_severity_time"),
        IndexModel([("action", ASCENDING), ("createdAt", DESCENDING)], name="dashboard_action_time"),
    ],
}


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    for collection, indexes in INDEXES.items():
        await db[collection].create_indexes(indexes)


def iso(moment: Any) -> str | None:
    value = as_utc(moment) if isinstance(moment, datetime) else None
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def amount(value: Any) -> str | None:
    number = to_decimal(value)
    return None if number is None else format(number, "f")


def object_id(text: str | None) -> ObjectId | None:
    try:
        return ObjectId(text) if text else None
    except (InvalidId, TypeError):
        return None


def strategy_name(bot_id: Any) -> str:
    return PRESET_NAMES.get(bot_id, f"strategy {bot_id}") if isinstance(bot_id, int) else "unknown"


# --- fleet ------------------------------------------------------------------------------------------------

async def recent_ticks(db: AsyncDatabase[dict[str, Any]]) -> list[dict[str, Any]]:
    ticks = await db.ticks.find({}, {"_id": 0}).sort("finishedAt", DESCENDING).limit(TICKS_SHOWN).to_list()
    return [{
        "tickId": tick.get("tickId"),
        "startedAt": iso(tick.get("startedAt")),
        "finishedAt": iso(tick.get("finishedAt")),
        "outcome": tick.get("outcome"),
        "durationSeconds": tick.get("durationSeconds"),
        "summary": tick.get("summary") or {},
        "aiCalls": tick.get("aiCalls") or {},
        "weight": tick.get("weight") or {},
    } for tick in reversed(ticks)]


async def recent_problems(db: AsyncDatabase[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    since = now - timedelta(hours=24)
    entries = await db.tradelogs.find(
        {"severity": {"$in": ["ERROR", "CRITICAL"]}, "createdAt": {"$gte": since}},
        {"botInstanceId": 1, "severity": 1, "action": 1, "message": 1, "createdAt": 1},
    ).sort("createdAt", DESCENDING).limit(ERRORS_SHOWN).to_list()
    return [_log_row(entry) for entry in entries]


def _log_row(entry: dict[str, Any]) -> dict[str, Any]:
    bot = entry.get("botInstanceId")
    return {"at": iso(entry.get("createdAt")), "botInstanceId": None if bot is None else str(bot),
            "logType": entry.get("logType"), "severity": entry.get("severity"), "action": entry.get("action"),
            "message": str(entry.get("message") or "")[:500], "data": _plain(entry.get("data"))}


def _plain(value: Any) -> Any:
    """A TradeLog's data as JSON: dates as ISO text, ids and decimals as strings."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (ObjectId, Decimal)):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --- bots -------------------------------------------------------------------------------------------------

def bot_filter(status: str | None, strategy: str | None, symbol: str | None, user: str | None) -> dict[str, Any]:
    """The table's filter; a value that cannot match anything (a bad id) matches nothing, not everything."""
    query: dict[str, Any] = {}
    if status:
        query["status"] = status.upper()
    if strategy:
        query["botId"] = int(strategy) if strategy.isdigit() else -1
    if symbol:
        query["symbol"] = symbol.upper()
    if user:
        query["userId"] = object_id(user) or "no such user"
    return query


@dataclass(frozen=True)
class PageAt:
    """Where a page starts: after an id (the next page), before one (the previous), or at the first bot.

    Pages are ranges of ``_id`` read through an index, never ``skip``: page 200 costs what page 1 costs."""

    after: ObjectId | None = None
    before: ObjectId | None = None

    @classmethod
    def parse(cls, after: str | None, before: str | None) -> PageAt:
        return cls(object_id(after), None if after else object_id(before))


async def _id_page(collection: AsyncCollection[dict[str, Any]], query: dict[str, Any], at: PageAt,
                   projection: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of ``query`` in ``_id`` order and its links: (documents, {total, next, previous})."""
    backwards = at.before is not None
    bound = {"$lt": at.before} if backwards else ({"$gt": at.after} if at.after is not None else None)
    ranged = query if bound is None else {"$and": [query, {"_id": bound}]}
    documents = await collection.find(ranged, projection).sort("_id", DESCENDING if backwards else ASCENDING) \
        .limit(PAGE_SIZE + 1).to_list()
    more = len(documents) > PAGE_SIZE
    documents = documents[:PAGE_SIZE]
    if backwards:
        documents.reverse()
    first, last = (str(documents[0]["_id"]), str(documents[-1]["_id"])) if documents else (None, None)
    has_previous = more if backwards else at.after is not None
    has_next = (more or at.before is not None) if not backwards else True
    total = await collection.count_documents(query) if query else await collection.estimated_document_count()
    return documents, {"total": total, "pageSize": PAGE_SIZE, "next": last if has_next and documents else None,
                       "previous": first if has_previous and documents else None}


async def bots_page(db: AsyncDatabase[dict[str, Any]], query: dict[str, Any], at: PageAt) -> dict[str, Any]:
    bots, links = await _id_page(db.botinstances, query, at, BOT_FIELDS)
    return {**links, "bots": [_bot_row(bot) for bot in bots]}


def _bot_row(bot: dict[str, Any]) -> dict[str, Any]:
    position = bot.get("currentPosition") if isinstance(bot.get("currentPosition"), dict) else None
    statistics = bot.get("statistics") if isinstance(bot.get("statistics"), dict) else {}
    config = bot.get("config") if isinstance(bot.get("config"), dict) else {}
    return {
        "botInstanceId": str(bot["_id"]),
        "botName": str(bot.get("botName") or ""),
        "userId": str(bot.get("userId") or ""),
        "strategyId": bot.get("botId"),
        "strategy": strategy_name(bot.get("botId")),
        "symbol": str(bot.get("symbol") or ""),
        "interval": str(config.get("interval") or ""),
        "status": str(bot.get("status") or ""),
        "position": None if position is None else _position(position),
        "totalTrades": statistics.get("totalTrades"),
        "winRate": statistics.get("winRate"),
        "lastRunAt": iso(bot.get("lastRunAt")),
        "lastError": (str(bot["lastError"])[:300] if bot.get("lastError") else None),
    }


def _position(position: dict[str, Any]) -> dict[str, Any]:
    return {"symbol": position.get("symbol"), "side": position.get("side"),
            "quantity": amount(position.get("quantity")), "entryPrice": amount(position.get("entryPrice")),
            "stopLoss": amount(position.get("stopLoss")), "takeProfit": amount(position.get("takeProfit")),
            "leverage": position.get("leverage"), "pnl": amount(position.get("pnl")),
            "pnlPercent": amount(position.get("pnlPercent")), "openTime": iso(position.get("openTime"))}


async def bot_detail(db: AsyncDatabase[dict[str, Any]], bot_id: ObjectId) -> dict[str, Any] | None:
    bot = await db.botinstances.find_one({"_id": bot_id}, BOT_FIELDS)
    if bot is None:
        return None
    analyses = await db.tradelogs.find(
        {"botInstanceId": bot_id, "logType": "ANALYSIS"}, {"createdAt": 1, "action": 1, "data": 1},
    ).sort("createdAt", DESCENDING).limit(SIGNALS_SHOWN).to_list()
    # Trades and problems in one query (each branch of the $or has its index on MongoDB).
    events = await db.tradelogs.find(
        {"botInstanceId": bot_id, "$or": [{"logType": "TRADE"}, {"severity": {"$in": ["ERROR", "CRITICAL"]}}]},
        {"createdAt": 1, "logType": 1, "severity": 1, "action": 1, "message": 1, "data": 1},
    ).sort("createdAt", DESCENDING).limit(TRADES_SHOWN + ERRORS_SHOWN).to_list()
    trades = [entry for entry in events if entry.get("logType") == "TRADE"][:TRADES_SHOWN]
    errors = [entry for entry in events if entry.get("severity") in ("ERROR", "CRITICAL")][:ERRORS_SHOWN]
    signals = [_signal(entry) for entry in reversed(analyses)]
    trade_rows = [_trade(entry) for entry in reversed(trades)]
    return {
        "bot": _bot_row(bot),
        "signals": [signal for signal in signals if signal is not None],
        "trades": trade_rows,
        "pnlCurve": _pnl_curve(trade_rows),
        "errors": [_log_row(entry) for entry in errors],
    }


def _signal(entry: dict[str, Any]) -> dict[str, Any] | None:
    data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
    price = to_decimal(data.get("price"))
    signal = data.get("signal") if isinstance(data.get("signal"), dict) else {}
    ai = data.get("ai") if isinstance(data.get("ai"), dict) else {}
    if price is None:
        return None
    return {"at": iso(entry.get("createdAt")), "price": format(price, "f"),
            "action": str(signal.get("action") or entry.get("action") or ""),
            "confidence": signal.get("confidence"), "ai": "used" if ai.get("used") else (
                "fallback" if ai.get("requested") else "not asked"),
            "decision": data.get("decision")}


def _trade(entry: dict[str, Any]) -> dict[str, Any]:
    data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
    return {"at": iso(entry.get("createdAt")), "action": entry.get("action"),
            "message": str(entry.get("message") or "")[:300],
            "side": data.get("side"), "quantity": amount(data.get("quantity")),
            "price": amount(data.get("exitPrice") or data.get("fillPrice") or data.get("entryPrice") or data.get("price")),
            "realizedPnl": amount(data.get("realizedPnl"))}


def _pnl_curve(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    total = Decimal(0)
    curve = []
    for trade in trades:
        if trade["realizedPnl"] is None:
            continue
        total += Decimal(trade["realizedPnl"])
        curve.append({"at": trade["at"], "cumulativePnl": format(total, "f")})
    return curve


# --- accounts ---------------------------------------------------------------------------------------------

async def accounts_page(db: AsyncDatabase[dict[str, Any]], at: PageAt, now: datetime) -> dict[str, Any]:
    """Open positions (a page of them) with their account and the protective-order audit of each."""
    bots, links = await _id_page(db.botinstances, OPEN_POSITION, at, BOT_FIELDS)
    connections = await _accounts_of(db, bots)
    since = now - timedelta(hours=24)
    events = await db.tradelogs.find(
        {"action": {"$in": list(PROTECTION_ACTIONS)}, "createdAt": {"$gte": since}},
        {"botInstanceId": 1, "severity": 1, "action": 1, "message": 1, "createdAt": 1},
    ).sort("createdAt", DESCENDING).limit(AUDIT_EVENTS_SHOWN).to_list()
    latest_event: dict[str, dict[str, Any]] = {}
    for event in events:
        latest_event.setdefault(str(event.get("botInstanceId")), _log_row(event))
    positions = []
    for bot in bots:
        row = _bot_row(bot)
        connection = connections.get(bot["_id"])
        position = row["position"] or {}
        positions.append({
            **row,
            "account": None if connection is None else {
                "connectionId": str(connection["_id"]), "mode": connection.get("mode"),
                "active": connection.get("isActive")},
            "audit": _audit(position, bot, latest_event.get(row["botInstanceId"]), now),
        })
    return {**links, "positions": positions, "auditEvents": [_log_row(event) for event in events]}


async def _accounts_of(db: AsyncDatabase[dict[str, Any]], bots: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Each bot's exchange connection as the executor resolves it: its exchangeConnectionId, else its user's one
    active connection. Only the mode and state are read, never the keys."""
    fields = {"mode": 1, "isActive": 1, "userId": 1}
    named = [bot["exchangeConnectionId"] for bot in bots if bot.get("exchangeConnectionId")]
    by_id = {doc["_id"]: doc for doc in await db.exchangeconnections.find({"_id": {"$in": named}}, fields).to_list()}
    users = [bot.get("userId") for bot in bots if not bot.get("exchangeConnectionId")]
    active: dict[str, list[dict[str, Any]]] = {}
    if users:
        for doc in await db.exchangeconnections.find({"userId": {"$in": users}, "isActive": True}, fields).to_list():
            active.setdefault(str(doc.get("userId")), []).append(doc)
    resolved = {}
    for bot in bots:
        if bot.get("exchangeConnectionId"):
            found = by_id.get(bot["exchangeConnectionId"])
        else:
            candidates = active.get(str(bot.get("userId")), [])
            found = candidates[0] if len(candidates) == 1 else None
        if found is not None:
            resolved[bot["_id"]] = found
    return resolved


def _audit(position: dict[str, Any], bot: dict[str, Any], event: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """Whether the position is protected as far as the platform knows, and when it was last checked."""
    last_run = as_utc(bot.get("lastRunAt")) if isinstance(bot.get("lastRunAt"), datetime) else None
    if not position.get("stopLoss"):
        verdict = "NO STOP-LOSS"
    elif event is not None and event["action"] in ("UNPROTECTED_POSITION", "STOP_LOSS_FAILED", "STOP_LOSS_NOT_PLACED"):
        verdict = "AT RISK"
    elif last_run is None or now - last_run > timedelta(minutes=15):
        verdict = "NOT AUDITED LATELY"
    else:
        verdict = "PROTECTED"
    return {"verdict": verdict, "lastAuditAt": iso(last_run), "lastEvent": event}


# --- calibration ------------------------------------------------------------------------------------------

async def calibration(db: AsyncDatabase[dict[str, Any]]) -> dict[str, Any]:
    """Calibration on the newest closed trades that carry their opening signal: one indexed query. Trades logged
    before the signal was stored need a join per trade; ``tradebot calibration`` does it, the dashboard counts
    them and leaves them out so the page stays fast."""
    closes = await db.tradelogs.find({"logType": "TRADE", "action": "CLOSE_POSITION"},
                                     {"data": 1, "createdAt": 1}) \
        .sort("createdAt", DESCENDING).limit(CALIBRATION_TRADES).to_list()
    stored = [close for close in closes if has_stored_signal(close)]
    linked = join_trades(stored, [], [])
    return {
        "strategies": [report_document(report) for report in calibrate(linked.trades)],
        "linkedTrades": len(linked.trades),
        "unlinkedTrades": linked.unlinked,
        "olderTrades": len(closes) - len(stored),
    }

