"""Authenticating the cron caller: ``Authorization: Bearer <CRON_SECRET>``.

The comparison is constant-time over bytes, so response timing reveals
nothing about how much of a guess was right. Headers that are absurdly
long are rejected before any comparison.
"""

from __future__ import annotations

import hmac

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
