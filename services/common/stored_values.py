"""Reading amounts and dates out of stored documents written by any app version.

The Next.js app, older versions of this backend and hand edits store amounts
as numbers, decimal strings or Decimal128, and dates with or without a zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bson.decimal128 import Decimal128


def to_decimal(value: Any) -> Decimal | None:
    """A stored amount (number, decimal string or Decimal128) as Decimal; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, Decimal128):
            number = value.to_decimal()
        elif isinstance(value, float):
            number = Decimal(repr(value))
        else:
            number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def as_utc(value: Any) -> datetime | None:
    """A stored datetime in UTC (naive values are UTC, as pymongo writes them); None when not a datetime."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
