"""Operator sessions and the login throttle, both in MongoDB so every gateway replica shares them.

A session is a random token in an HttpOnly cookie; the database keeps only its SHA-256, so a leaked
``dashboardsessions`` collection opens no session. Logging out deletes the document: the old cookie is then
worth nothing anywhere. Each session carries its own CSRF token, required on every action. A session also
records a fingerprint of the password it was opened with: changing ``DASHBOARD_PASSWORD`` ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

SESSIONS = "dashboardsessions"
FAILED_LOGINS = "dashboardloginfailures"
TOKEN_BYTES = 32


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def password_matches(given: str, expected: str | None) -> bool:
    """Constant time in the password's content: both sides are hashed to one length first."""
    if expected is None:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def tokens_match(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def password_fingerprint(password: str) -> str:
    return hmac.new(password.encode(), b"tradebot dashboard session", hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Session:
    token: str     # the cookie's value; never stored
    csrf: str
    expires_at: datetime


class SessionStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], password: str | None, lifetime: timedelta) -> None:
        self._sessions = db[SESSIONS]
        self._fingerprint = None if password is None else password_fingerprint(password)
        self._lifetime = lifetime

    async def ensure_indexes(self) -> None:
        await self._sessions.create_index("expiresAt", expireAfterSeconds=0, name="expiresAt_ttl")

    async def open(self, client: str, now: datetime) -> Session:
        session = Session(secrets.token_urlsafe(TOKEN_BYTES), secrets.token_urlsafe(TOKEN_BYTES), now + self._lifetime)
        await self._sessions.insert_one({
            "_id": _digest(session.token), "csrf": session.csrf, "password": self._fingerprint,
            "client": client, "createdAt": now, "expiresAt": session.expires_at,
        })
        return session

    async def find(self, token: str | None, now: datetime) -> Session | None:
        """The live session of this cookie, or None (absent, forged, logged out, expired, old password)."""
        if not token or len(token) > 256 or self._fingerprint is None:
            return None
        document = await self._sessions.find_one({"_id": _digest(token)})
        if document is None or not tokens_match(document.get("password"), self._fingerprint):
            return None
        expires = document.get("expiresAt")
        if not isinstance(expires, datetime) or expires.replace(tzinfo=expires.tzinfo or UTC) <= now:
            return None   # the TTL index removes it within a minute; until then it is already dead
        return Session(token, str(document.get("csrf", "")), expires)

    async def close(self, token: str) -> None:
        await self._sessions.delete_one({"_id": _digest(token)})


class LoginThrottle:
    """Failed logins per client address and in total, over a sliding window: a guessing client waits."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], attempts: int, window: timedelta) -> None:
        self._failures = db[FAILED_LOGINS]
        self._attempts = attempts
        self._window = window

    async def ensure_indexes(self) -> None:
        await self._failures.create_index("expiresAt", expireAfterSeconds=0, name="expiresAt_ttl")
        await self._failures.create_index([("client", 1), ("at", 1)], name="client_at")

    async def retry_after(self, client: str, now: datetime) -> int | None:
        """Seconds until this client may try again, or None when it may try now."""
        since = now - self._window
        mine = await self._failures.find({"client": client, "at": {"$gt": since}}, {"at": 1}) \
            .sort("at", 1).limit(self._attempts).to_list()
        everyone = await self._failures.count_documents({"at": {"$gt": since}}, limit=self._attempts * 10)
        if len(mine) < self._attempts and everyone < self._attempts * 10:
            return None
        oldest = mine[0]["at"] if len(mine) >= self._attempts else now
        oldest = oldest.replace(tzinfo=oldest.tzinfo or UTC)
        return max(1, int((oldest + self._window - now).total_seconds()) + 1)

    async def failed(self, client: str, now: datetime) -> None:
        await self._failures.insert_one({"client": client, "at": now, "expiresAt": now + self._window})

    async def succeeded(self, client: str) -> None:
        await self._failures.delete_many({"client": client})
