"""Each Upstash-signed delivery runs at most one tick.

A signature is valid for its whole lifetime (five minutes by default), so a
captured delivery could otherwise be sent again to start more ticks. Its
``jti`` (or, without one, the token's hash) is inserted into ``cronreplays``
before the tick runs; a second insert of the same key is a replay. Entries
carry the token's expiry and a TTL index removes them after it: by then the
signature itself is refused.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.gateway.repository import DatabaseUnavailable

log = logging.getLogger(__name__)

COLLECTION = "cronreplays"


def delivery_key(jti: object, token: str) -> str:
    if isinstance(jti, str) and jti:
        return f"jti:{jti}"
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class DeliveryReplayStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self._collection = db[COLLECTION]

    async def ensure_index(self) -> None:
        try:
            await self._collection.create_index("expiresAt", expireAfterSeconds=0, name="expiresAt_ttl")
        except Exception as error:  # without it old keys stay, which costs space, never safety
            log.warning("could not create the delivery replay index", extra={"error": type(error).__name__})

    async def first_use(self, key: str, expires_at: datetime, now: datetime) -> bool:
        """True the first time ``key`` is seen; False for a replay. Raises DatabaseUnavailable."""
        try:
            await self._collection.insert_one({"_id": key, "expiresAt": expires_at, "firstSeenAt": now})
        except DuplicateKeyError:
            return False
        except PyMongoError as error:
            raise DatabaseUnavailable(type(error).__name__) from error
        return True
