"""``tradebot webhook add|list|disable``: where a user's TRADE, SAFETY and ERROR events are POSTed."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from services.cli.context import database, object_id
from services.cli.errors import USAGE, CliError
from services.cli.table import render_table
from services.notifications.registry import (
    COLLECTION,
    WebhookValidationError,
    new_operator_webhook_document,
    new_webhook_document,
)


def webhook_add(args: argparse.Namespace) -> int:
    if args.operator:
        return _operator_webhook_add(args)
    user_id = object_id(args.user_id, "--user-id")
    bot_id = object_id(args.bot_id, "--bot-id") if args.bot_id else None
    events = args.events.split(",") if args.events else None
    try:
        document = new_webhook_document(user_id, args.url, bot_instance_id=bot_id, events=events)
    except WebhookValidationError as error:
        raise CliError(str(error), USAGE) from None
    with database() as db:
        if db.users.find_one({"_id": user_id}, {"_id": 1}) is None:
            raise CliError(f"no user {user_id}")
        if bot_id is not None and db.botinstances.find_one({"_id": bot_id, "userId": user_id}, {"_id": 1}) is None:
            raise CliError(f"no bot {bot_id} for user {user_id}")
        webhook_id = db[COLLECTION].insert_one(document).inserted_id
    scope = f"bot {bot_id}" if bot_id else f"every bot of user {user_id}"
    print(f"created webhook {webhook_id} for {scope}: events {', '.join(document['events'])}")
    print(f"signing secret (shown once, keep it with the receiver): {document['secret']}")
    print("each POST carries X-Tradebot-Timestamp and X-Tradebot-Signature: "
          "sha256=HMAC-SHA256(secret, \"<timestamp>.<raw body>\")")
    return 0


def _operator_webhook_add(args: argparse.Namespace) -> int:
    if args.bot_id:
        raise CliError("--bot-id does not go with --operator (an operator's webhook hears the whole fleet)", USAGE)
    events = args.events.split(",") if args.events else None
    try:
        document = new_operator_webhook_document(args.url, events=events)
    except WebhookValidationError as error:
        raise CliError(str(error), USAGE) from None
    with database() as db:
        webhook_id = db[COLLECTION].insert_one(document).inserted_id
    print(f"created operator webhook {webhook_id}: halts, resumes and circuit breaker trips "
          f"(events {', '.join(document['events'])})")
    print(f"signing secret (shown once, keep it with the receiver): {document['secret']}")
    print("each POST carries X-Tradebot-Timestamp and X-Tradebot-Signature: "
          "sha256=HMAC-SHA256(secret, \"<timestamp>.<raw body>\")")
    return 0


def webhook_list(args: argparse.Namespace) -> int:
    query = {"userId": object_id(args.user_id, "--user-id")} if args.user_id else {}
    with database() as db:
        rows = [[str(hook["_id"]), "operator" if hook.get("operator") else str(hook.get("userId")),
                 str(hook.get("botInstanceId") or "all bots"),
                 hook.get("url", ""), ",".join(hook.get("events") or []), "yes" if hook.get("isActive") else "no"]
                for hook in db[COLLECTION].find(query, {"secret": 0}).sort("createdAt", 1)]
    print(render_table(["ID", "USER", "BOT", "URL", "EVENTS", "ACTIVE"], rows) if rows else "no webhooks")
    return 0


def webhook_disable(args: argparse.Namespace) -> int:
    webhook_id = object_id(args.webhook_id, "webhook id")
    with database() as db:
        result = db[COLLECTION].update_one(
            {"_id": webhook_id}, {"$set": {"isActive": False, "updatedAt": datetime.now(UTC)}}
        )
    if result.matched_count == 0:
        raise CliError(f"no webhook {webhook_id}")
    print(f"webhook {webhook_id} disabled")
    return 0
