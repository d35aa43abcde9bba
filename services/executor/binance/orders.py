"""Market entries and closes on one account, never sent twice.

* Before an entry is sent, its deterministic client id is looked up (a retried
  tick finds its own fill): in the stream's order book when the account's
  stream is live, else over REST (weight 1). A look-up that found nothing is
  not repeated for the same id within a few seconds.
* An answer with unknown outcome (HTTP 5xx, timeout, reset) is resolved by
  querying the client id, never by sending again; a duplicate client id
  (-4116) returns the order already there. A 429 or 418 is a refusal (not
  executed) and is not looked up.
* The fill's fee comes from the stream's trade events when they arrive within
  ``stream_wait_s``, else from ``userTrades`` (weight 5) if the weight is there
  now, else it is recorded as 0: the entry's stop-loss waits for none of it.

Quantities arrive already rounded to the symbol's filters.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from services.common.decimals import format_decimal
from services.common.errors import FailedPrecondition, InvalidArgument, TradebotError, Unavailable
from services.common.weight_governor import waiting_at_most
from services.executor.binance import errors as errs
from services.executor.binance.records import dec, fill_from_order, usdt_fee
from services.executor.binance.account_state import reported_within
from services.executor.binance.rest import AccountRest
from services.executor.brokers.base import EntryOrder, ExchangePosition, Fill, PositionSide

logger = logging.getLogger(__name__)

# Binance allows ^[.A-Z:/a-z0-9_-]{1,36}$, but python-binance signs parameter values
# before aiohttp percent-encodes the form body, and Binance verifies the encoded
# payload (since 2026-01-15): ':' and '/' would break the signature (-1022).
SAFE_CLIENT_ID = re.compile(r"^[.A-Za-z0-9_-]{1,36}$")
FILLED_STATES = {"FILLED", "PARTIALLY_FILLED"}
FINAL_UNFILLED_STATES = {"CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"}


def check_client_id(client_id: str) -> None:
    if not SAFE_CLIENT_ID.match(client_id):
        raise InvalidArgument(f"client id {client_id!r} must match {SAFE_CLIENT_ID.pattern}")


def exit_side(side: PositionSide) -> str:
    return "SELL" if side == "LONG" else "BUY"


class Orders:
    def __init__(self, rest: AccountRest) -> None:
        self._rest = rest
        self._shared = rest.shared

    async def find_entry(self, symbol: str, client_order_id: str) -> Fill | None:
        check_client_id(client_order_id)
        order = await self._lookup(symbol, client_order_id)
        if order is None:
            self._shared.remember_not_found(client_order_id)
            return None
        order = await self._settled(symbol, order)
        if dec(order, "executedQty") == 0:
            return None
        return await self._fill(symbol, order)

    async def _lookup(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        state = self._shared.live_state()
        if state is not None:
            known = state.order(client_order_id)
            if known is not None:
                return dict(known)
        return await self._query_order(symbol, client_order_id)

    async def open_position(self, order: EntryOrder, position: ExchangePosition | None = None) -> Fill:
        check_client_id(order.client_order_id)
        # Binance only guarantees unique client ids among open orders, and a MARKET order is not open
        # for long: look before sending so a retried tick finds its fill (unless the caller knows no
        # earlier attempt ever got this far, see ``entry_intents``).
        if not order.first_attempt and not self._shared.recently_not_found(order.client_order_id):
            existing = await self.find_entry(order.symbol, order.client_order_id)
            if existing is not None:
                logger.info("entry %s already on Binance; not sending again", order.client_order_id)
                return existing
        self._shared.forget_not_found(order.client_order_id)   # sent from here on: the next look-up must ask
        params = {
            "symbol": order.symbol,
            "side": "BUY" if order.side == "LONG" else "SELL",
            "type": "MARKET",
            "quantity": format_decimal(order.quantity),
            "newClientOrderId": order.client_order_id,
            "newOrderRespType": "RESULT",
        }
        placed = await self._place_market(f"{order.side} entry on {order.symbol}", order.symbol,
                                          order.client_order_id, params, entry=True)
        return await self._fill(order.symbol, placed)

    async def close_position(self, current: ExchangePosition, client_order_id: str, reason: str) -> Fill:
        check_client_id(client_order_id)
        symbol = current.symbol
        params = {
            "symbol": symbol,
            "side": exit_side(current.side),
            "type": "MARKET",
            "quantity": format_decimal(current.quantity),
            "reduceOnly": "true",
            "newClientOrderId": client_order_id,
            "newOrderRespType": "RESULT",
        }
        placed = await self._place_market(f"close of {symbol} ({reason})", symbol, client_order_id, params)
        fill = await self._fill(symbol, placed)
        self._shared.own_closes[fill.exchange_order_id] = reason
        logger.info("closed %s %s at %s (%s)", current.side, symbol, fill.price, reason)
        return fill

    async def _place_market(self, action: str, symbol: str, client_order_id: str, params: Mapping[str, str], *,
                            entry: bool = False) -> dict[str, Any]:
        client = self._rest.client
        try:
            placed = await self._rest.send_order(action, lambda: client.futures_create_order(**params), entry=entry)
        except errs.UnknownOutcome:
            logger.warning("%s: execution status unknown; querying client id %s", action, client_order_id)
            return await self._resolve_order(action, symbol, client_order_id)
        if placed is None:
            logger.warning("%s: client id %s already used; returning that order", action, client_order_id)
            return await self._resolve_order(action, symbol, client_order_id)
        return placed

    async def _resolve_order(self, action: str, symbol: str, client_order_id: str) -> dict[str, Any]:
        """Whether an order with unknown outcome exists: a few looks by client id before deciding."""
        for attempt in range(self._rest.tuning.resolve_attempts):
            try:
                found = await self._lookup(symbol, client_order_id)
            except Unavailable:
                found = None
            if found is not None:
                return found
            await asyncio.sleep(self._rest.tuning.resolve_wait_s * (attempt + 1))
        raise Unavailable(f"{action}: execution status unknown and order {client_order_id} not found; not resent")

    async def _query_order(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        client = self._rest.client
        return await self._rest.read(
            f"order lookup {client_order_id}",
            lambda: client.futures_get_order(symbol=symbol, origClientOrderId=client_order_id),
            accept_codes=frozenset({errs.ORDER_DOES_NOT_EXIST}),
        )

    async def _settled(self, symbol: str, order: dict[str, Any]) -> dict[str, Any]:
        """A MARKET order fills at once; if Binance still says NEW, look again briefly."""
        for attempt in range(self._rest.tuning.resolve_attempts):
            if order.get("status") in FILLED_STATES | FINAL_UNFILLED_STATES:
                return order
            await asyncio.sleep(self._rest.tuning.resolve_wait_s * (attempt + 1))
            try:
                again = await self._lookup(symbol, str(order.get("clientOrderId")))
            except Unavailable:
                continue
            if again is not None:
                order = again
        return order

    async def _fill(self, symbol: str, order: dict[str, Any]) -> Fill:
        """The fill of an order Binance accepted. Past this point the order exists, so only a
        definite 'no fill' raises; the fee is informational (``closed_trade`` books the real one)."""
        order = await self._settled(symbol, order)
        client_id = order.get("clientOrderId")
        status = order.get("status")
        if dec(order, "executedQty") == 0:
            if status in FINAL_UNFILLED_STATES:
                raise FailedPrecondition(f"order {client_id} on {symbol} ended {status} without a fill")
            raise Unavailable(f"order {client_id} on {symbol} is still {status}; its fill is not known yet")
        return fill_from_order(order, await self._fee(symbol, order))

    async def _fee(self, symbol: str, order: Mapping[str, Any]) -> Decimal:
        """The order's USDT commission: from the stream's trade events, else one userTrades read."""
        order_id, executed = int(order["orderId"]), dec(order, "executedQty")
        state = self._shared.live_state()
        if state is not None:
            def fills() -> list[dict[str, Any]]:
                return [row for row in state.trades(symbol) if int(row.get("orderId", -1)) == order_id]

            def complete() -> bool:
                return sum((Decimal(str(row["qty"])) for row in fills()), Decimal(0)) >= executed

            if await reported_within(self._rest.tuning.stream_wait_s, complete):
                return usdt_fee(fills())
        client = self._rest.client
        try:
            # Only the weight there is now: an entry's stop-loss is placed after this read, and the fee is
            # worth no wait for the next minute (``closed_trade`` books the real one).
            with waiting_at_most(0.0):
                trades = await self._rest.read(f"fee lookup for {order.get('clientOrderId')}",
                                               lambda: client.futures_account_trades(symbol=symbol, orderId=order_id))
            return usdt_fee(trades or [])
        except TradebotError as exc:
            logger.warning("fee of order %s on %s unknown (%s); recorded as 0",
                           order.get("clientOrderId"), symbol, exc.message)
            return Decimal(0)
