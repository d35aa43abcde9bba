"""The 429/418 stop: after Binance says "too many requests" or bans the IP, send nothing until told.

One instance per process guards every upstream call: while it is in force
each call fails at once with RESOURCE_EXHAUSTED carrying the seconds left,
and no request reaches Binance (a 429 ignored becomes a 418 IP ban, and a
ban ignored grows from 2 minutes up to 3 days).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping

from services.common.errors import ResourceExhausted

log = logging.getLogger(__name__)

_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")


def retry_after_seconds(status: int, headers: Mapping[str, str], message: str, default: float, now: float) -> float:
    """Seconds to stay away: ``Retry-After``, else the ban time in a 418 message, else ``default``."""
    raw = headers.get("RETRY-AFTER") or headers.get("Retry-After")
    if raw is not None:
        try:
            return max(1.0, float(raw))
        except ValueError:
            pass
    match = _BANNED_UNTIL.search(message or "")
    if status == 418 and match:
        return max(1.0, int(match.group(1)) / 1000 - now)
    return default


class RateLimitBackoff:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until = 0.0
        self._reason = ""

    def seconds_left(self) -> float:
        return max(0.0, self._until - self._clock())

    def check(self) -> None:
        left = self.seconds_left()
        if left > 0:
            raise ResourceExhausted(
                f"Binance upstream paused after {self._reason}; retry in {left:.1f}s", retry_after=left
            )

    def pause(self, seconds: float, reason: str) -> None:
        until = self._clock() + seconds
        if until > self._until:
            self._until = until
            self._reason = reason
        log.warning("binance upstream paused", extra={"reason": reason, "pauseSeconds": round(seconds, 3)})
