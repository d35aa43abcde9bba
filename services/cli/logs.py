"""``tradebot logs``: TradeLog entries, newest last, filtered; ``--follow`` keeps polling for new ones."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from services.cli.context import database, object_id
from services.cli.errors import USAGE, CliError
from services.cli.values import show_time

LOG_TYPES = ("TRADE", "ERROR", "ANALYSIS", "SAFETY", "SYSTEM")
SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")


def build_query(args: argparse.Namespace) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if args.bot:
        bot = object_id(args.bot, "--bot")
        query["botInstanceId"] = {"$in": [bot, str(bot)]}
    if args.user_id:
        user = object_id(args.user_id, "--user-id")
        query["userId"] = {"$in": [user, str(user)]}
    if args.type:
        log_type = args.type.upper()
        if log_type not in LOG_TYPES:
            raise CliError(f"--type must be one of {', '.join(LOG_TYPES)}, got {args.type!r}", USAGE)
        query["logType"] = log_type
    if args.severity:
        severity = args.severity.upper()
        if severity not in SEVERITIES:
            raise CliError(f"--severity must be one of {', '.join(SEVERITIES)}, got {args.severity!r}", USAGE)
        query["severity"] = severity
    return query


def format_entry(entry: dict[str, Any], bot_names: dict[str, str]) -> str:
    bot = str(entry.get("botInstanceId") or "-")
    who = f"{bot_names.get(bot, '')} {bot}".strip()
    return "  ".join([
        show_time(entry.get("createdAt")),
        str(entry.get("severity", "-")).ljust(8),
        str(entry.get("logType", "-")).ljust(8),
        who,
        str(entry.get("action") or "-"),
        str(entry.get("message") or ""),
    ])


def _bot_names(db: Database[dict[str, Any]], entries: list[dict[str, Any]]) -> dict[str, str]:
    ids = {entry.get("botInstanceId") for entry in entries if isinstance(entry.get("botInstanceId"), ObjectId)}
    if not ids:
        return {}
    return {str(bot["_id"]): str(bot.get("botName", "")) for bot in db.botinstances.find(
        {"_id": {"$in": list(ids)}}, {"botName": 1})}


def _print(db: Database[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    names = _bot_names(db, entries)
    for entry in entries:
        print(format_entry(entry, names), flush=True)


def logs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}", USAGE)
    if args.interval <= 0:
        raise CliError(f"--interval must be positive, got {args.interval}", USAGE)
    query = build_query(args)
    with database() as db:
        newest_first = list(db.tradelogs.find(query).sort([("createdAt", -1), ("_id", -1)]).limit(args.limit))
        entries = list(reversed(newest_first))
        if not entries and not args.follow:
            print("no matching logs")
            return 0
        _print(db, entries)
        if args.follow:
            _follow(db, query, entries, args.interval)
    return 0


def _follow(db: Database[dict[str, Any]], query: dict[str, Any], shown: list[dict[str, Any]], interval: float) -> None:
    """Poll for entries at or after the last one shown; ids seen at that instant are skipped (ties)."""
    last_time = shown[-1]["createdAt"] if shown else None
    seen_at_last = {entry["_id"] for entry in shown if entry.get("createdAt") == last_time}
    try:
        while True:
            time.sleep(interval)
            window = dict(query)
            if last_time is not None:
                window["createdAt"] = {"$gte": last_time}
            fresh = [entry for entry in db.tradelogs.find(window).sort([("createdAt", 1), ("_id", 1)])
                     if entry["_id"] not in seen_at_last]
            if not fresh:
                continue
            _print(db, fresh)
            if fresh[-1].get("createdAt") != last_time:
                last_time = fresh[-1].get("createdAt")
                seen_at_last = set()
            seen_at_last |= {entry["_id"] for entry in fresh if entry.get("createdAt") == last_time}
    except KeyboardInterrupt:
        return
