"""Halting and resuming trading: what a halt or a resume writes, shared by ``tradebot`` and the dashboard.

The planning functions are pure (what to store, what to record); ``halt`` and ``resume`` apply them to an
async database (the dashboard's), and the CLI applies the same plans with its synchronous client. Each
change is recorded in ``tradingcontrolevents`` with a SAFETY CRITICAL TradeLog of the same ``_id``, which
the gateway sends to the operators' webhooks after its next tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

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

Record = tuple[dict[str, Any], dict[str, Any]]   # (tradingcontrolevents document, its TradeLog)


class InvalidControlRequest(ValueError):
    """A halt or resume the operator must correct (no reason, too long a reason)."""


def scope_text(user: object | None) -> str:
    return f"user {user}" if user is not None else "the whole fleet"


def control_id(user: object | None) -> str:
    return FLEET_HALT_ID if user is None else user_halt_id(user)


def clean_reason(reason: str) -> str:
    cleaned = " ".join(reason.split())
    if not cleaned:
        raise InvalidControlRequest("a halt must say why trading is halted")
    if len(cleaned) > MAX_REASON_LENGTH:
        raise InvalidControlRequest(f"the reason is at most {MAX_REASON_LENGTH} characters")
    return cleaned


@dataclass(frozen=True)
class HaltPlan:
    document: dict[str, Any]   # replaces the scope's control document
    record: Record

    @property
    def flatten(self) -> bool:
        return bool(self.document["flatten"])


def plan_halt(*, user: object | None, reason: str, by: str, flatten: bool, existing: dict[str, Any] | None,
              now: datetime) -> HaltPlan:
    reason = clean_reason(reason)
    flatten_pending = (existing or {}).get("flatten") is True
    document = halt_document(user_id=user, reason=reason, by=by, now=now, flatten=flatten or flatten_pending)
    if flatten_pending:   # a flatten once asked stands until resume: a new reason does not cancel it
        document["flattenRequestedAt"] = (existing or {}).get("flattenRequestedAt", now)
    flattening = " and every open position is closed (reduce-only)" if document["flatten"] else ""
    message = (f"Trading halted for {scope_text(user)} by {by}: {reason}. No new entries{flattening}; "
               "open positions are still monitored and protected.")
    record = control_records(TRADING_HALTED, user_id=user, message=message, now=now,
                             data={"scope": document["scope"], "reason": reason, "by": by, "flatten": document["flatten"]})
    return HaltPlan(document, record)


@dataclass(frozen=True)
class Lifted:
    what: str       # "the halt of the whole fleet (reason)", for the operator
    record: Record


def lifted_halt(user: object | None, by: str, stored_halt: dict[str, Any] | None, now: datetime) -> Lifted | None:
    if stored_halt is None:
        return None
    reason = stored_halt.get("reason", "")
    message = (f"Trading resumed for {scope_text(user)} by {by} (halted by {stored_halt.get('by', 'unknown')}: "
               f"{reason}). New entries are allowed again.")
    data = {"scope": "fleet" if user is None else "user", "by": by, "haltedBy": stored_halt.get("by"),
            "haltReason": reason}
    return Lifted(f"the halt of {scope_text(user)} ({reason})",
                  control_records(TRADING_RESUMED, user_id=user, message=message, data=data, now=now))


def lifted_breaker(by: str, breaker: dict[str, Any] | None, now: datetime) -> Lifted | None:
    """The breaker's reset, recorded only when it was still open (an expired one closed by itself)."""
    if breaker is None or not parse_breaker(breaker).open_at(now):
        return None
    reason = breaker.get("reason", "")
    message = f"Circuit breaker reset by {by} before its cool-down ended ({reason}). New entries are allowed again."
    data = {"by": by, "cause": breaker.get("cause"), "reason": reason}
    return Lifted(f"the circuit breaker ({reason})",
                  control_records(CIRCUIT_BREAKER_RESET, user_id=None, message=message, data=data, now=now))


async def _record(db: AsyncDatabase[dict[str, Any]], record: Record) -> None:
    event, trade_log = record
    await db[EVENTS_COLLECTION].insert_one(event)
    await db.tradelogs.insert_one(trade_log)


async def halt(db: AsyncDatabase[dict[str, Any]], *, user: object | None, reason: str, by: str, flatten: bool,
               now: datetime) -> HaltPlan:
    existing = await db[COLLECTION].find_one({"_id": control_id(user)})
    plan = plan_halt(user=user, reason=reason, by=by, flatten=flatten, existing=existing, now=now)
    await db[COLLECTION].replace_one({"_id": plan.document["_id"]}, plan.document, upsert=True)
    await _record(db, plan.record)
    return plan


async def resume(db: AsyncDatabase[dict[str, Any]], *, user: object | None, by: str, now: datetime) -> list[Lifted]:
    """Lifts the scope's halt; the fleet's resume also closes the circuit breaker and clears its evidence."""
    lifted = [lifted_halt(user, by, await db[COLLECTION].find_one_and_delete({"_id": control_id(user)}), now)]
    if user is None:
        breaker = await db[COLLECTION].find_one_and_delete({"_id": BREAKER_ID})
        await db[BREAKER_EVIDENCE_COLLECTION].delete_many({})   # the evidence that tripped it starts afresh
        lifted.append(lifted_breaker(by, breaker, now))
    done = [item for item in lifted if item is not None]
    for item in done:
        await _record(db, item.record)
    return done
