"""Finding a bot's exchange connection in ``exchangeconnections``.

Documents: ``{userId, exchange: "binance", mode: "live"|"testnet"|"paper",
apiKey, apiSecret (Fernet tokens), isActive}``; ``_id`` and ``userId`` are
ObjectIds (a string ``userId`` written by hand is accepted too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

MODES = ("live", "testnet", "paper")
CONNECTION_NOT_FOUND = "exchange connection not found"


@dataclass(frozen=True)
class ExchangeConnection:
    id: str
    user_id: str
    mode: str
    api_key_token: str | None = field(default=None, repr=False)
    api_secret_token: str | None = field(default=None, repr=False)


def parse_object_id(value: str, what: str) -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise InvalidArgument(f"{what} must be a 24-character hex ObjectId") from None


class ConnectionRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self._collection = db["exchangeconnections"]

    async def resolve(self, user_id: str, connection_id: str) -> ExchangeConnection:
        user = parse_object_id(user_id, "bot.user_id")
        owners = {"$in": [user, user_id]}
        if connection_id:
            doc = await self._collection.find_one({"_id": parse_object_id(connection_id, "bot.exchange_connection_id")})
            if doc is None:
                raise NotFound(CONNECTION_NOT_FOUND)
            if str(doc.get("userId")) != str(user):
                raise PermissionDenied("exchange connection belongs to another user")
            if not doc.get("isActive", False):
                raise FailedPrecondition("exchange connection is not active")
            return _to_connection(doc)
        docs = await self._collection.find({"userId": owners, "isActive": True}).limit(2).to_list(length=2)
        if not docs:
            raise NotFound(CONNECTION_NOT_FOUND)
        if len(docs) > 1:
            raise FailedPrecondition(
                "the user has more than one active exchange connection; set the bot's exchangeConnectionId"
            )
        return _to_connection(docs[0])


def _to_connection(doc: dict[str, Any]) -> ExchangeConnection:
    mode = doc.get("mode")
    if mode not in MODES:
        raise FailedPrecondition(f"exchange connection has an unknown mode {mode!r}")
    if doc.get("exchange", "binance") != "binance":
        raise FailedPrecondition(f"exchange {doc.get('exchange')!r} is not supported")
    return ExchangeConnection(
        id=str(doc["_id"]),
        user_id=str(doc["userId"]),
        mode=mode,
        api_key_token=doc.get("apiKey") or None,
        api_secret_token=doc.get("apiSecret") or None,
    )
