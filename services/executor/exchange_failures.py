"""Exchange failures as evidence for the fleet circuit breaker: one seam, counted across every replica.

The seam is the broker the cycle is handed (``FailureWatchedBrokers.broker_for``): a live or testnet
account's broker is wrapped so that every exchange call that fails on the exchange's side (a 5xx, a timeout,
Binance's -1000/-1001 "unknown" codes, a connection that fails, an IP ban) reports its account, whether or
not the cycle then handles the error. Paper accounts have no exchange and never count; nor do refusals that
are ours or the account's own (our weight budget, a rejected order, bad credentials).

The evidence is shared in MongoDB (``breakerevidence``: one document per failing account, the time of its
latest failure), not kept per process: with several executor replicas behind a round-robin balancer each
one sees only part of the failing accounts, so counting per process would raise the effective threshold
with every replica added. Only distinct accounts count: one account failing a thousand times is one. When
``BREAKER_FAILING_ACCOUNTS`` accounts have failed within ``BREAKER_WINDOW_SECONDS`` the breaker opens
(``services/common/circuit_breaker.py``) and the evidence starts afresh.

It costs nothing while the exchange answers: a write and a count per failing call, and none while the
breaker is open. Recording runs beside the cycle (never in the money path's way) and its own failures are
logged, never raised.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.circuit_breaker import BreakerTrips
from services.common.errors import ResourceExhausted, TradebotError, Unavailable
from services.common.trading_controls import (
    BREAKER_EVIDENCE_COLLECTION,
    EXCHANGE_ERRORS,
)
from services.executor.binance.errors import UnknownOutcome
from services.executor.brokers.base import AccountNotReady, Broker
from services.executor.brokers.factory import BrokerFactory
from services.executor.connections import ExchangeConnection

log = logging.getLogger(__name__)

SAMPLES_IN_EVIDENCE = 10
# Binance's 418 body ("IP(...) banned until ...") and the weight governor's refusal after one ("an IP ban (418)").
_IP_BAN = re.compile(r"banned|IP ban|\(418\)", re.IGNORECASE)


def exchange_failure(error: BaseException) -> str | None:
    """The kind of exchange-side failure ``error`` is, or None when it says nothing about the exchange."""
    if isinstance(error, AccountNotReady):
        return None   # waiting for our own weight budget
    if isinstance(error, ResourceExhausted):
        return "ip_banned" if _IP_BAN.search(error.message) else None   # a 429 or our budget: not the exchange
    if isinstance(error, UnknownOutcome):
        return "no_answer"     # 5xx, -1000/-1001/..., timeouts, unreadable answers
    if isinstance(error, Unavailable):
        return "unreachable"   # connection failed, malformed answers
    return None


class ExchangeFailureEvidence:
    def __init__(self, db: AsyncDatabase, trips: BreakerTrips, breaker_open: Callable[[], bool],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._evidence = db[BREAKER_EVIDENCE_COLLECTION]
        self._trips = trips
        self._settings = trips.settings
        self._breaker_open = breaker_open
        self._clock = clock
        self._recording: set[asyncio.Task[None]] = set()
        self._indexed = False

    def report(self, account: str, error: BaseException) -> None:
        """Note that the exchange failed ``account`` (when ``error`` is such a failure); never waits."""
        kind = exchange_failure(error)
        if kind is None or self._settings.failing_accounts == 0 or self._breaker_open():
            return
        message = error.message if isinstance(error, TradebotError) else type(error).__name__
        task = asyncio.get_running_loop().create_task(self._record(account, kind, message[:300], self._clock()))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def settled(self) -> None:
        """Wait for the reports in progress (tests, shutdown)."""
        while self._recording:
            await asyncio.gather(*list(self._recording), return_exceptions=True)

    async def _record(self, account: str, kind: str, message: str, now: datetime) -> None:
        try:
            await self._note(account, kind, message, now)
            since = now - timedelta(seconds=self._settings.window_seconds)
            failing = await self._evidence.count_documents({"at": {"$gte": since}})
            if failing >= self._settings.failing_accounts:
                await self._trip(failing, since, now)
        except Exception as error:   # evidence is best effort; the cycle's own error handling stands
            log.warning("recording an exchange failure for the circuit breaker failed",
                        extra={"error": type(error).__name__})

    async def _note(self, account: str, kind: str, message: str, now: datetime) -> None:
        if not self._indexed:
            await self._evidence.create_index("at")
            self._indexed = True
        update = {"$set": {"at": now, "failure": kind, "message": message}}
        try:
            await self._evidence.update_one({"_id": account}, update, upsert=True)
        except DuplicateKeyError:   # two reports of one account at once: the other one created it
            await self._evidence.update_one({"_id": account}, update)

    async def _trip(self, failing: int, since: datetime, now: datetime) -> None:
        recent = await self._evidence.find({"at": {"$gte": since}}).sort("at", -1).limit(SAMPLES_IN_EVIDENCE).to_list()
        window, threshold = self._settings.window_seconds, self._settings.failing_accounts
        reason = (f"the exchange failed for {failing} accounts within {window:g} s "
                  f"(threshold {threshold}): {recent[0]['failure'] if recent else 'failures'}")
        evidence: dict[str, Any] = {
            "failingAccounts": failing,
            "windowSeconds": window,
            "threshold": threshold,
            "samples": [{"account": str(row["_id"]), "failure": row.get("failure"), "message": row.get("message"),
                         "at": row.get("at")} for row in recent],
        }
        if await self._trips.trip(EXCHANGE_ERRORS, reason, evidence):
            # The next window starts after this trip: what tripped it must not trip it again.
            await self._evidence.delete_many({"at": {"$lte": now}})


class FailureReportingBroker:
    """A live account's broker whose every failing exchange call reports the account, then raises as before."""

    def __init__(self, broker: Broker, account: str, evidence: ExchangeFailureEvidence) -> None:
        self._broker = broker
        self._account = account
        self._evidence = evidence

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._broker, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        async def reported(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attribute(*args, **kwargs)
            except TradebotError as error:
                self._evidence.report(self._account, error)
                raise

        return reported


class FailureWatchedBrokers:
    """The broker factory the cycle is given: live and testnet brokers come wrapped (the one seam)."""

    def __init__(self, brokers: BrokerFactory, evidence: ExchangeFailureEvidence) -> None:
        self._brokers = brokers
        self._evidence = evidence

    async def broker_for(self, connection: ExchangeConnection) -> Broker:
        exchange = connection.mode != "paper"
        try:
            broker = await self._brokers.broker_for(connection)
        except TradebotError as error:
            if exchange:
                self._evidence.report(connection.id, error)
            raise
        if not exchange:
            return broker
        return FailureReportingBroker(broker, connection.id, self._evidence)  # type: ignore[return-value]
