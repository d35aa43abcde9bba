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
from services.common.trading_controls import (
    BREAKER_EVIDENCE_COLLECTION,
    BREAKER_ID,
    CIRCUIT_BREAKER_RESET,
    COLLECTION,
    EVENTS_COLLECTION,
    FLEET_HALT_ID,
    MAX_REASON_LENGTH,
    TRADING_HALTED,
    TRADING_RESUMED,
    control_records,
    halt_document,
    parse_breaker,
    user_halt_id,
)

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


def _scope_text(user: ObjectId | None) -> str:
    return f"user {user}" if user is not None else "the whole fleet"


def _positions_in_scope(db: Database[dict[str, Any]], user: ObjectId | None) -> tuple[int, int]:
    """Open positions of ACTIVE bots (each closed by its next cycle) and of other bots (ticks do not run them)."""
    scope: dict[str, Any] = {"currentPosition": {"$type": "object"}}
    if user is not None:
        scope["userId"] = user
    active = db.botinstances.count_documents({**scope, "status": "ACTIVE"})
    others = db.botinstances.count_documents({**scope, "status": {"$ne": "ACTIVE"}})
    return active, others


def _confirm_flatten(user: ObjectId | None, active: int, others: int) -> None:
    print(f"--flatten closes every open position of {_scope_text(user)} with reduce-only market orders, "
          f"each in its bot's next cycle: {active} open position(s) of ACTIVE bots now.")
    if others:
        print(f"{others} more open position(s) belong to PAUSED/STOPPED/ERROR bots, which ticks do not run: "
              "close those on the exchange yourself.")
    print(f"Type {CONFIRMATION_WORD} to confirm: ", end="", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != CONFIRMATION_WORD:
        raise CliError(f"not confirmed (expected {CONFIRMATION_WORD!r}): nothing was changed", FAILURE)


def _record(db: Database[dict[str, Any]], action: str, user: ObjectId | None, message: str,
            data: dict[str, Any], now: datetime) -> None:
    event, trade_log = control_records(action, user_id=user, message=message, data=data, now=now)
    db[EVENTS_COLLECTION].insert_one(event)
    db.tradelogs.insert_one(trade_log)


def halt(args: argparse.Namespace) -> int:
    reason = " ".join(args.reason.split())
    if not reason:
        raise CliError("--reason must say why trading is halted", USAGE)
    if len(reason) > MAX_REASON_LENGTH:
        raise CliError(f"--reason is at most {MAX_REASON_LENGTH} characters", USAGE)
    user = object_id(args.user, "--user") if args.user else None
    by = operator_name(args.by)
    with database() as db:
        if user is not None and db.users.find_one({"_id": user}, {"_id": 1}) is None:
            raise CliError(f"no user {user}")
        control_id = FLEET_HALT_ID if user is None else user_halt_id(user)
        existing = db[COLLECTION].find_one({"_id": control_id}) or {}
        flatten_pending = existing.get("flatten") is True
        if args.flatten and not flatten_pending and not args.yes:
            _confirm_flatten(user, *_positions_in_scope(db, user))
        now = datetime.now(UTC)
        document = halt_document(user_id=user, reason=reason, by=by, now=now, flatten=args.flatten or flatten_pending)
        if flatten_pending:   # a flatten once asked stands until resume: a new reason does not cancel it
            document["flattenRequestedAt"] = existing.get("flattenRequestedAt", now)
        db[COLLECTION].replace_one({"_id": control_id}, document, upsert=True)
        flattening = " and every open position is closed (reduce-only)" if document["flatten"] else ""
        message = (f"Trading halted for {_scope_text(user)} by {by}: {reason}. No new entries{flattening}; "
                   "open positions are still monitored and protected.")
        _record(db, TRADING_HALTED, user, message,
                {"scope": document["scope"], "reason": reason, "by": by, "flatten": document["flatten"]}, now)
    print(f"halted {_scope_text(user)}: {reason} (by {by})")
    print("new entries stop at each bot's next cycle; open positions are still monitored, protected and closed "
          "by their stop-loss, take-profit or strategy exit")
    if document["flatten"]:
        print("flatten: each bot with an open position closes it (reduce-only) in its next cycle")
    print("lift it with: tradebot resume" + (f" --user {user}" if user is not None else ""))
    return 0


def resume(args: argparse.Namespace) -> int:
    user = object_id(args.user, "--user") if args.user else None
    by = operator_name(args.by)
    lifted: list[str] = []
    with database() as db:
        now = datetime.now(UTC)
        control_id = FLEET_HALT_ID if user is None else user_halt_id(user)
        stored_halt = db[COLLECTION].find_one_and_delete({"_id": control_id})
        if stored_halt is not None:
            lifted.append(f"the halt of {_scope_text(user)} ({stored_halt.get('reason', '')})")
            _record(db, TRADING_RESUMED, user,
                    f"Trading resumed for {_scope_text(user)} by {by} (halted by {stored_halt.get('by', 'unknown')}: "
                    f"{stored_halt.get('reason', '')}). New entries are allowed again.",
                    {"scope": "fleet" if user is None else "user", "by": by, "haltedBy": stored_halt.get("by"),
                     "haltReason": stored_halt.get("reason")}, now)
        if user is None:   # the fleet's resume also closes the circuit breaker at once
            breaker = db[COLLECTION].find_one_and_delete({"_id": BREAKER_ID})
            db[BREAKER_EVIDENCE_COLLECTION].delete_many({})   # the evidence that tripped it starts afresh
            if breaker is not None and parse_breaker(breaker).open_at(now):
                lifted.append(f"the circuit breaker ({breaker.get('reason', '')})")
                _record(db, CIRCUIT_BREAKER_RESET, None,
                        f"Circuit breaker reset by {by} before its cool-down ended ({breaker.get('reason', '')}). "
                        "New entries are allowed again.",
                        {"by": by, "cause": breaker.get("cause"), "reason": breaker.get("reason")}, now)
    if not lifted:
        print(f"nothing to resume: {_scope_text(user)} is not halted" + (" and the circuit breaker is closed"
                                                                          if user is None else ""))
        return 0
    for what in lifted:
        print(f"lifted {what}")
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
