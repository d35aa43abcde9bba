"""``tradebot user create`` and ``tradebot bot create|list|pause|resume|stop``."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from services.cli.bot_config import (
    DEFAULT_CONFIG,
    build_config,
    bot_document_for_preset,
    parse_config_json,
    validate_preset,
    validate_symbol,
)
from services.cli.context import database, object_id
from services.cli.errors import USAGE, CliError
from services.cli.table import render_table
from services.cli.values import net_profit, show_amount, show_quantity, win_rate

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# flag dest -> config key
CONFIG_FLAGS = {
    "leverage": "leverage",
    "stop_loss": "stopLossPercent",
    "take_profit": "takeProfitPercent",
    "position_size": "positionSizePercent",
    "max_daily_loss": "maxDailyLoss",
    "interval": "interval",
    "confidence_threshold": "confidenceThreshold",
    "max_consecutive_losses": "maxConsecutiveLosses",
}

# target status -> the statuses it may be reached from
_TRANSITIONS = {
    "PAUSED": ("ACTIVE", "ERROR"),
    "ACTIVE": ("PAUSED", "STOPPED", "ERROR"),
    "STOPPED": ("ACTIVE", "PAUSED", "ERROR"),
}


def user_create(args: argparse.Namespace) -> int:
    email = args.email.strip().lower()
    if not _EMAIL.match(email):
        raise CliError(f"--email must be an email address, got {args.email!r}", USAGE)
    with database() as db:
        if db.users.find_one({"email": email}, {"_id": 1}) is not None:
            raise CliError(f"a user with email {email} already exists")
        now = datetime.now(UTC)
        document: dict[str, Any] = {"email": email, "createdAt": now, "updatedAt": now}
        if args.name:
            document["name"] = args.name
        user_id = db.users.insert_one(document).inserted_id
    print(f"created user {user_id} ({email})")
    return 0


def bot_create(args: argparse.Namespace) -> int:
    preset = validate_preset(args.preset)
    symbol = validate_symbol(args.symbol)
    overrides = parse_config_json(args.config)
    for dest, key in CONFIG_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            overrides[key] = value
    config = build_config(overrides)
    user_id = object_id(args.user_id, "--user-id")
    connection_id = object_id(args.connection_id, "--connection-id") if args.connection_id else None
    with database() as db:
        if db.users.find_one({"_id": user_id}, {"_id": 1}) is None:
            raise CliError(f"no user {user_id}; create one with `tradebot user create --email ...`")
        if connection_id is not None:
            connection = db.exchangeconnections.find_one({"_id": connection_id}, {"userId": 1})
            if connection is None or str(connection.get("userId")) != str(user_id):
                raise CliError(f"no exchange connection {connection_id} for user {user_id}")
        document = bot_document_for_preset(
            user_id=user_id,
            preset=preset,
            symbol=symbol,
            config=config,
            name=args.name,
            exchange_connection_id=connection_id,
        )
        bot_id = db.botinstances.insert_one(document).inserted_id
    settings = ", ".join(f"{key}={config[key]}" for key in DEFAULT_CONFIG)
    print(f"created bot {bot_id}: {document['botName']} (preset {preset}) on {symbol}, ACTIVE")
    print(f"config: {settings}")
    return 0


def _position_cell(position: Any) -> str:
    if not isinstance(position, dict):
        return "-"
    return f"{position.get('side', '?')} {show_quantity(position.get('quantity'))}"


def _signal_cell(analysis: Any) -> str:
    if not isinstance(analysis, dict) or not isinstance(analysis.get("signal"), dict):
        return "-"
    signal = analysis["signal"]
    confidence = signal.get("confidence")
    return f"{signal.get('action', '?')} {confidence:g}%" if isinstance(confidence, int | float) else str(
        signal.get("action", "?")
    )


def bot_rows(db: Database[dict[str, Any]], query: dict[str, Any]) -> list[list[str]]:
    rows = []
    for bot in db.botinstances.find(query).sort("createdAt", 1):
        statistics = bot.get("statistics") if isinstance(bot.get("statistics"), dict) else {}
        position = bot.get("currentPosition")
        rate = win_rate(statistics)
        rows.append([
            str(bot["_id"]),
            str(bot.get("botName", "")),
            str(bot.get("symbol", "")),
            str(bot.get("status", "")),
            _position_cell(position),
            show_amount(position.get("pnl")) if isinstance(position, dict) else "-",
            show_amount(net_profit(statistics)),
            str(statistics.get("totalTrades", 0)),
            "-" if rate is None else f"{rate:.1f}%",
            _signal_cell(bot.get("lastAnalysis")),
        ])
    return rows


def bot_list(args: argparse.Namespace) -> int:
    query: dict[str, Any] = {}
    if args.user_id:
        query["userId"] = object_id(args.user_id, "--user-id")
    if args.status:
        query["status"] = args.status
    with database() as db:
        rows = bot_rows(db, query)
    if not rows:
        print("no bots")
        return 0
    headers = ["ID", "NAME", "SYMBOL", "STATUS", "POSITION", "UPNL", "NET PNL", "TRADES", "WIN RATE", "LAST SIGNAL"]
    print(render_table(headers, rows))
    return 0


def bot_set_status(args: argparse.Namespace, target: str) -> int:
    bot_id = object_id(args.bot_id, "bot id")
    with database() as db:
        bot = db.botinstances.find_one({"_id": bot_id})
        if bot is None:
            raise CliError(f"no bot {bot_id}")
        current = bot.get("status")
        if current == target:
            print(f"bot {bot_id} is already {target}")
            return 0
        allowed = _TRANSITIONS[target]
        if current not in allowed:
            raise CliError(f"bot {bot_id} is {current}; it can become {target} only from {', '.join(allowed)}")
        update: dict[str, Any] = {"$set": {"status": target, "updatedAt": datetime.now(UTC)}}
        if target == "ACTIVE" and getattr(args, "reset_losses", False):
            update["$set"]["statistics.consecutiveLosses"] = 0
        # Only if nobody changed it meanwhile (a tick may have paused it).
        result = db.botinstances.update_one({"_id": bot_id, "status": current}, update)
        if result.modified_count != 1:
            raise CliError(f"bot {bot_id} changed while updating; run the command again")
    print(f"bot {bot_id} ({bot.get('botName', '')}): {current} -> {target}")
    _warn_after(bot, target, getattr(args, "reset_losses", False))
    return 0


def _warn_after(bot: dict[str, Any], target: str, reset_losses: bool) -> None:
    if target == "STOPPED" and isinstance(bot.get("currentPosition"), dict):
        print("warning: the bot has an open position; a stopped bot no longer monitors it - close it on the exchange")
    if target == "ACTIVE" and not reset_losses:
        statistics = bot.get("statistics") if isinstance(bot.get("statistics"), dict) else {}
        config = bot.get("config") if isinstance(bot.get("config"), dict) else {}
        losses = statistics.get("consecutiveLosses") or 0
        limit = config.get("maxConsecutiveLosses") or DEFAULT_CONFIG["maxConsecutiveLosses"]
        if isinstance(losses, int | float) and isinstance(limit, int | float) and losses >= limit:
            print(
                f"warning: {losses:g} consecutive losses (limit {limit:g}); the safety rule will pause it again "
                "at the next tick unless you resume with --reset-losses"
            )
