"""MongoDB access of the gateway: the bot lease, the bulk writes, nothing per field.

Round trips per tick are O(1) in the number of bots (up to chunking): one
``update_many`` claims every free ACTIVE bot for the tick, one ``find`` reads
them back with a projection, one ``bulk_write`` per chunk of 1000 stores the
results and releases the leases, one ``insert_many`` per chunk of 1000 writes
the TradeLogs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError

from services.common.mongo_metrics import COMMAND_LISTENER
from services.common.bot_documents import BOT_PROJECTION

log = logging.getLogger(__name__)

BOTS = "botinstances"
TRADE_LOGS = "tradelogs"
CHUNK_SIZE = 1000
WRITE_ATTEMPTS = 3
DUPLICATE_KEY = 11000


class DatabaseUnavailable(Exception):
    """The database could not be reached; the tick did not start."""


@dataclass(frozen=True)
class ClaimedBots:
    claimed: list[dict[str, Any]]           # leased by this tick: full documents (projected)
    in_progress: list[dict[str, Any]]       # ACTIVE, leased by another live tick


@dataclass(frozen=True)
class BotUpdate:
    """One bot's result write; the filter includes the lease so a stale tick cannot overwrite."""

    instance_id: Any
    update: dict[str, Any]


class BotRepository:
    def __init__(self, client: AsyncMongoClient, database: str) -> None:
        self._client = client
        self._db = client[database]

    @classmethod
    def connect(cls, uri: str, database: str, *, timeout_ms: int = 5000, **client_options: Any) -> BotRepository:
        # Only server selection is short (a down database answers 503 quickly). The connect
        # timeout also bounds the driver's heartbeats: a busy server that is slow to answer one
        # must not get its pool reset in the middle of a large bulk write.
        client: AsyncMongoClient = AsyncMongoClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            **{**client_options, "event_listeners": [COMMAND_LISTENER, *client_options.get("event_listeners", [])]},
        )
        return cls(client, database)

    @property
    def database(self) -> AsyncDatabase:
        """The database itself, for the tick's other writers (the circuit breaker's trips)."""
        return self._db

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        try:
            await self._client.admin.command("ping")
        except PyMongoError as error:
            raise DatabaseUnavailable(type(error).__name__) from error

    async def claim_active_bots(self, tick_id: str, now: datetime, lease_seconds: float) -> ClaimedBots:
        """Lease every ACTIVE bot that is free (never leased, released, or its lease expired)."""
        bots = self._db[BOTS]
        try:
            await bots.update_many(
                {"status": "ACTIVE", "$or": [{"lockedUntil": None}, {"lockedUntil": {"$lte": now}}]},
                {"$set": {"lockOwner": tick_id, "lockedUntil": now + timedelta(seconds=lease_seconds)}},
            )
            documents = await bots.find(
                {"$or": [{"lockOwner": tick_id}, {"status": "ACTIVE"}]}, BOT_PROJECTION
            ).to_list()
        except PyMongoError as error:  # unreachable, or refusing (auth, not primary): the tick cannot start
            raise DatabaseUnavailable(type(error).__name__) from error
        claimed: list[dict[str, Any]] = []
        in_progress: list[dict[str, Any]] = []
        for document in documents:
            if document.get("lockOwner") == tick_id:
                claimed.append(document)
            elif document.get("lockOwner") is not None:
                in_progress.append(document)
            # else: became ACTIVE after the claim; the next tick takes it
        return ClaimedBots(claimed, in_progress)

    async def write_results(self, tick_id: str, updates: Sequence[BotUpdate],
                            logs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store every bot's results and release its lease, then append the TradeLogs; returns them as stored.

        Each chunk is retried a few times on connection errors; updates are
        idempotent ($set, and $inc guarded by the lease owner, which the same
        update removes), so a retried chunk cannot double-count.
        """
        operations = [
            UpdateOne({"_id": item.instance_id, "lockOwner": tick_id}, item.update) for item in updates
        ]
        for start in range(0, len(operations), CHUNK_SIZE):
            chunk = operations[start : start + CHUNK_SIZE]
            await _with_retries(lambda chunk=chunk: self._db[BOTS].bulk_write(chunk, ordered=False))
        # Every log gets its _id before the first attempt, so a retry after a
        # lost acknowledgement finds its duplicates instead of writing twice.
        entries = [entry if "_id" in entry else {"_id": ObjectId(), **entry} for entry in logs]
        for start in range(0, len(entries), CHUNK_SIZE):
            batch = entries[start : start + CHUNK_SIZE]
            await _with_retries(lambda batch=batch: _insert_ignoring_duplicates(self._db[TRADE_LOGS], batch))
        return entries


async def _insert_ignoring_duplicates(collection: Any, batch: list[dict[str, Any]]) -> None:
    try:
        await collection.insert_many(batch, ordered=False)
    except BulkWriteError as error:
        if any(item.get("code") != DUPLICATE_KEY for item in error.details.get("writeErrors", [])):
            raise


async def _with_retries(operation: Any) -> None:
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            await operation()
            return
        except ConnectionFailure:
            if attempt == WRITE_ATTEMPTS:
                raise
            log.warning("database write failed, retrying", extra={"attempt": attempt})
            await asyncio.sleep(0.2 * attempt)
