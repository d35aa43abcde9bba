"""HMAC-SHA256 signatures on webhook deliveries, and the check receivers run.

The signed message is ``"<timestamp>.<raw body>"`` with the webhook's own
signing secret; the header carries ``sha256=<hex digest>``. Binding the
timestamp into the signature lets a receiver reject replays older than a
tolerance window.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Tradebot-Signature"
TIMESTAMP_HEADER = "X-Tradebot-Timestamp"
EVENT_HEADER = "X-Tradebot-Event"
DELIVERY_HEADER = "X-Tradebot-Delivery"
_PREFIX = "sha256="


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Tradebot-Signature`` header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    return _PREFIX + _digest(secret, timestamp, body)


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    header: str,
    tolerance: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` at ``timestamp`` and the timestamp is within ``tolerance`` seconds.

    ``body`` must be the raw request body, byte for byte: re-serialised JSON
    will not match.
    """
    if not header.startswith(_PREFIX):
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    expected = _digest(secret, timestamp, body)
    return hmac.compare_digest(expected, header[len(_PREFIX) :])
