"""Authenticating the cron caller.

``Authorization: Bearer <CRON_SECRET>``, compared in constant time over
bytes so response timing reveals nothing about how much of a guess was
right; or, when signing keys are configured, an Upstash-signed delivery
(``Upstash-Signature``, see upstash_signature.py), which names its delivery
so the caller can refuse a replay (replays.py). Headers that are absurdly
long are rejected before any comparison.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from services.gateway.replays import delivery_key
from services.gateway.settings import GatewaySettings
from services.gateway.upstash_signature import SignatureInvalid, UpstashVerifier


@dataclass(frozen=True)
class CronAuthorization:
    authorized: bool
    reason: str = ""                        # why not: safe to log, never to send
    delivery: str | None = None             # a signed delivery's key, to be used once
    delivery_expires: datetime | None = None

MAX_AUTHORIZATION_LENGTH = 1024
_SCHEME = b"bearer "


class BearerAuthenticator:
    def __init__(self, secret: str) -> None:
        self._expected = secret.encode("utf-8")

    def __repr__(self) -> str:
        return "BearerAuthenticator([secret])"

    def is_authorized(self, authorization: str | None) -> bool:
        if not authorization or len(authorization) > MAX_AUTHORIZATION_LENGTH:
            return False
        # Starlette decodes header bytes as latin-1; encoding back gives the raw bytes.
        raw = authorization.encode("latin-1", errors="replace")
        if raw[: len(_SCHEME)].lower() != _SCHEME:
            return False
        presented = raw[len(_SCHEME) :].strip()
        return hmac.compare_digest(presented, self._expected)


class CronAuthenticator:
    """Bearer secret first; an Upstash signature when configured."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.bearer = BearerAuthenticator(settings.cron_secret)
        self.upstash: UpstashVerifier | None = None
        current = settings.qstash_current_signing_key or settings.qstash_next_signing_key
        if current and settings.cron_public_url:
            self.upstash = UpstashVerifier(
                current_signing_key=current,
                next_signing_key=settings.qstash_next_signing_key if settings.qstash_current_signing_key else None,
                endpoint_url=settings.cron_public_url,
            )

    def __repr__(self) -> str:
        return f"CronAuthenticator(upstash={self.upstash is not None})"

    def needs_body(self, authorization: str | None, signature: str | None) -> bool:
        """Whether the raw body must be read to decide (only for a signed delivery)."""
        return self.upstash is not None and bool(signature) and not self.bearer.is_authorized(authorization)

    def is_authorized(self, authorization: str | None, signature: str | None, body: bytes = b"") -> CronAuthorization:
        if self.bearer.is_authorized(authorization):
            return CronAuthorization(True)
        if self.upstash is None or not signature:
            return CronAuthorization(False, "no valid bearer secret")
        try:
            claims = self.upstash.verify(signature, body)
        except SignatureInvalid as error:
            return CronAuthorization(False, f"Upstash signature rejected: {error}")
        expires = datetime.fromtimestamp(float(claims["exp"]) + self.upstash.leeway_seconds, UTC)
        return CronAuthorization(True, delivery=delivery_key(claims.get("jti"), signature), delivery_expires=expires)
