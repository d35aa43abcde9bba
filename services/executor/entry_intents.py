"""Which entries were ever about to be sent: one MongoDB document per entry client id, written before the order.

An entry's client id is deterministic per (bot, tick), so a retried tick could find the first attempt's fill
on the exchange. Asking Binance costs weight (``GET /fapi/v1/order``, 1) for every entry, though a retry is
rare. The intent record answers it for free: no record means this entry was never sent, so there is nothing
to look up; a record (a crash or lost answer after it) means the exchange is asked. The insert is atomic, so
two attempts racing each other also agree on which one is first. Kept a week (TTL), far past any retry.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

COLLECTION = "entryintents"
KEEP_SECONDS = 7 * 24 * 3600


class EntryIntents(Protocol):
    async def exists(self, client_order_id: str) -> bool: ...
    async def record(self, client_order_id: str, bot_instance_id: str) -> bool:
        """Record the intent; True when this is the first attempt with this id."""
        ...


class MongoEntryIntents:
    def __init__(self, db: AsyncDatabase) -> None:
        self._collection = db[COLLECTION]
        self._index_ready = False
        self._index_lock = asyncio.Lock()

    async def exists(self, client_order_id: str) -> bool:
        return await self._collection.find_one({"_id": client_order_id}, {"_id": 1}) is not None

    async def record(self, client_order_id: str, bot_instance_id: str) -> bool:
        await self._ensure_index()
        try:
            await self._collection.insert_one({"_id": client_order_id, "botInstanceId": bot_instance_id,
                                               "at": datetime.now(UTC)})
        except DuplicateKeyError:
            return False
        return True

    async def _ensure_index(self) -> None:
        if self._index_ready:
            return
        async with self._index_lock:
            if not self._index_ready:
                await self._collection.create_index("at", expireAfterSeconds=KEEP_SECONDS)
                self._index_ready = True


class MemoryEntryIntents:
    """For the backtest and unit tests: the same contract within one process."""

    def __init__(self) -> None:
        self._ids: set[str] = set()

    async def exists(self, client_order_id: str) -> bool:
        return client_order_id in self._ids

    async def record(self, client_order_id: str, bot_instance_id: str) -> bool:
        if client_order_id in self._ids:
            return False
        self._ids.add(client_order_id)
        return True
