"""The one interface every market-data source implements, and its value types.

Prices and quantities are Decimals (exact, as the exchange sent them);
times are epoch milliseconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Bar:
    """One kline as the exchange reports it (``closed`` is decided by the caller's clock)."""

    open_time_ms: int
    close_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True, slots=True)
class PriceQuote:
    symbol: str
    price: Decimal
    time_ms: int


@dataclass(frozen=True, slots=True)
class TradingRules:
    """A symbol's exchangeInfo filters."""

    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    market_step_size: Decimal
    market_max_qty: Decimal


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    upstream_requests: int = 0
    weight_used_1m: int = 0
    weight_limit_1m: int = 0
    backoff_seconds_left: float = 0.0


class MarketSource(Protocol):
    """A market-data source. Methods raise ``services.common.errors`` types only.

    ``deadline`` is a ``time.monotonic()`` instant by which the caller needs an
    answer (from its gRPC deadline), or None.
    """

    name: str

    async def fetch_bars(self, symbol: str, interval: str, count: int, deadline: float | None) -> list[Bar]:
        """The latest ``count`` bars (the in-progress one included), oldest first."""
        ...

    async def fetch_price(self, symbol: str, deadline: float | None) -> PriceQuote: ...

    async def trading_rules(self, symbol: str, deadline: float | None) -> TradingRules:
        """The symbol's filters; raises InvalidArgument for a symbol the exchange does not list."""
        ...

    async def ensure_known_symbol(self, symbol: str, deadline: float | None) -> None:
        """Raise InvalidArgument unless the exchange lists ``symbol``."""
        ...

    def stats(self) -> UpstreamStats: ...

    async def close(self) -> None: ...
