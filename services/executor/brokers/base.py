"""The seam between the executor's cycle and an exchange account.

Two implementations: ``paper.PaperBroker`` (a simulated USDⓈ-M futures
account persisted in MongoDB) and ``binance.BinanceFuturesBroker`` (live or
testnet through python-binance). The cycle (``cycle.py``), the safety rules
and the sizing are written once against this interface, so ``mode: paper``
behaves like live minus the network.

All amounts are ``Decimal``. Quantities and prices handed to a broker are
already rounded to the symbol's filters by ``sizing.py``; brokers never
round on their own. Failures are raised as ``services.common.errors``
types (``Unavailable`` retryable, ``FailedPrecondition``/``InvalidArgument``
not) with the exchange's code and message, never with credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

from services.common.errors import ResourceExhausted

PositionSide = Literal["LONG", "SHORT"]


class AccountNotReady(ResourceExhausted):
    """The account's state is not known yet: its first contact (or a reconcile after a stream gap) waits for
    exchange weight. Nothing may be decided on it; the cycle reports the stored position and defers."""


@dataclass(frozen=True)
class AccountSnapshot:
    available_balance: Decimal   # USDT usable as new margin
    wallet_balance: Decimal


@dataclass(frozen=True)
class ExchangePosition:
    symbol: str
    side: PositionSide
    quantity: Decimal            # always positive
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    leverage: int
    margin: Decimal              # initial/isolated margin held by the position


@dataclass(frozen=True)
class EntryOrder:
    symbol: str
    side: PositionSide
    quantity: Decimal
    client_order_id: str         # deterministic per (bot, tick): a retry finds the same order
    reference_price: Decimal     # the price the size was computed from (paper fills here)
    first_attempt: bool = False  # no earlier attempt ever got this far (its intent record is new): nothing to look up


@dataclass(frozen=True)
class Fill:
    client_order_id: str
    exchange_order_id: str
    price: Decimal               # average fill price
    quantity: Decimal
    fee: Decimal
    time_ms: int


@dataclass(frozen=True)
class ProtectiveOrders:
    """Stop-loss and take-profit as they stand on the exchange."""

    stop_loss_id: str | None
    stop_loss_price: Decimal | None
    take_profit_id: str | None
    take_profit_price: Decimal | None


@dataclass(frozen=True)
class ClosedTradeRecord:
    """A position that closed, booked from the exchange's (or paper store's) own records."""

    symbol: str
    side: PositionSide
    entry_price: Decimal
    exit_price: Decimal
    quantity: Decimal
    realized_pnl: Decimal        # net of fees
    fees: Decimal
    reason: str                  # STOP_LOSS | TAKE_PROFIT | EMERGENCY_STOP | EXTERNAL
    open_time_ms: int
    close_time_ms: int


@dataclass(frozen=True)
class Candle:
    open_time_ms: int
    close_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    closed: bool = True


@dataclass
class MarketView:
    """What the gateway's market step already knows, handed to the broker each cycle."""

    symbol: str
    price: Decimal
    candles: list[Candle] = field(default_factory=list)


class Broker(Protocol):
    async def observe(self, market: MarketView) -> bool:
        """Let time pass: the paper broker triggers SL/TP on candle high/low; live does nothing.

        True when it changed the symbol's position (a paper stop filled): the cycle then re-reads it."""

    async def account(self) -> AccountSnapshot:
        """Balances. Raises if they cannot be read (the cycle then opens nothing)."""

    async def positions(self) -> dict[str, ExchangePosition]:
        """Every open position of the account by symbol, in one read (shared by the account's bots per tick).

        Raises if they cannot be read: never an empty dict on error."""

    async def position(self, symbol: str) -> ExchangePosition | None:
        """The open position, or None when flat. Raises if it cannot be read: never 'None' on error."""

    async def prepare_symbol(self, symbol: str, leverage: int, margin_type: str) -> None:
        """One-way mode, leverage and margin type; 'no change needed' is success."""

    async def find_entry(self, symbol: str, client_order_id: str) -> Fill | None:
        """The entry placed earlier with this client id (a duplicated tick), or None."""

    async def open_position(self, order: EntryOrder) -> Fill:
        """A MARKET entry. Raises on rejection; an unknown outcome is resolved by client id."""

    async def protect(
        self,
        symbol: str,
        side: PositionSide,
        stop_loss: Decimal,
        take_profit: Decimal,
        stop_loss_client_id: str,
        take_profit_client_id: str,
    ) -> ProtectiveOrders:
        """Place (or find, by client id) the reduce-only stop-loss and take-profit."""

    async def protective_orders(self, position: ExchangePosition) -> ProtectiveOrders:
        """The SL/TP working for ``position`` (the per-tick audit): only orders on its exit side that close
        it whole (``closePosition``, or reduce-only for at least its quantity); others do not protect it."""

    async def place_take_profit(self, symbol: str, side: PositionSide, take_profit: Decimal,
                                client_id: str) -> ProtectiveOrders:
        """Place (or find, by client id) the reduce-only take-profit alone (the stop is already working)."""

    async def close_position(self, symbol: str, client_order_id: str, reason: str) -> Fill | None:
        """Close at market (reduce-only); None if already flat."""

    async def cancel_protective_orders(self, symbol: str) -> None:
        """Cancel leftover SL/TP (after a close, or on an emergency stop)."""

    async def closed_trade(self, symbol: str, side: PositionSide, open_time_ms: int) -> ClosedTradeRecord | None:
        """Book the trade of a position that was open since ``open_time_ms`` and is now gone."""

    async def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        """Realised PnL net of fees since ``since_ms`` (daily-loss rule)."""

    async def realized_pnl_by_symbol_since(self, since_ms: int) -> dict[str, Decimal] | None:
        """``realized_pnl_since`` of every symbol of the account in one read (a symbol without trades is absent);
        None when the broker has no cheaper account-wide read than asking per symbol."""

    async def close(self) -> None:
        """Release network resources."""
