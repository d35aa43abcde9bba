"""The operator controls each cycle trades under (halts, the fleet circuit breaker), read from MongoDB.

Every cycle reads them anew, so a ``tradebot halt`` or a breaker another replica tripped applies from the
very next cycle, on every replica. Reads are batched like the bot reads (``stored_bots.py``): while one
``find`` is in flight, the cycles that ask meanwhile wait and share the next one, a single query by ``_id``
(``$in``: the fleet halt, the breaker and the batch's users' halts). A tick's thousands of cycles therefore
cost a few round trips, yet each cycle sees the controls as they are when its read starts (no cache).

A read that fails stops entries (fail closed) and nothing else: the cycle still monitors and protects open
positions. The process's gauges follow what it reads: ``tradebot_trading_halted{scope="fleet"}``,
``{scope="user"}`` (a halted user among those this process has served) and ``tradebot_circuit_breaker_open``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.common import metrics
from services.common.trading_controls import (
    BREAKER_ID,
    COLLECTION,
    FLEET_HALT_ID,
    EntryControls,
    Halt,
    control_ids,
    controls_for,
    parse_breaker,
    user_halt_id,
)

log = logging.getLogger(__name__)

MAX_BATCH = 256   # users per $in


def unreadable_controls(error: BaseException) -> EntryControls:
    """The controls could not be read: no entry on an unknown halt; protection goes on."""
    reason = f"trading controls could not be read ({type(error).__name__}); no new entry until they can"
    return EntryControls(fleet_halt=Halt(scope="fleet", user_id=None, reason=reason, by="executor", since=None))


class TradingControlsReader:
    def __init__(self, db: AsyncDatabase, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._collection = db[COLLECTION]
        self._clock = clock
        self._waiting: dict[str, list[asyncio.Future[EntryControls]]] = {}
        self._reading = False
        self._halted_users: set[str] = set()
        self._fleet_halted = False
        self._breaker_open = False

    @property
    def breaker_open(self) -> bool:
        """Whether the breaker was open at this process's latest read."""
        return self._breaker_open

    async def for_user(self, user_id: str) -> EntryControls:
        future: asyncio.Future[EntryControls] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(user_id, []).append(future)
        if not self._reading:
            self._reading = True
            asyncio.get_running_loop().create_task(self._read_while_waiting())
        return await future

    async def _read_while_waiting(self) -> None:
        try:
            while self._waiting:
                batch = list(self._waiting)[:MAX_BATCH]
                waiters = {user: self._waiting.pop(user) for user in batch}
                try:
                    documents = await self._read(batch)
                except Exception as error:   # fail closed for entries only
                    log.error("trading controls could not be read; no new entries this cycle",
                              extra={"error": type(error).__name__})
                    _settle(waiters, {user: unreadable_controls(error) for user in waiters})
                    continue
                except BaseException:         # the reader itself is cancelled: so are its waiters
                    for futures in waiters.values():
                        for future in futures:
                            if not future.done():
                                future.cancel()
                    raise
                now = self._clock()
                self._observe(documents, batch, now)
                _settle(waiters, {user: controls_for(documents, user, now) for user in waiters})
        finally:
            self._reading = False

    async def _read(self, users: Sequence[str]) -> list[dict[str, Any]]:
        ids = sorted({*control_ids(None), *(user_halt_id(user) for user in users)})
        return await self._collection.find({"_id": {"$in": ids}}).to_list()

    def _observe(self, documents: Sequence[Mapping[str, Any]], users: Sequence[str], now: datetime) -> None:
        """The gauges and the log follow what was read."""
        by_id = {str(document.get("_id")): document for document in documents}
        fleet_halted = FLEET_HALT_ID in by_id
        breaker = by_id.get(BREAKER_ID)
        breaker_open = breaker is not None and parse_breaker(breaker).open_at(now)
        for user in users:
            if user_halt_id(user) in by_id:
                self._halted_users.add(user)
            else:
                self._halted_users.discard(user)
        if fleet_halted != self._fleet_halted:
            log.warning("fleet halt " + ("in force: no new entries" if fleet_halted else "lifted"))
        if breaker_open != self._breaker_open:
            log.warning("circuit breaker " + ("open: no new entries" if breaker_open else
                                              "closed (cool-down over or resumed): entries allowed"))
        self._fleet_halted, self._breaker_open = fleet_halted, breaker_open
        metrics.TRADING_HALTED.labels(scope="fleet").set(1 if fleet_halted else 0)
        metrics.TRADING_HALTED.labels(scope="user").set(1 if self._halted_users else 0)
        metrics.CIRCUIT_BREAKER_OPEN.set(1 if breaker_open else 0)


def _settle(waiters: dict[str, list[asyncio.Future[EntryControls]]], answers: Mapping[str, EntryControls]) -> None:
    for user, futures in waiters.items():
        for future in futures:
            if not future.done():
                future.set_result(answers[user])
