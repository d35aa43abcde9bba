"""Operator controls on trading, as MongoDB stores them: the kill switch (halts) and the fleet circuit breaker.

``tradingcontrols`` holds what is in force, one small document per control, so an executor cycle reads
everything that applies to its bot with one query by ``_id``:

- ``halt:fleet``: no new entry for anyone (``tradebot halt``);
- ``halt:user:<userId>``: no new entry for that user's bots (``tradebot halt --user``);
- ``breaker:fleet``: the fleet circuit breaker, open until ``until`` (or until ``tradebot resume``).

A halt may carry ``flatten: true`` (``tradebot halt --flatten``): each bot with an open position closes it
with a reduce-only order in its next cycle. ``tradebot resume`` deletes the documents.

``tradingcontrolevents`` is the history: one document per halt, resume and breaker trip (who, when, why, the
evidence). Each event is written together with a SAFETY CRITICAL TradeLog of the same ``_id`` (what
``tradebot logs`` shows and users' SAFETY webhooks receive); the event's ``notifiedAt`` marks it handed to
the operators' webhooks by the gateway, once, whichever gateway replica does it.

A document that exists but cannot be read is honoured as a control in force (fail closed): no entry is made
on a halt or a breaker the code could not understand. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bson import ObjectId

COLLECTION = "tradingcontrols"
EVENTS_COLLECTION = "tradingcontrolevents"
BREAKER_EVIDENCE_COLLECTION = "breakerevidence"   # accounts the exchange failed lately (the executors count them)
FLEET_HALT_ID = "halt:fleet"
BREAKER_ID = "breaker:fleet"
_USER_HALT_PREFIX = "halt:user:"

# TradeLog actions of the control events (SAFETY CRITICAL); operators' webhooks receive exactly these.
TRADING_HALTED = "TRADING_HALTED"
TRADING_RESUMED = "TRADING_RESUMED"
CIRCUIT_BREAKER_TRIPPED = "CIRCUIT_BREAKER_TRIPPED"
CIRCUIT_BREAKER_RESET = "CIRCUIT_BREAKER_RESET"
CONTROL_ACTIONS = frozenset({TRADING_HALTED, TRADING_RESUMED, CIRCUIT_BREAKER_TRIPPED, CIRCUIT_BREAKER_RESET})

# Why the fleet circuit breaker tripped (the CIRCUIT_BREAKER_TRIPS_TOTAL label).
EXCHANGE_ERRORS = "exchange_errors"
FLASH_CRASH = "flash_crash"

Scope = Literal["fleet", "user"]
MAX_REASON_LENGTH = 500
UNREADABLE = "(the stored control document could not be read)"


def user_halt_id(user_id: object) -> str:
    return f"{_USER_HALT_PREFIX}{user_id}"


def control_ids(user_id: object | None) -> list[str]:
    """The ``_id``s of every control that can apply to a bot of ``user_id``."""
    ids = [FLEET_HALT_ID, BREAKER_ID]
    if user_id is not None:
        ids.append(user_halt_id(user_id))
    return ids


def user_of_halt(control_id: str) -> str | None:
    return control_id.removeprefix(_USER_HALT_PREFIX) if control_id.startswith(_USER_HALT_PREFIX) else None


@dataclass(frozen=True)
class Halt:
    scope: Scope
    user_id: str | None
    reason: str
    by: str
    since: datetime | None
    flatten: bool = False


@dataclass(frozen=True)
class Breaker:
    cause: str
    reason: str
    tripped_at: datetime | None
    until: datetime | None          # None: unreadable, open until an operator resumes
    evidence: Mapping[str, Any]
    by: str

    def open_at(self, now: datetime) -> bool:
        return self.until is None or self.until > now


@dataclass(frozen=True)
class EntryControls:
    """The controls one user's bots trade under at one moment (a breaker only while it is open)."""

    fleet_halt: Halt | None = None
    user_halt: Halt | None = None
    breaker: Breaker | None = None

    @property
    def halt(self) -> Halt | None:
        return self.fleet_halt or self.user_halt

    @property
    def entries_stopped(self) -> str:
        """Why no new entry may be made ("" when entries are allowed); a halt outranks the breaker."""
        halt = self.halt
        if halt is not None:
            return f"halted: {halt.reason}"
        if self.breaker is not None:
            return f"circuit breaker open: {self.breaker.reason}"
        return ""

    @property
    def flatten(self) -> bool:
        """An operator asked for every open position to be closed."""
        return any(halt is not None and halt.flatten for halt in (self.fleet_halt, self.user_halt))


NO_CONTROLS = EntryControls()


# --- reading ------------------------------------------------------------------------------------------


