"""What a finished tick leaves behind besides its response: metrics, a ``ticks`` record, webhooks.

Metrics are recorded at once (in memory, cheap). The ``ticks`` document and
the webhook events need MongoDB, so ``after_tick`` runs once the response has
been sent: a slow or failing write here never delays or fails the tick. The
TradeLogs to notify about come from the tick itself when all its writes
succeeded (no read); after a failed write only what was stored counts, read
back with ONE query per tick (the tick's logs all carry ``createdAt`` = the
tick's start), never one per bot.

The operator controls' events (a halt or resume from the CLI, a circuit breaker
trip by any process) are not the tick's own: after each tick the ones not yet
sent are claimed (``notifiedAt``, so one gateway replica sends each) and queued
with their TradeLogs; while none is pending this costs one indexed query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase

from services.common import metrics
from services.common.trading_controls import EVENTS_COLLECTION as CONTROL_EVENTS
from services.gateway.results import BotResult, summarize
from services.gateway.tick import TickOutcome
from services.notifications.dispatcher import WebhookDispatcher

log = logging.getLogger(__name__)

TICKS = "ticks"
TRADE_LOGS = "tradelogs"
AFTER_TICK_TIMEOUT_SECONDS = 10.0
CONTROL_EVENTS_PER_TICK = 100   # control events sent after one tick at most; the rest after the next

TickOutcomeName = Literal["ok", "no_bots", "persist_failed", "db_unavailable"]

# The TradeLogs a webhook can carry (services.notifications.registry.event_for decides the event).
NOTIFIABLE_TYPES = ("TRADE", "SAFETY", "ERROR")
NOTIFIABLE_SEVERITIES = ("ERROR", "CRITICAL")
NOTIFIABLE_LOGS: dict[str, Any] = {
    "$or": [{"logType": {"$in": list(NOTIFIABLE_TYPES)}}, {"severity": {"$in": list(NOTIFIABLE_SEVERITIES)}}]
}


def notifiable(entry: dict[str, Any]) -> bool:
    """The in-memory twin of NOTIFIABLE_LOGS."""
    return entry.get("logType") in NOTIFIABLE_TYPES or entry.get("severity") in NOTIFIABLE_SEVERITIES


@dataclass(frozen=True)
class TickReport:
    """One tick as the observers see it, whatever happened to it."""

    tick_id: str
    started_at: datetime
    finished_at: datetime
    outcome: TickOutcomeName
    duration_seconds: float
    results: Sequence[BotResult] = ()
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    stored_logs: Sequence[dict[str, Any]] = ()   # see TickOutcome.stored_logs
    ai_calls: dict[str, int] = field(default_factory=dict)
    weight: dict[str, int] = field(default_factory=dict)   # the market-data weight plan: needed/planned/budget

    @classmethod
    def from_outcome(cls, outcome: TickOutcome, duration_seconds: float) -> TickReport:
        name: TickOutcomeName = (
            "no_bots" if outcome.no_active_bots else "persist_failed" if outcome.persist_error else "ok"
        )
        return cls(
            tick_id=outcome.tick_id,
            started_at=outcome.started_at,
            finished_at=datetime.now(UTC),
            outcome=name,
            duration_seconds=duration_seconds,
            results=outcome.results,
            timings=dict(outcome.timings),
            error=outcome.persist_error,
            stored_logs=outcome.stored_logs,
            ai_calls=dict(outcome.ai_calls),
            weight={} if outcome.weight_plan is None else {
                "needed": outcome.weight_plan.needed, "planned": outcome.weight_plan.planned,
                "budget": outcome.weight_plan.budget},
        )

    @classmethod
    def database_unavailable(cls, tick_id: str, started_at: datetime, duration_seconds: float) -> TickReport:
        return cls(tick_id, started_at, datetime.now(UTC), "db_unavailable", duration_seconds,
                   error="Database unavailable")  # fmt: skip

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tickId": self.tick_id,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "outcome": self.outcome,
            "summary": summarize(self.results),
            "timings": {name: round(seconds, 3) for name, seconds in self.timings.items()},
            "durationSeconds": round(self.duration_seconds, 3),
            "aiCalls": dict(self.ai_calls),
            "weight": dict(self.weight),
        }
        if self.error is not None:
            document["error"] = self.error
        return document


def record_tick_metrics(report: TickReport) -> None:
    metrics.TICK_DURATION_SECONDS.observe(report.duration_seconds)
    metrics.TICKS_TOTAL.labels(outcome=report.outcome).inc()
    metrics.LAST_TICK_TIMESTAMP_SECONDS.set(time.time())
    for result in report.results:
        metrics.BOT_RESULTS_TOTAL.labels(status=result.status).inc()


class TickObserver:
    """Records each tick; owns nothing but borrows the database and the webhook dispatcher."""

    def __init__(self, db: AsyncDatabase, dispatcher: WebhookDispatcher | None,
                 ip_weight: Callable[[], Awaitable[dict[str, int]]] | None = None) -> None:
        self._db = db
        self._dispatcher = dispatcher
        # The IP's used weight as the market service last saw it (X-MBX-USED-WEIGHT-1M): the dashboard's chart.
        self._ip_weight = ip_weight

    async def ensure_indexes(self) -> None:
        """``/api/status`` reads the newest tick: keep that a seek, not a scan (best effort)."""
        try:
            await self._db[TICKS].create_index([("finishedAt", -1)], name="finishedAt_desc")
            await self._db[CONTROL_EVENTS].create_index("notifiedAt", name="notifiedAt")
        except Exception as error:  # a missing index costs speed, never correctness
            log.warning("could not create the ticks index", extra={"error": type(error).__name__})

    async def after_tick(self, report: TickReport) -> None:
        """Store the tick record, then queue its notifiable TradeLogs. Logs failures, never raises."""
        try:
            await asyncio.wait_for(self._after_tick(report), AFTER_TICK_TIMEOUT_SECONDS)
        except Exception as error:
            log.error("recording the tick failed", extra={"tickId": report.tick_id, "error": repr(error)})

    async def _after_tick(self, report: TickReport) -> None:
        document = report.document()
        if self._ip_weight is not None and report.outcome != "db_unavailable":
            try:
                document["weight"].update(await self._ip_weight())   # bounded by its own call timeout
            except Exception as error:   # the record goes without it
                log.warning("reading the IP weight for the tick record failed", extra={"error": repr(error)})
        try:
            await self._db[TICKS].insert_one(document)
        except Exception as error:  # the webhooks below do not depend on it
            log.error("writing the ticks document failed", extra={"tickId": report.tick_id, "error": repr(error)})
        if self._dispatcher is not None and report.outcome != "db_unavailable":
            await self._notify_control_events(report.finished_at)
        if self._dispatcher is None or report.outcome not in ("ok", "persist_failed"):
            return  # no bots ran: nothing to notify
        if report.outcome == "ok":   # every TradeLog of the tick is stored: no need to read them back
            entries = [entry for entry in report.stored_logs if notifiable(entry)]
        else:
            entries = await self.written_logs(report)
        queued = self._dispatcher.enqueue(entries)
        if queued:
            log.info("webhook events queued", extra={"tickId": report.tick_id, "events": queued})

    async def _notify_control_events(self, now: datetime) -> None:
        """Queue the halts, resumes and breaker trips not sent yet, each claimed first (once, fleet-wide)."""
        assert self._dispatcher is not None
        try:
            events = self._db[CONTROL_EVENTS]
            pending = await events.find({"notifiedAt": None}, {"_id": 1}).sort("_id", 1) \
                .limit(CONTROL_EVENTS_PER_TICK).to_list()
            claimed = []
            for event in pending:
                taken = await events.update_one({"_id": event["_id"], "notifiedAt": None}, {"$set": {"notifiedAt": now}})
                if taken.modified_count:
                    claimed.append(event["_id"])
            if not claimed:
                return
            entries = await self._db[TRADE_LOGS].find({"_id": {"$in": claimed}}).sort("_id", 1).to_list()
        except Exception as error:   # the next tick tries again (what was claimed is lost: logged)
            log.error("sending the operator control events failed", extra={"error": repr(error)})
            return
        queued = self._dispatcher.enqueue(entries)
        log.info("operator control events queued", extra={"events": queued})

    async def written_logs(self, report: TickReport) -> list[dict[str, Any]]:
        """This tick's TRADE/SAFETY/ERROR TradeLogs, as stored (with their ``_id``)."""
        bot_ids = _bot_ids(report.results)
        if not bot_ids:
            return []
        # MongoDB keeps milliseconds: match the tick's start within its millisecond.
        since = report.started_at.replace(microsecond=report.started_at.microsecond // 1000 * 1000)
        query = {
            "createdAt": {"$gte": since, "$lt": since + timedelta(milliseconds=1)},
            "botInstanceId": {"$in": bot_ids},
            **NOTIFIABLE_LOGS,
        }
        return await self._db[TRADE_LOGS].find(query).sort("_id", 1).to_list()


def _bot_ids(results: Sequence[BotResult]) -> list[Any]:
    """The ids as stored: ObjectIds normally, the raw string for a hand-written odd id."""
    ids: list[Any] = []
    for result in results:
        ids.append(result.bot_instance_id)
        try:
            ids.append(ObjectId(result.bot_instance_id))
        except (InvalidId, TypeError):
            pass
    return ids
