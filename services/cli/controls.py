"""``tradebot halt`` and ``tradebot resume``: the operator's kill switch, and the breaker's manual reset.

Both only write MongoDB (``services/common/trading_controls.py``); the executors read the controls in
every cycle, so a halt applies from the next cycle on whichever replica runs it. The CLI holds no exchange
credentials: ``--flatten`` asks each bot's next cycle to close its open position (reduce-only), after a
typed confirmation (or ``--yes``). Each change is recorded in ``tradingcontrolevents`` with a SAFETY
CRITICAL TradeLog, which the gateway sends to the operators' webhooks after its next tick.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from services.cli.context import database, object_id
from services.cli.errors import FAILURE, USAGE, CliError
from services.common.trading_control_actions import (
    InvalidControlRequest,
    Record,
    control_id,
    lifted_breaker,
    lifted_halt,
    plan_halt,
    scope_text,
)
from services.common.trading_controls import BREAKER_EVIDENCE_COLLECTION, BREAKER_ID, COLLECTION, EVENTS_COLLECTION

CONFIRMATION_WORD = "FLATTEN"
OPERATOR_ENV = "TRADEBOT_OPERATOR"


def operator_name(given: str | None) -> str:
    """Who acts: ``--by``, else $TRADEBOT_OPERATOR, else the OS user."""
    for candidate in (given, os.environ.get(OPERATOR_ENV)):
        if candidate and candidate.strip():
            return candidate.strip()[:100]
    try:
        return getpass.getuser()
    except (KeyError, OSError):   # no user name for this uid (a bare container)
        return f"uid {os.getuid()}"


def _positions_in_scope(db: Database[dict[str, Any]], user: ObjectId | None) -> tuple[int, int]:
    """Open positions of ACTIVE bots (each closed by its next cycle) and of other bots (ticks do not run them)."""
    scope: dict[str, Any] = {"currentPosition": {"$type": "object"}}
    if user is not None:
        scope["userId"] = user
    active = db.botinstances.count_documents({**scope, "status": "ACTIVE"})
    others = db.botinstances.count_documents({**scope, "status": {"$ne": "ACTIVE"}})
    return active, others


def _confirm_flatten(user: ObjectId | None, active: int, others: int) -> None:
    print(f"--flatten closes every open position of {scope_text(user)} with reduce-only market orders, "
          f"each in its bot's next cycle: {active} open position(s) of ACTIVE bots now.")
    if others:
        print(f"{others} more open position(s) belong to PAUSED/STOPPED/ERROR bots, which ticks do not run: "
              "close those on the exchange yourself.")
    print(f"Type {CONFIRMATION_WORD} to confirm: ", end="", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != CONFIRMATION_WORD:
        raise CliError(f"not confirmed (expected {CONFIRMATION_WORD!r}): nothing was changed", FAILURE)


def _record(db: Database[dict[str, Any]], record: Record) -> None:
    event, trade_log = record
    db[EVENTS_COLLECTION].insert_one(event)
    db.tradelogs.insert_one(trade_log)


def halt(args: argparse.Namespace) -> int:
    user = object_id(args.user, "--user") if args.user else None
    by = operator_name(args.by)
    with database() as db:
        if user is not None and db.users.find_one({"_id": user}, {"_id": 1}) is None:
            raise CliError(f"no user {user}")
        existing = db[COLLECTION].find_one({"_id": control_id(user)})
        try:
            plan = plan_halt(user=user, reason=args.reason, by=by, flatten=args.flatten, existing=existing,
                             now=datetime.now(UTC))
        except InvalidControlRequest as error:
            raise CliError(f"--reason: {error}", USAGE) from None
        if args.flatten and not (existing or {}).get("flatten") is True and not args.yes:
            _confirm_flatten(user, *_positions_in_scope(db, user))
        db[COLLECTION].replace_one({"_id": plan.document["_id"]}, plan.document, upsert=True)
        _record(db, plan.record)
    reason = plan.document["reason"]
    print(f"halted {scope_text(user)}: {reason} (by {by})")
    print("new entries stop at each bot's next cycle; open positions are still monitored, protected and closed "
          "by their stop-loss, take-profit or strategy exit")
    if plan.flatten:
        print("flatten: each bot with an open position closes it (reduce-only) in its next cycle")
    print("lift it with: tradebot resume" + (f" --user {user}" if user is not None else ""))
    return 0


def resume(args: argparse.Namespace) -> int:
    user = object_id(args.user, "--user") if args.user else None
    by = operator_name(args.by)
    with database() as db:
        now = datetime.now(UTC)
        lifted = [lifted_halt(user, by, db[COLLECTION].find_one_and_delete({"_id": control_id(user)}), now)]
        if user is None:   # the fleet's resume also closes the circuit breaker at once
            breaker = db[COLLECTION].find_one_and_delete({"_id": BREAKER_ID})
            db[BREAKER_EVIDENCE_COLLECTION].delete_many({})   # the evidence that tripped it starts afresh
            lifted.append(lifted_breaker(by, breaker, now))
        done = [item for item in lifted if item is not None]
        for item in done:
            _record(db, item.record)
    if not done:
        print(f"nothing to resume: {scope_text(user)} is not halted" + (" and the circuit breaker is closed"
                                                                         if user is None else ""))
        return 0
    for item in done:
        print(f"lifted {item.what}")
    print("new entries resume at each bot's next cycle")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    halt_parser = commands.add_parser(
        "halt", help="stop new entries fleet-wide (or for one user); open positions stay monitored and protected")
    halt_parser.add_argument("--user", help="halt only this user's bots (a user id)")
    halt_parser.add_argument("--reason", required=True, help="why: shown in every halted bot's result and the logs")
    halt_parser.add_argument("--flatten", action="store_true",
                             help="also close every open position (reduce-only) in each bot's next cycle; "
                                  f"asks to type {CONFIRMATION_WORD}")
    halt_parser.add_argument("--yes", action="store_true", help="confirm --flatten without the prompt")
    halt_parser.add_argument("--by", help=f"who halts (default ${OPERATOR_ENV}, else the OS user)")
    halt_parser.set_defaults(handler=halt)
    resume_parser = commands.add_parser(
        "resume", help="lift a halt; without --user also the fleet halt and the circuit breaker")
    resume_parser.add_argument("--user", help="lift this user's halt only")
    resume_parser.add_argument("--by", help=f"who resumes (default ${OPERATOR_ENV}, else the OS user)")
    resume_parser.set_defaults(handler=resume)
