"""The trading fake's records: symbols, accounts, positions, errors, and number formatting."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

TAKER_FEE_RATE = Decimal("0.0005")
ORDER_LIMIT_10S = 300
ORDER_LIMIT_1M = 1200
UNKNOWN_STATUS_MESSAGE = "Unknown error, please check your request or try again later."


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    price_precision: int
    quantity_precision: int


DEFAULT_SYMBOLS = (
    SymbolSpec("BTCUSDT", Decimal("0.10"), Decimal("0.001"), Decimal("0.001"), Decimal("120"), Decimal("100"), 2, 3),
    SymbolSpec("ETHUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal("2000"), Decimal("20"), 2, 3),
)


class ApiError(Exception):
    """A Binance error answer: HTTP status plus ``{"code", "msg"}``."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}


@dataclass
class Fault:
    method: str
    path: str
    status: int
    code: int
    msg: str
    headers: dict[str, str]
    remaining: int
    params: dict[str, str] = field(default_factory=dict)   # only requests carrying these parameters


@dataclass
class Position:
    amount: Decimal = Decimal(0)      # signed: > 0 long, < 0 short
    entry_price: Decimal = Decimal(0)
    realized: Decimal = Decimal(0)    # accumulated realized PnL (ACCOUNT_UPDATE "cr")


@dataclass
class Account:
    api_key: str
    api_secret: str
    wallet_balance: Decimal
    dual_side: bool = False
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    algo_orders: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    income: list[dict[str, Any]] = field(default_factory=list)
    order_times: deque[float] = field(default_factory=deque)


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    api_key: str | None
    status: int = 0   # 0 while the answer is still being prepared


def fmt(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -int(exponent))


def split_signature(raw: str) -> tuple[str, str | None]:
    """``a=1&b=2&signature=ff`` -> (``a=1&b=2``, ``ff``), keeping the rest byte for byte."""
    parts = raw.split("&") if raw else []
    kept = [part for part in parts if not part.startswith("signature=")]
    signature = next((part.split("=", 1)[1] for part in parts if part.startswith("signature=")), None)
    return "&".join(kept), signature
