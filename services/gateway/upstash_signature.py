"""Verifying Upstash (QStash) signed deliveries.

QStash signs every delivery with an HS256 JWT in ``Upstash-Signature``:
``iss`` is "Upstash", ``sub`` the endpoint URL it was sent to, ``exp``/``nbf``
bound its life (5 minutes by default) and ``body`` is the base64url SHA-256 of
the raw request body. Two keys exist so they can rotate without downtime:
the current key is tried first, then the next one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import jwt

ISSUER = "Upstash"
MAX_SIGNATURE_LENGTH = 4096


class SignatureInvalid(Exception):
    """The delivery is not provably from Upstash; the reason is safe to log."""


@dataclass(frozen=True)
class UpstashVerifier:
    current_signing_key: str
    next_signing_key: str | None
    endpoint_url: str
    leeway_seconds: float = 5.0

    def verify(self, signature: str, body: bytes) -> dict[str, Any]:
        """The token's claims when it is valid for this URL and body; raises SignatureInvalid otherwise."""
        if not signature or len(signature) > MAX_SIGNATURE_LENGTH:
            raise SignatureInvalid("missing or oversized Upstash-Signature")
        errors: list[str] = []
        for key in (self.current_signing_key, self.next_signing_key):
            if not key:
                continue
            try:
                return self._verify_with(key, signature, body)
            except SignatureInvalid as error:
                errors.append(str(error))
        raise SignatureInvalid("; ".join(errors) or "no signing key configured")

    def _verify_with(self, key: str, signature: str, body: bytes) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                signature,
                key,
                algorithms=["HS256"],
                issuer=ISSUER,
                leeway=self.leeway_seconds,
                options={"require": ["iss", "sub", "exp", "nbf", "body"]},
            )
        except jwt.InvalidTokenError as error:
            raise SignatureInvalid(f"invalid token: {type(error).__name__}") from None
        if not hmac.compare_digest(str(claims["sub"]).encode(), self.endpoint_url.encode()):
            raise SignatureInvalid("token was issued for another URL")
        expected = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=")
        claimed = str(claims["body"]).encode().rstrip(b"=")
        if not hmac.compare_digest(expected, claimed):
            raise SignatureInvalid("body does not match the signed hash")
        return claims