def _text(value: Any, default: str = "") -> str:
    return value.strip()[:MAX_REASON_LENGTH] if isinstance(value, str) and value.strip() else default


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_halt(document: Mapping[str, Any]) -> Halt:
    control_id = str(document.get("_id", ""))
    user_id = user_of_halt(control_id)
    return Halt(
        scope="user" if user_id is not None else "fleet",
        user_id=user_id,
        reason=_text(document.get("reason"), UNREADABLE),
        by=_text(document.get("by"), "unknown"),
        since=_moment(document.get("since")),
        flatten=document.get("flatten") is True,
    )


def parse_breaker(document: Mapping[str, Any]) -> Breaker:
    evidence = document.get("evidence")
    return Breaker(
        cause=_text(document.get("cause"), "unknown"),
        reason=_text(document.get("reason"), UNREADABLE),
        tripped_at=_moment(document.get("trippedAt")),
        until=_moment(document.get("until")),
        evidence=evidence if isinstance(evidence, Mapping) else {},
        by=_text(document.get("by"), "unknown"),
    )


def controls_for(documents: Iterable[Mapping[str, Any]], user_id: object | None, now: datetime) -> EntryControls:
    """What applies to ``user_id``'s bots among ``documents`` (any superset of ``control_ids(user_id)``)."""
    fleet_halt = user_halt = breaker = None
    own_halt = None if user_id is None else user_halt_id(user_id)
    for document in documents:
        control_id = document.get("_id")
        if control_id == FLEET_HALT_ID:
            fleet_halt = parse_halt(document)
        elif control_id == own_halt:
            user_halt = parse_halt(document)
        elif control_id == BREAKER_ID:
            candidate = parse_breaker(document)
            breaker = candidate if candidate.open_at(now) else None
    return EntryControls(fleet_halt, user_halt, breaker)


# --- writing -------------------------------------------------------------------------------------------


def halt_document(*, user_id: object | None, reason: str, by: str, now: datetime, flatten: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_id": FLEET_HALT_ID if user_id is None else user_halt_id(user_id),
        "kind": "halt",
        "scope": "fleet" if user_id is None else "user",
        "userId": None if user_id is None else str(user_id),
        "reason": reason,
        "by": by,
        "since": now,
        "flatten": flatten,
    }
    if flatten:
        document["flattenRequestedAt"] = now
    return document


def breaker_document(*, cause: str, reason: str, evidence: Mapping[str, Any], by: str, now: datetime,
                     cooldown_seconds: float) -> dict[str, Any]:
    return {
        "_id": BREAKER_ID,
        "kind": "breaker",
        "scope": "fleet",
        "cause": cause,
        "reason": reason,
        "evidence": dict(evidence),
        "by": by,
        "trippedAt": now,
        "until": now + timedelta(seconds=cooldown_seconds),
    }


def control_records(action: str, *, user_id: object | None, message: str, data: Mapping[str, Any],
                    now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The history event and its TradeLog (SAFETY CRITICAL, the seed's fields), sharing one ``_id``."""
    record_id = ObjectId()
    owner = None if user_id is None else ObjectId(str(user_id))
    event = {
        "_id": record_id,
        "action": action,
        "scope": "fleet" if user_id is None else "user",
        "userId": owner,
        "message": message,
        "data": dict(data),
        "createdAt": now,
        "notifiedAt": None,
    }
    trade_log = {
        "_id": record_id,
        "userId": owner,
        "botInstanceId": None,
        "logType": "SAFETY",
        "severity": "CRITICAL",
        "action": action,
        "message": message,
        "data": dict(data),
        "createdAt": now,
    }
    return event, trade_log


def describe_halts(documents: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """The controls in force as ``/api/status`` and ``tradebot status`` show them."""
    fleet: dict[str, Any] | None = None
    users: list[dict[str, Any]] = []
    breaker: dict[str, Any] = {"open": False}
    for document in documents:
        control_id = str(document.get("_id", ""))
        if control_id == BREAKER_ID:
            parsed = parse_breaker(document)
            breaker = {
                "open": parsed.open_at(now),
                "cause": parsed.cause,
                "reason": parsed.reason,
                "trippedAt": _iso(parsed.tripped_at),
                "until": _iso(parsed.until),
                "by": parsed.by,
                "evidence": dict(parsed.evidence),
            }
        elif control_id == FLEET_HALT_ID or user_of_halt(control_id) is not None:
            halt = parse_halt(document)
            shown = {"reason": halt.reason, "by": halt.by, "since": _iso(halt.since), "flatten": halt.flatten}
            if halt.scope == "fleet":
                fleet = shown
            else:
                users.append({"userId": halt.user_id, **shown})
    return {
        "halted": fleet is not None,
        "fleetHalt": fleet,
        "userHalts": sorted(users, key=lambda row: str(row["userId"])),
        "circuitBreaker": breaker,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
