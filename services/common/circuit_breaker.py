"""The fleet circuit breaker: its settings, and opening it once however many processes see the evidence.

Two kinds of evidence open it, each judged where it is seen:

- ``exchange_errors``: the exchange failing for many accounts at once (5xx, timeouts, -1001, an IP ban):
  the executor counts distinct accounts inside a sliding window (``services/executor/exchange_failures.py``);
- ``flash_crash``: a symbol moving more than ``flash_move`` of its open inside one candle: the gateway
  judges the candles each tick already fetched (``services/gateway/flash_crash.py``).

Opening it writes ``breaker:fleet`` in ``tradingcontrols`` (which every executor cycle reads, so every
replica stops entries at its next cycle), a ``tradingcontrolevents`` record with its SAFETY CRITICAL TradeLog
(the operators' webhook), a CRITICAL log line with the evidence and the trip metrics. It closes by itself
when ``until`` passes (``cooldown_seconds`` after the trip), or at once with ``tradebot resume``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common import metrics
from services.common.intervals import FIXED_INTERVAL_MS
from services.common.settings import SettingsError, env_choice, env_float, env_int
from services.common.trading_controls import (
    BREAKER_ID,
    CIRCUIT_BREAKER_TRIPPED,
    COLLECTION,
    EVENTS_COLLECTION,
    breaker_document,
    control_records,
)

log = logging.getLogger(__name__)

TRADE_LOGS = "tradelogs"


@dataclass(frozen=True)
class BreakerSettings:
    failing_accounts: int = 5          # distinct accounts failing inside the window that trip it (0 = never)
    window_seconds: float = 60.0
    cooldown_seconds: float = 900.0    # how long it stays open unless an operator resumes
    flash_move: float = 0.10           # a candle whose high-low range exceeds this share of its open (0 = never)
    flash_max_interval: str = "1h"     # longer candles are not judged: a 10 % day is a market, not a flash crash

    @property
    def flash_max_interval_ms(self) -> int:
        return FIXED_INTERVAL_MS[self.flash_max_interval]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BreakerSettings:
        accounts = env_int("BREAKER_FAILING_ACCOUNTS", 5, minimum=0, maximum=100_000, env=env)
        if accounts == 1:
            raise SettingsError("environment variable BREAKER_FAILING_ACCOUNTS must be 0 (off) or at least 2: "
                                "one failing account must never stop everyone's entries")
        return cls(
            failing_accounts=accounts,
            window_seconds=env_float("BREAKER_WINDOW_SECONDS", 60.0, minimum=1.0, maximum=86_400.0, env=env),
            cooldown_seconds=env_float("BREAKER_COOLDOWN_SECONDS", 900.0, minimum=1.0, maximum=7 * 86_400.0, env=env),
            flash_move=env_float("BREAKER_FLASH_MOVE", 0.10, minimum=0.0, maximum=10.0, env=env),
            flash_max_interval=env_choice("BREAKER_FLASH_MAX_INTERVAL", tuple(FIXED_INTERVAL_MS), "1h", env=env),
        )


def process_name(service: str) -> str:
    """Who tripped it, for the record: the service and where it runs."""
    return f"{service}@{socket.gethostname()}:{os.getpid()}"


class BreakerTrips:
    """Opens the breaker in MongoDB; only the first process to do so while it is closed records the trip."""

    def __init__(self, db: AsyncDatabase, settings: BreakerSettings, by: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._db = db
        self._settings = settings
        self._by = by
        self._clock = clock

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    async def trip(self, cause: str, reason: str, evidence: Mapping[str, Any]) -> bool:
        """Open the breaker; False when it already was (another process, or an earlier trip) open."""
        now = self._clock()
        document = breaker_document(cause=cause, reason=reason, evidence=evidence, by=self._by, now=now,
                                    cooldown_seconds=self._settings.cooldown_seconds)
        try:
            # Matches only a breaker whose cool-down is over; an open one makes the upsert collide on _id.
            await self._db[COLLECTION].update_one({"_id": BREAKER_ID, "until": {"$lte": now}},
                                                  {"$set": document}, upsert=True)
        except DuplicateKeyError:
            return False
        metrics.CIRCUIT_BREAKER_TRIPS_TOTAL.labels(cause=cause).inc()
        metrics.CIRCUIT_BREAKER_OPEN.set(1)
        log.critical("circuit breaker tripped: new entries paused for everyone",
                     extra={"cause": cause, "reason": reason, "evidence": dict(evidence),
                            "until": document["until"].isoformat(), "by": self._by})
        message = (f"Circuit breaker tripped ({cause}): {reason}. New entries are paused for everyone until "
                   f"{document['until'].isoformat()}; open positions are still monitored and protected. "
                   "`tradebot resume` lifts it at once.")
        event, trade_log = control_records(
            CIRCUIT_BREAKER_TRIPPED, user_id=None, message=message, now=now,
            data={"cause": cause, "reason": reason, "evidence": dict(evidence), "by": self._by,
                  "until": document["until"], "cooldownSeconds": self._settings.cooldown_seconds},
        )
        try:
            await self._db[EVENTS_COLLECTION].insert_one(event)
            await self._db[TRADE_LOGS].insert_one(trade_log)
        except Exception as error:   # the breaker is open all the same; only its record is missing
            log.error("recording the circuit breaker trip failed", extra={"error": type(error).__name__})
        return True
