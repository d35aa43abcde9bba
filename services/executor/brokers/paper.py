"""A simulated USDⓈ-M futures account per exchange connection, persisted in MongoDB.

Collections (amounts are decimal strings):
- ``paperaccounts``  one per connection: wallet balance, margin locked by
  open positions, per-symbol leverage; updated with optimistic versioning so
  several bots of one account in the same tick never lose an update.
- ``paperpositions`` one isolated position per (connection, symbol); its
  ``_id`` makes a second concurrent entry on the symbol impossible.
- ``paperfills``     every entry/exit fill keyed by client order id (idempotency).
- ``papertrades``    closed trades with realised PnL net of fees.
Storage sits behind ``paper_store.PaperStore``: MongoDB for the executor,
process memory for backtests (``MemoryPaperStore``); the rules here are shared.

Fills happen at the reference price plus the taker fee. Stop-loss and
take-profit trigger on candles that opened at or after the entry (their
high/low) and on the latest price; when one candle touches both, the stop is
assumed hit first. Triggered orders fill at their trigger price. There is no
liquidation or funding simulation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.common.decimals import format_decimal
from services.common.errors import FailedPrecondition, Unavailable
from services.executor.brokers.base import (
    AccountSnapshot,
    ClosedTradeRecord,
    EntryOrder,
    ExchangePosition,
    Fill,
    MarketView,
    PositionSide,
    ProtectiveOrders,
)
from services.executor.brokers.paper_store import MongoPaperStore, PaperStore

_ACCOUNT_RETRIES = 100


def _now_ms() -> int:
    return int(time.time() * 1000)


def _d(value: Any) -> Decimal:
    return Decimal(str(value))


def _s(value: Decimal) -> str:
    return format_decimal(value)


async def ensure_paper_indexes(db: AsyncDatabase) -> None:
    """Indexes for the per-cycle queries (idempotent; run once per process)."""
    await db["papertrades"].create_index([("connectionId", 1), ("symbol", 1), ("closeTimeMs", 1)])
    await db["papertrades"].create_index([("connectionId", 1), ("symbol", 1), ("openTimeMs", 1)])
    await db["papertrades"].create_index([("connectionId", 1), ("closeTimeMs", 1)])   # the per-tick daily PnL
    await db["paperpositions"].create_index([("connectionId", 1)])   # the per-tick positions snapshot


class PaperBroker:
    """Implements ``services.executor.brokers.base.Broker`` for ``mode: paper``."""

    def __init__(
        self,
        db: AsyncDatabase | PaperStore,
        connection_id: str,
        *,
        initial_balance: Decimal,
        taker_fee: Decimal,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        # A MongoDB database (the executor) or any PaperStore (backtests: in memory).
        self._store: PaperStore = MongoPaperStore(db) if isinstance(db, AsyncDatabase) else db
        self._connection_id = connection_id
        self._initial_balance = initial_balance
        self._taker_fee = taker_fee
        self._clock = clock
        self._prices: dict[str, Decimal] = {}

    # -- account -------------------------------------------------------
    async def _account_doc(self) -> dict[str, Any]:
        return await self._store.get_or_create_account(self._connection_id, {
            "walletBalance": _s(self._initial_balance),
            "lockedMargin": "0",
            "version": 0,
            "symbols": {},
            "createdAtMs": self._clock(),
        })

    async def _adjust_balance(self, wallet_delta: Decimal, locked_delta: Decimal,
                              require_available: Decimal | None = None,
                              read: dict[str, Any] | None = None) -> None:
        """Apply a balance change atomically (compare-and-set on ``version``).

        ``read`` is an account document the caller has just read: the first attempt uses it.
        """
        for _ in range(_ACCOUNT_RETRIES):
            doc, read = read or await self._account_doc(), None
            wallet, locked = _d(doc["walletBalance"]), _d(doc["lockedMargin"])
            if require_available is not None and wallet - locked < require_available:
                raise FailedPrecondition(
                    f"paper order rejected: margin is insufficient (available {_s(wallet - locked)} USDT, "
                    f"needed {_s(require_available)} USDT)"
                )
            if await self._store.compare_and_set_balance(
                self._connection_id, doc["version"], _s(wallet + wallet_delta), _s(locked + locked_delta)
            ):
                return
        raise Unavailable("paper account is busy; try again")

    async def account(self) -> AccountSnapshot:
        doc = await self._account_doc()
        wallet, locked = _d(doc["walletBalance"]), _d(doc["lockedMargin"])
        return AccountSnapshot(available_balance=wallet - locked, wallet_balance=wallet)

    async def prepare_symbol(self, symbol: str, leverage: int, margin_type: str) -> None:
        settings = {"leverage": leverage, "marginType": margin_type}
        # The cycle has read the account (creating it) before any entry: one write in the usual case.
        if not await self._store.set_symbol_settings(self._connection_id, symbol, settings):
            await self._account_doc()
            await self._store.set_symbol_settings(self._connection_id, symbol, settings)

    # -- positions -----------------------------------------------------
    def _position_key(self, symbol: str) -> str:
        return f"{self._connection_id}:{symbol}"

    async def _position_doc(self, symbol: str) -> dict[str, Any] | None:
        return await self._store.get_position(self._position_key(symbol))

    def _mark(self, doc: dict[str, Any]) -> Decimal:
        return self._prices.get(doc["symbol"]) or _d(doc.get("markPrice") or doc["entryPrice"])

    async def positions(self) -> dict[str, ExchangePosition]:
        docs = await self._store.list_positions(self._connection_id)
        return {doc["symbol"]: self._position_from_doc(doc) for doc in docs}

    async def position(self, symbol: str) -> ExchangePosition | None:
        doc = await self._position_doc(symbol)
        return None if doc is None else self._position_from_doc(doc)

    def _position_from_doc(self, doc: dict[str, Any]) -> ExchangePosition:
        symbol = doc["symbol"]
        mark = self._mark(doc)
        entry, quantity = _d(doc["entryPrice"]), _d(doc["quantity"])
        return ExchangePosition(
            symbol=symbol,
            side=doc["side"],
            quantity=quantity,
            entry_price=entry,
            mark_price=mark,
            unrealized_pnl=_gross_pnl(doc["side"], entry, mark, quantity),
            leverage=int(doc["leverage"]),
            margin=_d(doc["margin"]),
        )

    async def observe(self, market: MarketView) -> bool:
        """True when the symbol has a position: its mark moved, or a stop filled and closed it."""
        self._prices[market.symbol] = market.price
        doc = await self._position_doc(market.symbol)
        if doc is None:
            return False
        opened = int(doc["openTimeMs"])
        now = self._clock()
        points = [
            (candle.low, candle.high, min(candle.close_time_ms, now))
            for candle in sorted(market.candles, key=lambda c: c.open_time_ms)
            if candle.open_time_ms >= opened
        ]
        points.append((market.price, market.price, now))
        for low, high, when in points:
            trigger = _triggered(doc, low, high)
            if trigger is not None:
                reason, price, client_id = trigger
                await self._close(doc, price, reason, client_id, when)
                return True
        await self._store.update_position(doc["_id"], opened, {"markPrice": _s(market.price)})
        return True

    # -- orders --------------------------------------------------------
    async def find_entry(self, symbol: str, client_order_id: str) -> Fill | None:
        fill = await self._store.get_fill(f"{self._connection_id}:{client_order_id}", "ENTRY")
        if fill is not None:
            return _fill_from_doc(fill)
        doc = await self._position_doc(symbol)
        if doc is not None and doc.get("entryClientOrderId") == client_order_id:
            return _entry_fill_from_position(doc)
        return None

    async def open_position(self, order: EntryOrder) -> Fill:
        existing = await self.find_entry(order.symbol, order.client_order_id)
        if existing is not None:
            return existing
        if order.quantity <= 0 or order.reference_price <= 0:
            raise FailedPrecondition("paper order rejected: quantity and price must be positive")
        account = await self._account_doc()
        leverage = int(account.get("symbols", {}).get(order.symbol, {}).get("leverage", 1))
        now = self._clock()
        notional = order.reference_price * order.quantity
        fee = notional * self._taker_fee
        margin = notional / leverage
        doc = {
            "_id": self._position_key(order.symbol),
            "connectionId": self._connection_id,
            "symbol": order.symbol,
            "side": order.side,
            "quantity": _s(order.quantity),
            "entryPrice": _s(order.reference_price),
            "markPrice": _s(order.reference_price),
            "leverage": leverage,
            "margin": _s(margin),
            "entryFee": _s(fee),
            "openTimeMs": now,
            "entryClientOrderId": order.client_order_id,
            "entryOrderId": f"paper-{uuid.uuid4().hex[:16]}",
        }
        # The position's _id is the claim: one position per symbol, even under concurrency.
        if not await self._store.insert_position(doc):
            again = await self.find_entry(order.symbol, order.client_order_id)
            if again is not None:
                return again
            raise FailedPrecondition(f"paper order rejected: a position is already open on {order.symbol}") from None
        try:
            await self._adjust_balance(-fee, margin, require_available=margin + fee, read=account)
        except BaseException:
            await self._store.delete_position(doc["_id"], order.client_order_id)
            raise
        fill = _entry_fill_from_position(doc)
        await self._record_fill(fill, order.symbol, order.side, "ENTRY")
        return fill

    async def protect(self, symbol: str, side: PositionSide, stop_loss: Decimal, take_profit: Decimal,
                      stop_loss_client_id: str, take_profit_client_id: str) -> ProtectiveOrders:
        doc = await self._position_doc(symbol)
        if doc is None or doc["side"] != side:
            raise FailedPrecondition(f"paper order rejected: no {side} position on {symbol} to protect")
        mark = self._mark(doc)
        # Like Binance's -2021: a stop on the wrong side of the price would trigger at once.
        wrong_side = stop_loss >= mark if side == "LONG" else stop_loss <= mark
        if wrong_side:
            raise FailedPrecondition(
                f"paper order rejected: stop-loss {_s(stop_loss)} would immediately trigger (mark {_s(mark)})"
            )
        await self._store.update_position(doc["_id"], doc["openTimeMs"], {
            "stopLoss": _s(stop_loss), "stopLossId": stop_loss_client_id,
            "takeProfit": _s(take_profit), "takeProfitId": take_profit_client_id,
        })
        return ProtectiveOrders(stop_loss_client_id, stop_loss, take_profit_client_id, take_profit)

    async def protective_orders(self, position: ExchangePosition) -> ProtectiveOrders:
        doc = await self._position_doc(position.symbol)
        if doc is None or doc["side"] != position.side:   # paper stops always close the whole position
            return ProtectiveOrders(None, None, None, None)
        return _protective_from_doc(doc)

    async def place_take_profit(self, symbol: str, side: PositionSide, take_profit: Decimal,
                                client_id: str) -> ProtectiveOrders:
        doc = await self._position_doc(symbol)
        if doc is None or doc["side"] != side:
            raise FailedPrecondition(f"paper order rejected: no {side} position on {symbol} to protect")
        await self._store.update_position(doc["_id"], doc["openTimeMs"],
                                          {"takeProfit": _s(take_profit), "takeProfitId": client_id})
        return ProtectiveOrders(None, None, client_id, take_profit)

    async def cancel_protective_orders(self, symbol: str) -> None:
        await self._store.unset_position_fields(
            self._position_key(symbol), ("stopLoss", "stopLossId", "takeProfit", "takeProfitId")
        )

    async def close_position(self, symbol: str, client_order_id: str, reason: str) -> Fill | None:
        doc = await self._position_doc(symbol)
        if doc is None:
            return None
        return await self._close(doc, self._mark(doc), reason, client_order_id, self._clock())

    async def _close(self, doc: dict[str, Any], price: Decimal, reason: str, client_order_id: str,
                     when_ms: int) -> Fill | None:
        claimed = await self._store.take_position(doc["_id"], doc["openTimeMs"])
        if claimed is None:  # another bot of this account closed it a moment ago
            return None
        side, quantity, entry = claimed["side"], _d(claimed["quantity"]), _d(claimed["entryPrice"])
        gross = _gross_pnl(side, entry, price, quantity)
        exit_fee = price * quantity * self._taker_fee
        entry_fee = _d(claimed["entryFee"])
        await self._store.insert_trade({
            "connectionId": self._connection_id,
            "symbol": claimed["symbol"],
            "side": side,
            "entryPrice": _s(entry),
            "exitPrice": _s(price),
            "quantity": _s(quantity),
            "grossPnl": _s(gross),
            "fees": _s(entry_fee + exit_fee),
            "realizedPnl": _s(gross - entry_fee - exit_fee),
            "reason": reason,
            "openTimeMs": int(claimed["openTimeMs"]),
            "closeTimeMs": when_ms,
            "entryClientOrderId": claimed.get("entryClientOrderId"),
            "exitClientOrderId": client_order_id,
        })
        await self._adjust_balance(gross - exit_fee, -_d(claimed["margin"]))
        fill = Fill(client_order_id, f"paper-{uuid.uuid4().hex[:16]}", price, quantity, exit_fee, when_ms)
        await self._record_fill(fill, claimed["symbol"], side, "EXIT")
        return fill

    async def _record_fill(self, fill: Fill, symbol: str, side: str, kind: str) -> None:
        # An existing id (the same client id reused for a later exit) is kept: the trade record is what counts.
        await self._store.insert_fill({
                "_id": f"{self._connection_id}:{fill.client_order_id}",
                "connectionId": self._connection_id,
                "symbol": symbol,
                "side": side,
                "kind": kind,
                "clientOrderId": fill.client_order_id,
                "exchangeOrderId": fill.exchange_order_id,
                "price": _s(fill.price),
                "quantity": _s(fill.quantity),
                "fee": _s(fill.fee),
                "timeMs": fill.time_ms,
            })

    # -- records -------------------------------------------------------
    async def closed_trade(self, symbol: str, side: PositionSide, open_time_ms: int) -> ClosedTradeRecord | None:
        if open_time_ms > 0:
            trade = await self._store.first_trade_opened_since(self._connection_id, symbol, side, open_time_ms)
        else:
            trade = await self._store.latest_closed_trade(self._connection_id, symbol, side)
        if trade is None:
            return None
        return ClosedTradeRecord(
            symbol=trade["symbol"],
            side=trade["side"],
            entry_price=_d(trade["entryPrice"]),
            exit_price=_d(trade["exitPrice"]),
            quantity=_d(trade["quantity"]),
            realized_pnl=_d(trade["realizedPnl"]),
            fees=_d(trade["fees"]),
            reason=trade["reason"],
            open_time_ms=int(trade["openTimeMs"]),
            close_time_ms=int(trade["closeTimeMs"]),
        )

    async def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        return await self._store.realized_pnl_since(self._connection_id, symbol, since_ms)

    async def realized_pnl_by_symbol_since(self, since_ms: int) -> dict[str, Decimal]:
        return await self._store.realized_pnl_by_symbol_since(self._connection_id, since_ms)

    async def close(self) -> None:
        """Nothing to release: the MongoDB client belongs to the server."""


def _gross_pnl(side: str, entry: Decimal, exit_price: Decimal, quantity: Decimal) -> Decimal:
    return (exit_price - entry) * quantity if side == "LONG" else (entry - exit_price) * quantity


def _triggered(doc: dict[str, Any], low: Decimal, high: Decimal) -> tuple[str, Decimal, str] | None:
    """(reason, fill price, client id) when the stop or the target is touched; the stop wins a tie."""
    long = doc["side"] == "LONG"
    stop = doc.get("stopLoss")
    if stop is not None:
        stop_price = _d(stop)
        if (long and low <= stop_price) or (not long and high >= stop_price):
            return "STOP_LOSS", stop_price, doc.get("stopLossId") or "paper-stop"
    target = doc.get("takeProfit")
    if target is not None:
        target_price = _d(target)
        if (long and high >= target_price) or (not long and low <= target_price):
            return "TAKE_PROFIT", target_price, doc.get("takeProfitId") or "paper-target"
    return None


def _entry_fill_from_position(doc: dict[str, Any]) -> Fill:
    return Fill(
        client_order_id=doc["entryClientOrderId"],
        exchange_order_id=doc.get("entryOrderId", ""),
        price=_d(doc["entryPrice"]),
        quantity=_d(doc["quantity"]),
        fee=_d(doc["entryFee"]),
        time_ms=int(doc["openTimeMs"]),
    )


def _fill_from_doc(doc: dict[str, Any]) -> Fill:
    return Fill(doc["clientOrderId"], doc["exchangeOrderId"], _d(doc["price"]), _d(doc["quantity"]),
                _d(doc["fee"]), int(doc["timeMs"]))


def _protective_from_doc(doc: dict[str, Any]) -> ProtectiveOrders:
    stop, target = doc.get("stopLoss"), doc.get("takeProfit")
    return ProtectiveOrders(
        stop_loss_id=doc.get("stopLossId"),
        stop_loss_price=_d(stop) if stop is not None else None,
        take_profit_id=doc.get("takeProfitId"),
        take_profit_price=_d(target) if target is not None else None,
    )
