"""Binance JSON -> the broker's value types (pure functions, no I/O).

A payload that lacks a field or carries a non-number is an unreadable
answer: ``Unavailable``, so the cycle opens nothing rather than trusting a
half-read position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from services.common.errors import FailedPrecondition, Unavailable
from services.executor.brokers.base import ExchangePosition, Fill, PositionSide

QUOTE_ASSET = "USDT"


def dec(payload: Mapping[str, Any], key: str) -> Decimal:
    try:
        value = Decimal(str(payload[key]))
    except (KeyError, InvalidOperation, TypeError, ValueError):
        raise Unavailable(f"Binance answer lacks a readable {key!r}") from None
    if not value.is_finite():
        raise Unavailable(f"Binance answer has a non-finite {key!r}")
    return value


def _one_way_row(rows: Iterable[Mapping[str, Any]], symbol: str) -> Mapping[str, Any] | None:
    open_rows = [row for row in rows if row.get("symbol") == symbol and dec(row, "positionAmt") != 0]
    if not open_rows:
        return None
    if len(open_rows) > 1 or open_rows[0].get("positionSide", "BOTH") != "BOTH":
        raise FailedPrecondition(f"{symbol} has hedge-mode positions; this bot trades one-way positions only")
    return open_rows[0]


def _position(row: Mapping[str, Any], symbol: str, entry: Decimal, mark: Decimal, unrealized: Decimal,
              initial_margin: Decimal, fallback_leverage: int) -> ExchangePosition:
    amount = dec(row, "positionAmt")
    notional = abs(dec(row, "notional"))
    # v3 dropped the leverage field; notional / initial margin gives it back.
    leverage = int((notional / initial_margin).to_integral_value()) if initial_margin > 0 else fallback_leverage
    isolated_wallet = dec(row, "isolatedWallet") if "isolatedWallet" in row else Decimal(0)
    return ExchangePosition(
        symbol=symbol,
        side="LONG" if amount > 0 else "SHORT",
        quantity=abs(amount),
        entry_price=entry,
        mark_price=mark,
        unrealized_pnl=unrealized,
        leverage=leverage,
        margin=isolated_wallet if isolated_wallet > 0 else initial_margin,
    )


def parse_position(rows: Iterable[Mapping[str, Any]], symbol: str, fallback_leverage: int) -> ExchangePosition | None:
    """positionRisk v3 rows -> the one-way position of ``symbol``, or None when flat."""
    row = _one_way_row(rows, symbol)
    if row is None:
        return None
    return _position(row, symbol, dec(row, "entryPrice"), dec(row, "markPrice"), dec(row, "unRealizedProfit"),
                     dec(row, "positionInitialMargin"), fallback_leverage)


def account_rows(answer: Any) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``/fapi/v3/account`` -> (assets, positions), or Unavailable when the shape is wrong."""
    if not isinstance(answer, Mapping):
        raise Unavailable("Binance account answer is not an object")
    assets, positions = answer.get("assets"), answer.get("positions")
    if not isinstance(assets, list) or not isinstance(positions, list):
        raise Unavailable("Binance account answer lacks its assets or positions")
    return assets, positions


