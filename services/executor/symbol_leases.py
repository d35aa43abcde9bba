"""One order-sending cycle at a time per (exchange account, symbol), across every executor replica.

In one-way mode an account holds one position per symbol. Two bots of one
account on one symbol, served by two replicas, would otherwise both see "flat"
and both enter. Before a cycle sends an order it takes a lease in MongoDB
(``symbolleases``, ``_id`` = ``<connection>:<symbol>``), re-reads the position
under it, and releases it when its orders are done. The holder renews it while
it works, so a short ``ttl`` suffices: a replica killed while holding one frees
it within seconds, before the next tick needs it. Cycles that only watch take
no lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.errors import Aborted

log = logging.getLogger(__name__)

COLLECTION = "symbolleases"
LEASE_SECONDS = 15.0      # how long a lease outlives a holder that stopped renewing it (a killed replica)
RENEW_SECONDS = 5.0       # the holder renews this often while its orders are out
POLL_SECONDS = 0.05


class Lease(Protocol):
    async def release(self) -> None: ...


class SymbolLeases(Protocol):
    async def acquire(self, connection_id: str, symbol: str, holder: str, wait_seconds: float) -> Lease:
        """Hold (connection, symbol) for ``holder``, waiting at most ``wait_seconds``; raises Aborted."""


class _MongoLease:
    def __init__(self, leases: MongoSymbolLeases, key: str, holder: str) -> None:
        self._leases, self._key, self._holder = leases, key, holder
        self._renewing = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._leases.renew_seconds)
            try:
                await self._leases.collection.update_one(
                    {"_id": self._key, "holder": self._holder},
                    {"$set": {"until": datetime.now(UTC) + timedelta(seconds=self._leases.ttl_seconds)}})
            except Exception as error:   # the lease may lapse; the next renewal tries again
                log.warning("symbol lease renewal failed", extra={"lease": self._key, "error": type(error).__name__})

    async def release(self) -> None:
        self._renewing.cancel()
        await self._leases.collection.delete_one({"_id": self._key, "holder": self._holder})


class MongoSymbolLeases:
    def __init__(self, db: AsyncDatabase, ttl_seconds: float = LEASE_SECONDS,
                 renew_seconds: float = RENEW_SECONDS) -> None:
        self.collection = db[COLLECTION]
        self.ttl_seconds = ttl_seconds
        self.renew_seconds = renew_seconds

    async def ensure_index(self) -> None:
        try:   # expired leases would be taken over anyway; the index only keeps the collection small
            await self.collection.create_index("until", expireAfterSeconds=3600, name="until_ttl")
        except Exception as error:
            log.warning("could not create the symbol lease index", extra={"error": type(error).__name__})

    async def acquire(self, connection_id: str, symbol: str, holder: str, wait_seconds: float) -> Lease:
        key = f"{connection_id}:{symbol}"
        deadline = time.monotonic() + wait_seconds
        while True:
            now = datetime.now(UTC)
            try:
                # Free (absent or expired) or already ours: take it. Held by another: the upsert collides.
                await self.collection.update_one(
                    {"_id": key, "$or": [{"until": {"$lte": now}}, {"holder": holder}]},
                    {"$set": {"holder": holder, "until": now + timedelta(seconds=self.ttl_seconds), "since": now}},
                    upsert=True,
                )
                return _MongoLease(self, key, holder)
            except DuplicateKeyError:
                pass
            if time.monotonic() >= deadline:
                raise Aborted(f"another cycle is sending orders on {symbol} for this account; not waiting longer")
            await asyncio.sleep(POLL_SECONDS)


class _NoLease:
    async def release(self) -> None:
        return None


class ProcessSymbolLeases:
    """Leases for a single process (the backtest): the in-process symbol lock already serialises cycles."""

    async def acquire(self, connection_id: str, symbol: str, holder: str, wait_seconds: float) -> Lease:
        return _NoLease()
