"""The bot as MongoDB stores it: the executor's source of truth for who owns it and how it trades.

A RunCycle names a bot; its owner, exchange connection, config, statistics,
stored position and status come from ``botinstances``, never from the
request, so a caller cannot raise a bot's leverage, zero its losing streak or
point it at another user's keys.

Reads are batched: while one ``find`` is in flight, the ids asked for meanwhile
wait and go out together in the next one, so a tick's many concurrent cycles
cost a few round trips, yet a lone call is read at once. Each cycle sees the
document as it is when its read starts (a bot paused a moment ago is seen
paused).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from services.common.bot_documents import BOT_PROJECTION, BotDocument, InvalidBotDocument, parse_bot
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

COLLECTION = "botinstances"
MAX_BATCH = 256   # ids per $in: one query stays small however busy the tick is


@dataclass(frozen=True)
class StoredBot:
    bot: BotDocument
    status: str
    lock_owner: str | None
    locked_until: datetime | None


def parse_bot_instance_id(value: str) -> ObjectId:
    if not ObjectId.is_valid(value):
        raise InvalidArgument(f"bot.bot_instance_id must be a 24-character hex ObjectId, got {value[:40]!r}")
    return ObjectId(value)


def stored_bot(document: dict[str, Any]) -> StoredBot:
    """The parsed document; a broken one fails this bot with the field named (FAILED_PRECONDITION)."""
    try:
        bot = parse_bot(document)
    except InvalidBotDocument as error:
        raise FailedPrecondition(f"Invalid bot document: {error.message}") from None
    locked_until = document.get("lockedUntil")
    if isinstance(locked_until, datetime) and locked_until.tzinfo is None:
        locked_until = locked_until.replace(tzinfo=UTC)
    owner = document.get("lockOwner")
    return StoredBot(
        bot=bot,
        status=str(document.get("status")),
        lock_owner=owner if isinstance(owner, str) else None,
        locked_until=locked_until if isinstance(locked_until, datetime) else None,
    )


class StoredBotReader:
    def __init__(self, db: AsyncDatabase) -> None:
        self._collection = db[COLLECTION]
        self._waiting: dict[ObjectId, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._reading = False

    async def get(self, bot_instance_id: str) -> StoredBot:
        key = parse_bot_instance_id(bot_instance_id)
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._reading:
            self._reading = True
            asyncio.get_running_loop().create_task(self._read_while_waiting())
        document = await future
        if document is None:
            raise NotFound(f"bot instance {bot_instance_id} not found")
        return stored_bot(document)

    async def _read_while_waiting(self) -> None:
        try:
            while self._waiting:
                batch = list(self._waiting)[:MAX_BATCH]
                waiters = {key: self._waiting.pop(key) for key in batch}
                try:
                    documents = await self._read(batch)
                except Exception as error:   # every waiter of the batch gets the read's error
                    for future in _pending(waiters):
                        future.set_exception(error)
                    continue
                except BaseException:        # the reader itself is cancelled: so are its waiters
                    for future in _pending(waiters):
                        future.cancel()
                    raise
                for key, futures in waiters.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(documents.get(key))
        finally:
            self._reading = False

    async def _read(self, ids: Sequence[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
        query: dict[str, Any] = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": list(ids)}}
        found = await self._collection.find(query, BOT_PROJECTION).to_list()
        return {document["_id"]: document for document in found}


def _pending(waiters: dict[ObjectId, list[asyncio.Future[dict[str, Any] | None]]]) -> list[asyncio.Future[Any]]:
    return [future for futures in waiters.values() for future in futures if not future.done()]