def hedge_positions_open(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether account position rows show the account in hedge mode (an open row with a LONG/SHORT side)."""
    return any(row.get("positionSide", "BOTH") != "BOTH" and dec(row, "positionAmt") != 0 for row in rows)


def parse_account_positions(rows: Iterable[Mapping[str, Any]],
                            fallback_leverage: Mapping[str, int]) -> dict[str, ExchangePosition]:
    """``/fapi/v3/account`` position rows -> the open one-way position of each symbol.

    These rows carry no entry or mark price; both follow exactly from what they
    do carry (signed amount and notional, unrealised PnL):
    mark = notional / amount and entry = (notional − unrealised PnL) / amount,
    since notional = amount × mark and unrealised PnL = amount × (mark − entry).
    """
    listed = list(rows)
    positions: dict[str, ExchangePosition] = {}
    for symbol in sorted({str(row.get("symbol")) for row in listed if row.get("symbol")}):
        row = _one_way_row(listed, symbol)
        if row is None:
            continue
        amount, notional, unrealized = dec(row, "positionAmt"), dec(row, "notional"), dec(row, "unrealizedProfit")
        positions[symbol] = _position(row, symbol, entry=(notional - unrealized) / amount, mark=notional / amount,
                                      unrealized=unrealized, initial_margin=dec(row, "initialMargin"),
                                      fallback_leverage=fallback_leverage.get(symbol, 1))
    return positions


def trade_pnl(trade: Mapping[str, Any]) -> Decimal:
    """What one userTrades fill adds to the income history: its realised PnL minus a USDT commission."""
    fee = abs(dec(trade, "commission")) if trade.get("commissionAsset", QUOTE_ASSET) == QUOTE_ASSET else Decimal(0)
    return dec(trade, "realizedPnl") - fee


def usdt_fee(trades: Iterable[Mapping[str, Any]]) -> Decimal:
    """Commissions paid in the quote asset (fees in BNB are not converted)."""
    return sum((abs(dec(t, "commission")) for t in trades if t.get("commissionAsset", QUOTE_ASSET) == QUOTE_ASSET), Decimal(0))


def fill_from_order(order: Mapping[str, Any], fee: Decimal) -> Fill:
    return Fill(
        client_order_id=str(order.get("clientOrderId", "")),
        exchange_order_id=str(order.get("orderId", "")),
        price=dec(order, "avgPrice"),
        quantity=dec(order, "executedQty"),
        fee=fee,
        time_ms=int(order.get("updateTime") or order.get("time") or 0),
    )


@dataclass(frozen=True)
class BookedTrade:
    """One position's life rebuilt from userTrades: opening fills until the net quantity is back to zero."""

    entry_price: Decimal
    exit_price: Decimal
    quantity: Decimal
    realized_pnl: Decimal   # sum of the exchange's realizedPnl minus every commission (entry and exit)
    fees: Decimal
    open_time_ms: int
    close_time_ms: int
    closing_order_ids: frozenset[str]


def round_trips(trades: Iterable[Mapping[str, Any]], side: PositionSide) -> list[BookedTrade]:
    """Every complete round trip of a ``side`` position in ``trades``, oldest first.

    A round trip runs from an opening fill until the net quantity is back to
    zero; closing fills before the first opening one (the tail of an earlier
    position) and an unfinished last position are left out.
    """
    opening_side = "BUY" if side == "LONG" else "SELL"
    ordered = sorted(trades, key=lambda t: (int(t.get("time", 0)), int(t.get("id", 0))))
    booked: list[BookedTrade] = []
    current: list[Mapping[str, Any]] = []
    net = Decimal(0)
    for trade in ordered:
        opening = trade.get("side") == opening_side
        if not current and not opening:
            continue
        current.append(trade)
        net += dec(trade, "qty") if opening else -dec(trade, "qty")
        if net <= 0:
            booked.append(_book(current, opening_side))
            current, net = [], Decimal(0)
    return booked


def book_trade(trades: Iterable[Mapping[str, Any]], side: PositionSide) -> BookedTrade | None:
    """The first complete round trip (the position that opened first); None if it has not closed yet."""
    trips = round_trips(trades, side)
    return trips[0] if trips else None


def _book(fills: list[Mapping[str, Any]], opening_side: str) -> BookedTrade:
    opens = [t for t in fills if t.get("side") == opening_side]
    closes = [t for t in fills if t.get("side") != opening_side]
    opened = sum((dec(t, "qty") for t in opens), Decimal(0))
    closed = sum((dec(t, "qty") for t in closes), Decimal(0))
    fees = usdt_fee(fills)
    return BookedTrade(
        entry_price=sum((dec(t, "qty") * dec(t, "price") for t in opens), Decimal(0)) / opened,
        exit_price=sum((dec(t, "qty") * dec(t, "price") for t in closes), Decimal(0)) / closed,
        quantity=opened,
        realized_pnl=sum((dec(t, "realizedPnl") for t in closes), Decimal(0)) - fees,
        fees=fees,
        open_time_ms=int(opens[0].get("time", 0)),
        close_time_ms=int(closes[-1].get("time", 0)),
        closing_order_ids=frozenset(str(t.get("orderId")) for t in closes),
    )


def close_reason(closing_order_ids: frozenset[str], algo_orders: Iterable[Mapping[str, Any]],
                 own_closes: Mapping[str, str]) -> str:
    """STOP_LOSS / TAKE_PROFIT when one of our conditional orders fired, the reason we closed with, else EXTERNAL."""
    for algo in algo_orders:
        if str(algo.get("actualOrderId") or "") in closing_order_ids:
            if algo.get("orderType") == "STOP_MARKET":
                return "STOP_LOSS"
            if algo.get("orderType") == "TAKE_PROFIT_MARKET":
                return "TAKE_PROFIT"
    for order_id in closing_order_ids:
        if order_id in own_closes:
            return own_closes[order_id]
    return "EXTERNAL"
