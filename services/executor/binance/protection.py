"""Stop-loss and take-profit on one account: conditional orders on ``/fapi/v1/algoOrder``.

``closePosition=true``, ``workingType=MARK_PRICE``, never ``/fapi/v1/order``
(-4120 since 2025-12-09), with the caller's client ids so a retry finds them.
The working orders of a symbol come from the user-data stream when it is
live (``ALGO_UPDATE`` events), else from ``openAlgoOrders`` (weight 1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from services.common.decimals import format_decimal
from services.common.errors import FailedPrecondition, TradebotError, Unavailable
from services.common.weight_governor import waiting_at_most
from services.executor.binance import errors as errs
from services.executor.binance.orders import check_client_id, exit_side
from services.executor.binance.rest import AccountRest
from services.executor.brokers.base import ExchangePosition, PositionSide, ProtectiveOrders
from services.executor.binance.records import dec

logger = logging.getLogger(__name__)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def closes_position(row: Mapping[str, Any], position: ExchangePosition) -> bool:
    """Whether a conditional order would take ``position`` off the exchange when it fires: the exit side,
    and all of it (a stop of the other side, say the old one after a flip, or a partial one, does not)."""
    if row.get("side") != exit_side(position.side):
        return False
    if _truthy(row.get("closePosition")):
        return True
    try:
        quantity = Decimal(str(row.get("quantity") or "0"))
    except ArithmeticError:
        return False
    return _truthy(row.get("reduceOnly")) and quantity >= position.quantity


class Protection:
    def __init__(self, rest: AccountRest) -> None:
        self._rest = rest
        self._shared = rest.shared

    async def protect(self, symbol: str, side: PositionSide, stop_loss: Decimal, take_profit: Decimal,
                      stop_loss_client_id: str, take_profit_client_id: str) -> ProtectiveOrders:
        check_client_id(stop_loss_client_id)
        check_client_id(take_profit_client_id)
        try:
            # Only our own ids matter here, and an earlier attempt's orders are long reported: the stream will do.
            # Without a stream, the read takes only the weight there is now: the stop (weight 0) must not
            # wait for the next minute behind a look-up it can do without.
            with waiting_at_most(0.0):
                working = {o.get("clientAlgoId"): o for o in await self.open_algo_orders(symbol, own_ids_only=True)}
        except TradebotError:
            working = {}  # placing with our ids is safe anyway: a duplicate answers -4116
        stop = working.get(stop_loss_client_id) or await self._place_conditional(
            symbol, side, "STOP_MARKET", stop_loss, stop_loss_client_id
        )
        try:
            target: dict[str, Any] | None = working.get(take_profit_client_id) or await self._place_conditional(
                symbol, side, "TAKE_PROFIT_MARKET", take_profit, take_profit_client_id
            )
        except TradebotError as exc:
            # The stop is in place, so the position is protected; the caller sees the missing target.
            logger.error("take-profit for %s not placed: %s", symbol, exc.message)
            target = None
        return ProtectiveOrders(
            stop_loss_id=str(stop["clientAlgoId"]),
            stop_loss_price=dec(stop, "triggerPrice"),
            take_profit_id=str(target["clientAlgoId"]) if target else None,
            take_profit_price=dec(target, "triggerPrice") if target else None,
        )

    async def _place_conditional(self, symbol: str, side: PositionSide, order_type: str, trigger: Decimal,
                                 client_algo_id: str) -> dict[str, Any]:
        action = f"{order_type} for {side} {symbol}"
        params = {
            "symbol": symbol,
            "side": exit_side(side),
            "type": order_type,
            "algoType": "CONDITIONAL",
            "triggerPrice": format_decimal(trigger),
            "closePosition": "true",
            "workingType": "MARK_PRICE",
            # Passed explicitly: python-binance would otherwise invent its own id.
            "clientAlgoId": client_algo_id,
        }
        client = self._rest.client
        try:
            placed = await self._rest.send_order(action, lambda: client.futures_create_algo_order(**params))
            if placed is not None:
                return placed
            logger.warning("%s: client id %s already used; looking it up", action, client_algo_id)
        except errs.UnknownOutcome:
            logger.warning("%s: execution status unknown; querying %s", action, client_algo_id)
        for attempt in range(self._rest.tuning.resolve_attempts):
            try:
                found = await self._rest.call(
                    f"algo order lookup {client_algo_id}",
                    lambda: client.futures_get_algo_order(clientAlgoId=client_algo_id),
                    accept_codes=frozenset({errs.ORDER_DOES_NOT_EXIST}),
                )
            except Unavailable:
                found = None
            if found is not None:
                if found.get("algoStatus") != "NEW":
                    raise FailedPrecondition(f"{action}: order {client_algo_id} exists but is {found.get('algoStatus')}")
                return found
            await asyncio.sleep(self._rest.tuning.resolve_wait_s * (attempt + 1))
        raise Unavailable(f"{action}: execution status unknown and {client_algo_id} not found; not resent")

    async def open_algo_orders(self, symbol: str, *, own_ids_only: bool = False) -> list[dict[str, Any]]:
        """The symbol's working conditional orders: from the stream when it knows them all (and none of ours
        is so recent it may not have been reported yet), else ``openAlgoOrders`` (weight 1), which then
        teaches the stream's state the orders it could not have seen. ``own_ids_only``: the caller looks
        for its own client ids only, which the live stream has reported since before this tick."""
        state = self._shared.live_state()
        if state is not None and (own_ids_only or (state.algo_orders_known(symbol)
                                                   and not self._shared.recent_own_order(symbol))):
            return [dict(row) for row in state.open_algo_orders(symbol)]
        client = self._rest.client
        rows = await self._rest.read(f"open algo orders of {symbol}",
                                     lambda: client.futures_get_open_algo_orders(symbol=symbol))
        if not isinstance(rows, list):
            raise Unavailable(f"Binance open algo orders answer for {symbol} is not a list")
        rows = [row for row in rows if row.get("symbol", symbol) == symbol]
        if state is not None and not self._shared.recent_own_order(symbol):
            state.load_algo_orders(symbol, rows)
        return rows

    async def protective_orders(self, position: ExchangePosition) -> ProtectiveOrders:
        rows = sorted(await self.open_algo_orders(position.symbol), key=lambda r: int(r.get("updateTime") or 0),
                      reverse=True)
        protecting = [row for row in rows if closes_position(row, position)]
        stop = next((r for r in protecting if r.get("orderType") == "STOP_MARKET"), None)
        target = next((r for r in protecting if r.get("orderType") == "TAKE_PROFIT_MARKET"), None)
        return ProtectiveOrders(
            stop_loss_id=str(stop["clientAlgoId"]) if stop else None,
            stop_loss_price=dec(stop, "triggerPrice") if stop else None,
            take_profit_id=str(target["clientAlgoId"]) if target else None,
            take_profit_price=dec(target, "triggerPrice") if target else None,
        )

    async def place_take_profit(self, symbol: str, side: PositionSide, take_profit: Decimal,
                                client_id: str) -> ProtectiveOrders:
        check_client_id(client_id)
        target = await self._place_conditional(symbol, side, "TAKE_PROFIT_MARKET", take_profit, client_id)
        return ProtectiveOrders(None, None, str(target["clientAlgoId"]), dec(target, "triggerPrice"))

    async def cancel_protective_orders(self, symbol: str) -> None:
        """Cancel every working stop and target of the symbol (a stop not reported yet must not be left behind
        after a close: see ``open_algo_orders``)."""
        client = self._rest.client
        for row in await self.open_algo_orders(symbol):
            if row.get("orderType") not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                continue
            algo_id = row["algoId"]
            self._shared.order_sent(symbol)
            # Already triggered or cancelled in between: nothing left to cancel.
            await self._rest.read(
                f"cancel of algo order {row.get('clientAlgoId')}",
                lambda: client.futures_cancel_algo_order(algoId=algo_id),  # DELETE takes algoId only
                accept_codes=frozenset({errs.UNKNOWN_ORDER_SENT, errs.ORDER_DOES_NOT_EXIST}),
            )
