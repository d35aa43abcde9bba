"""Binance kline intervals: validation and candle boundaries in epoch milliseconds.

Candles are aligned the way Binance aligns them: fixed-length intervals on
multiples of their length since the epoch (UTC), weeks opening on Monday
00:00 UTC, months on the first day of the calendar month.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.common.errors import InvalidArgument

_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

FIXED_INTERVAL_MS: dict[str, int] = {
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": _HOUR,
    "2h": 2 * _HOUR,
    "4h": 4 * _HOUR,
    "6h": 6 * _HOUR,
    "8h": 8 * _HOUR,
    "12h": 12 * _HOUR,
    "1d": _DAY,
    "3d": 3 * _DAY,
    "1w": 7 * _DAY,
}
MONTH = "1M"
VALID_INTERVALS: tuple[str, ...] = (*FIXED_INTERVAL_MS, MONTH)

# 1970-01-01 was a Thursday; Binance weeks open on Monday, four days later.
_WEEK_OFFSET_MS = 4 * _DAY


def validate_interval(interval: str) -> str:
    if interval not in VALID_INTERVALS:
        raise InvalidArgument(f"unknown interval {interval!r}; valid intervals: {' '.join(VALID_INTERVALS)}")
    return interval


def open_time_containing(interval: str, time_ms: int) -> int:
    """Open time of the candle of ``interval`` that contains ``time_ms``."""
    if interval == MONTH:
        moment = datetime.fromtimestamp(time_ms / 1000, UTC)
        return _month_start_ms(moment.year, moment.month)
    length = FIXED_INTERVAL_MS[interval]
    offset = _WEEK_OFFSET_MS if interval == "1w" else 0
    return (time_ms - offset) // length * length + offset


def next_open_time(interval: str, open_time_ms: int) -> int:
    """Open time of the candle after the one opening at ``open_time_ms``."""
    if interval == MONTH:
        moment = datetime.fromtimestamp(open_time_ms / 1000, UTC)
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        return _month_start_ms(year, month)
    return open_time_ms + FIXED_INTERVAL_MS[interval]


def previous_open_time(interval: str, open_time_ms: int) -> int:
    if interval == MONTH:
        moment = datetime.fromtimestamp(open_time_ms / 1000, UTC)
        year, month = (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)
        return _month_start_ms(year, month)
    return open_time_ms - FIXED_INTERVAL_MS[interval]


def close_time_of(interval: str, open_time_ms: int) -> int:
    """Binance's closeTime: the last millisecond inside the candle."""
    return next_open_time(interval, open_time_ms) - 1


def _month_start_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
