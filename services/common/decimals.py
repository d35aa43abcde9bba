"""Exact decimal values on the wire (see protos/tradebot/v1/common.proto)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from services.common.errors import InvalidArgument


def parse_decimal(value: str, field: str, *, allow_empty: bool = False, positive: bool = False) -> Decimal | None:
    """Parse a decimal string from a request; reject NaN, infinities and junk."""
    if value == "" and allow_empty:
        return None
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidArgument(f"{field} must be a decimal number, got {value!r}") from None
    if not number.is_finite():
        raise InvalidArgument(f"{field} must be a finite number, got {value!r}")
    if positive and number <= 0:
        raise InvalidArgument(f"{field} must be greater than 0, got {value!r}")
    return number


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros: Decimal('1E+1') -> '10'."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text
