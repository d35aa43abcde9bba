"""Live (or testnet) Binance USDⓈ-M Futures account behind the ``Broker`` seam.

One broker per exchange connection, built by ``create_binance_broker`` around
one python-binance client whose every request goes to the configured root
URL (live and testnet are just different roots). What it guarantees:

* reads (balance, position, orders, history) either answer or raise; a
  failed lookup is never "flat". Transient failures are retried a few times.
* order POSTs are never sent twice blindly: an answer with unknown outcome
  (HTTP 5xx, timeout, reset) is resolved by querying the client order id,
  and a duplicate client id (-4116) returns the order already there.
* stop-loss and take-profit are conditional orders on ``/fapi/v1/algoOrder``
  (``closePosition=true``, ``workingType=MARK_PRICE``), never
  ``/fapi/v1/order`` (-4120 since 2025-12-09), with the caller's ids.
* the account's order-count headers are respected before each order.

Quantities and prices arrive already rounded to the symbol's filters.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from binance.exceptions import BinanceAPIException
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.binance_client import ConfiguredAsyncClient
from services.common.decimals import format_decimal
from services.common.errors import FailedPrecondition, InvalidArgument, TradebotError, Unavailable
from services.common.jsonlog import register_secret
from services.executor.brokers import binance_errors as errs
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
from services.executor.brokers.binance_account import (
    INCOME_HARD_MAX_S,
    INCOME_READ_WEIGHT,
    INCOME_TTL_S,
    IP_WEIGHT_LIMIT_1M,
    AccountShared,
    IncomeBaseline,
    ip_weight,
    shared_state,
)
from services.executor.brokers.binance_ratelimit import ORDERS_AFTER_AN_ENTRY
from services.executor.brokers.binance_records import (
    QUOTE_ASSET,
    account_rows,
    close_reason,
    dec,
    fill_from_order,
    parse_account_positions,
    parse_position,
    round_trips,
    usdt_fee,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Binance allows ^[.A-Z:/a-z0-9_-]{1,36}$, but python-binance signs parameter values
# before aiohttp percent-encodes the form body, and Binance verifies the encoded
# payload (since 2026-01-15): ':' and '/' would break the signature (-1022).
SAFE_CLIENT_ID = re.compile(r"^[.A-Za-z0-9_-]{1,36}$")
MARGIN_TYPES = {"ISOLATED": "ISOLATED", "CROSSED": "CROSSED", "CROSS": "CROSSED"}
FILLED_STATES = {"FILLED", "PARTIALLY_FILLED"}
FINAL_UNFILLED_STATES = {"CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"}
USER_TRADES_WINDOW_MS = 7 * 24 * 3600 * 1000  # userTrades answers at most 7 days per query
OPEN_TIME_SLACK_MS = 1000  # the entry fill may be stamped a moment before the caller's open time
CLOCK_MARGIN_MS = 5000
HISTORY_LIMIT_MS = 183 * 24 * 3600 * 1000  # userTrades keeps about six months


def _check_client_id(client_id: str) -> None:
    if not SAFE_CLIENT_ID.match(client_id):
        raise InvalidArgument(f"client id {client_id!r} must match {SAFE_CLIENT_ID.pattern}")


def _exit_side(side: PositionSide) -> str:
    return "SELL" if side == "LONG" else "BUY"


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _closes_position(row: Mapping[str, Any], position: ExchangePosition) -> bool:
    """Whether a conditional order would take ``position`` off the exchange when it fires: the exit side,
    and all of it (a stop of the other side, say the old one after a flip, or a partial one, does not)."""
    if row.get("side") != _exit_side(position.side):
        return False
    if _truthy(row.get("closePosition")):
        return True
    try:
        quantity = Decimal(str(row.get("quantity") or "0"))
    except ArithmeticError:
        return False
    return _truthy(row.get("reduceOnly")) and quantity >= position.quantity


@dataclass(frozen=True)
class BrokerTuning:
    """Bounds on retries and on the look-ups that resolve an unknown order outcome."""

    read_attempts: int = 3          # a read is tried at most this often (transient failures only)
    retry_wait_s: float = 0.1       # first back-off between read attempts, doubling, capped at 2 s
    resolve_attempts: int = 4       # look-ups by client id before an unknown outcome is reported
    resolve_wait_s: float = 0.2     # wait before the n-th look-up: n × this


class BinanceFuturesBroker:
    """The ``Broker`` protocol over one Binance USDⓈ-M Futures account."""

    def __init__(
        self,
        client: ConfiguredAsyncClient,
        shared: AccountShared,
        tuning: BrokerTuning | None = None,
    ) -> None:
        self._client = client
        self._shared = shared
        self.tuning = tuning or BrokerTuning()
        self._one_way_checked = False
        self._prepared: dict[str, tuple[int, str]] = {}

    # ------------------------------------------------------------ plumbing
    async def _call(self, action: str, request: Callable[[], Awaitable[T]], accept_codes: frozenset[int] = frozenset()) -> T | None:
        """One request, vendor errors translated; -1021 resyncs the clock and tries once more.

        A -1021 answer means Binance refused the request before executing it, so
        repeating it (even an order) cannot execute twice.
        """
        for attempt in range(2):
            try:
                answer = await request()
                ip_weight().observe(self._client.last_response_headers())
                return answer
            except BinanceAPIException as exc:
                ip_weight().observe(self._client.last_response_headers())
                if exc.code in accept_codes:
                    return None
                if exc.code == errs.TIMESTAMP_OUTSIDE_RECV_WINDOW and attempt == 0:
                    logger.warning("Binance clock drift during %s; resynchronising", action)
                    await self.sync_clock()
                    continue
                raise errs.translate_api_error(exc, action) from None
            except errs.TRANSPORT_ERRORS as exc:
                raise errs.translate_transport_error(exc, action) from None
        raise AssertionError("unreachable")

    async def _read(self, action: str, request: Callable[[], Awaitable[T]], accept_codes: frozenset[int] = frozenset()) -> T | None:
        """A read (or idempotent setting): transient failures retried, a bounded number of times."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.tuning.read_attempts),
            wait=wait_exponential(multiplier=self.tuning.retry_wait_s, max=2.0),
            retry=retry_if_exception_type(Unavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._call(action, request, accept_codes)
        raise AssertionError("unreachable")

    async def sync_clock(self) -> None:
        """Measure the offset to Binance's clock so signed requests are inside recvWindow."""
        try:
            await self._client.sync_time()
        except BinanceAPIException as exc:
            raise errs.translate_api_error(exc, "server time sync") from None
        except errs.TRANSPORT_ERRORS as exc:
            raise errs.translate_transport_error(exc, "server time sync") from None

    async def _send_order(self, action: str, request: Callable[[], Awaitable[dict[str, Any]]], *,
                          entry: bool = False) -> dict[str, Any] | None:
        """POST an order once, after the rate guard; None when its client id is already taken (-4116).

        An entry must leave room for the orders that would protect it; every other order we send
        (stop, target, close) protects a position and may use the guard's safety margin."""
        if entry:
            self._shared.rate_guard.before_order(reserve=ORDERS_AFTER_AN_ENTRY)
        else:
            self._shared.rate_guard.before_order(protective=True)
        try:
            return await self._call(action, request, accept_codes=frozenset({errs.DUPLICATE_CLIENT_ID}))
        finally:
            self._shared.forget_account()   # balances and positions may have moved
            self._observe_order_counts()

    def _observe_order_counts(self) -> None:
        headers = self._client.last_response_headers()
        if "X-MBX-ORDER-COUNT-1M" in headers or "X-MBX-ORDER-COUNT-10S" in headers:
            self._shared.rate_guard.observe(headers)

    # -------------------------------------------------------------- Broker
    async def observe(self, market: MarketView) -> bool:
        """Binance triggers SL/TP itself; nothing to simulate."""
        return False

    @property
    def shared(self) -> AccountShared:
        """The per-account state (order-rate guard, account memo, daily-PnL baseline)."""
        return self._shared

    async def _account_info(self, use: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``GET /fapi/v3/account`` (weight 5): balances and positions in one answer, shared by the two reads."""
        answer = await self._shared.account_info(
            use, lambda: self._read("account read", lambda: self._client.futures_account(version=3))
        )
        return account_rows(answer)

    async def account(self) -> AccountSnapshot:
        assets, _ = await self._account_info("balances")
        for row in assets:
            if row.get("asset") == QUOTE_ASSET:
                return AccountSnapshot(available_balance=dec(row, "availableBalance"), wallet_balance=dec(row, "walletBalance"))
        return AccountSnapshot(available_balance=Decimal(0), wallet_balance=Decimal(0))

    async def positions(self) -> dict[str, ExchangePosition]:
        """Every open position from the same ``/fapi/v3/account`` answer as ``account()`` (one request per tick).

        Its rows have no entry or mark price; both are derived exactly (see
        ``parse_account_positions``). ``position(symbol)`` after our own orders
        reads positionRisk, which reports the exchange's entry price itself."""
        _, rows = await self._account_info("positions")
        return parse_account_positions(rows, {symbol: prepared[0] for symbol, prepared in self._prepared.items()})

    async def position(self, symbol: str) -> ExchangePosition | None:
        rows = await self._read(f"position read for {symbol}", lambda: self._client.futures_position_information(symbol=symbol))
        if not isinstance(rows, list):
            raise Unavailable(f"Binance position answer for {symbol} is not a list")
        prepared_leverage = self._prepared.get(symbol, (1, ""))[0]
        return parse_position(rows, symbol, prepared_leverage)

    async def prepare_symbol(self, symbol: str, leverage: int, margin_type: str) -> None:
        """Set margin type and leverage before every entry (weight 1 each; entries are rare): a leverage
        changed by hand on Binance, or by another process, is set back before money goes in."""
        margin = MARGIN_TYPES.get(margin_type.upper())
        if margin is None:
            raise InvalidArgument(f"margin type must be ISOLATED or CROSSED, got {margin_type!r}")
        if not 1 <= leverage <= 125:
            raise InvalidArgument(f"leverage must be between 1 and 125, got {leverage}")
        await self._ensure_one_way()
        await self._read(
            f"margin type change for {symbol}",
            lambda: self._client.futures_change_margin_type(symbol=symbol, marginType=margin),
            accept_codes=frozenset({errs.NO_NEED_TO_CHANGE_MARGIN_TYPE}),
        )
        await self._read(f"leverage change for {symbol}", lambda: self._client.futures_change_leverage(symbol=symbol, leverage=leverage))
        self._prepared[symbol] = (leverage, margin)
        logger.info("prepared %s: leverage %d, margin %s", symbol, leverage, margin)

    async def _ensure_one_way(self) -> None:
        if self._one_way_checked:
            return
        mode = await self._read("position mode read", lambda: self._client.futures_get_position_mode())
        if not isinstance(mode, dict) or "dualSidePosition" not in mode:
            raise Unavailable("Binance position mode answer is unreadable")
        if mode["dualSidePosition"] in (True, "true"):
            raise FailedPrecondition(
                "the Binance Futures account is in hedge mode (dual-side positions); "
                "switch it to one-way mode to trade with this bot"
            )
        self._one_way_checked = True

    async def find_entry(self, symbol: str, client_order_id: str) -> Fill | None:
        _check_client_id(client_order_id)
        order = await self._query_order(symbol, client_order_id)
        if order is None:
            return None
        order = await self._settled(symbol, order)
        if dec(order, "executedQty") == 0:
            return None
        return await self._fill(symbol, order)

    async def open_position(self, order: EntryOrder) -> Fill:
        _check_client_id(order.client_order_id)
        # Binance only guarantees unique client ids among open orders, and a MARKET
        # order is not open for long: look before sending so a retried tick finds its fill.
        existing = await self.find_entry(order.symbol, order.client_order_id)
        if existing is not None:
            logger.info("entry %s already on Binance; not sending again", order.client_order_id)
            return existing
        params = {
            "symbol": order.symbol,
            "side": "BUY" if order.side == "LONG" else "SELL",
            "type": "MARKET",
            "quantity": format_decimal(order.quantity),
            "newClientOrderId": order.client_order_id,
            "newOrderRespType": "RESULT",
        }
        placed = await self._place_market(f"{order.side} entry on {order.symbol}", order.symbol, order.client_order_id,
                                          params, entry=True)
        return await self._fill(order.symbol, placed)

    async def close_position(self, symbol: str, client_order_id: str, reason: str) -> Fill | None:
        _check_client_id(client_order_id)
        current = await self.position(symbol)
        if current is None:
            return None
        params = {
            "symbol": symbol,
            "side": _exit_side(current.side),
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
        try:
            placed = await self._send_order(action, lambda: self._client.futures_create_order(**params), entry=entry)
        except errs.UnknownOutcome:
            logger.warning("%s: execution status unknown; querying client id %s", action, client_order_id)
            return await self._resolve_order(action, symbol, client_order_id)
        if placed is None:
            logger.warning("%s: client id %s already used; returning that order", action, client_order_id)
            return await self._resolve_order(action, symbol, client_order_id)
        return placed

    async def _resolve_order(self, action: str, symbol: str, client_order_id: str) -> dict[str, Any]:
        """Whether an order with unknown outcome exists: a few looks by client id before deciding."""
        for attempt in range(self.tuning.resolve_attempts):
            try:
                found = await self._query_order(symbol, client_order_id)
            except Unavailable:
                found = None
            if found is not None:
                return found
            await asyncio.sleep(self.tuning.resolve_wait_s * (attempt + 1))
        raise Unavailable(f"{action}: execution status unknown and order {client_order_id} not found; not resent")

    async def _query_order(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        return await self._read(
            f"order lookup {client_order_id}",
            lambda: self._client.futures_get_order(symbol=symbol, origClientOrderId=client_order_id),
            accept_codes=frozenset({errs.ORDER_DOES_NOT_EXIST}),
        )

    async def _settled(self, symbol: str, order: dict[str, Any]) -> dict[str, Any]:
        """A MARKET order fills at once; if Binance still says NEW, look again briefly."""
        for attempt in range(self.tuning.resolve_attempts):
            if order.get("status") in FILLED_STATES | FINAL_UNFILLED_STATES:
                return order
            await asyncio.sleep(self.tuning.resolve_wait_s * (attempt + 1))
            try:
                again = await self._query_order(symbol, str(order.get("clientOrderId")))
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
        try:
            trades = await self._read(
                f"fee lookup for {client_id}",
                lambda: self._client.futures_account_trades(symbol=symbol, orderId=order["orderId"]),
            )
            fee = usdt_fee(trades or [])
            self._shared.record_trades(trades or [])   # our own fill moves the daily PnL at once
        except TradebotError as exc:
            logger.warning("fee of order %s on %s unknown (%s); recorded as 0", client_id, symbol, exc.message)
            fee = Decimal(0)
        return fill_from_order(order, fee)

    # ------------------------------------------------------- protection
    async def protect(
        self,
        symbol: str,
        side: PositionSide,
        stop_loss: Decimal,
        take_profit: Decimal,
        stop_loss_client_id: str,
        take_profit_client_id: str,
    ) -> ProtectiveOrders:
        _check_client_id(stop_loss_client_id)
        _check_client_id(take_profit_client_id)
        try:
            working = {o.get("clientAlgoId"): o for o in await self._open_algo_orders(symbol)}
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

    async def _place_conditional(
        self, symbol: str, side: PositionSide, order_type: str, trigger: Decimal, client_algo_id: str
    ) -> dict[str, Any]:
        action = f"{order_type} for {side} {symbol}"
        params = {
            "symbol": symbol,
            "side": _exit_side(side),
            "type": order_type,
            "algoType": "CONDITIONAL",
            "triggerPrice": format_decimal(trigger),
            "closePosition": "true",
            "workingType": "MARK_PRICE",
            # Passed explicitly: python-binance would otherwise invent its own id.
            "clientAlgoId": client_algo_id,
        }
        try:
            placed = await self._send_order(action, lambda: self._client.futures_create_algo_order(**params))
            if placed is not None:
                return placed
            logger.warning("%s: client id %s already used; looking it up", action, client_algo_id)
        except errs.UnknownOutcome:
            logger.warning("%s: execution status unknown; querying %s", action, client_algo_id)
        for attempt in range(self.tuning.resolve_attempts):
            try:
                found = await self._call(
                    f"algo order lookup {client_algo_id}",
                    lambda: self._client.futures_get_algo_order(clientAlgoId=client_algo_id),
                    accept_codes=frozenset({errs.ORDER_DOES_NOT_EXIST}),
                )
            except Unavailable:
                found = None
            if found is not None:
                if found.get("algoStatus") != "NEW":
                    raise FailedPrecondition(f"{action}: order {client_algo_id} exists but is {found.get('algoStatus')}")
                return found
            await asyncio.sleep(self.tuning.resolve_wait_s * (attempt + 1))
        raise Unavailable(f"{action}: execution status unknown and {client_algo_id} not found; not resent")

    async def _open_algo_orders(self, symbol: str) -> list[dict[str, Any]]:
        rows = await self._read(f"open algo orders of {symbol}", lambda: self._client.futures_get_open_algo_orders(symbol=symbol))
        if not isinstance(rows, list):
            raise Unavailable(f"Binance open algo orders answer for {symbol} is not a list")
        return [row for row in rows if row.get("symbol", symbol) == symbol]

    async def protective_orders(self, position: ExchangePosition) -> ProtectiveOrders:
        rows = sorted(await self._open_algo_orders(position.symbol), key=lambda r: int(r.get("updateTime") or 0),
                      reverse=True)
        protecting = [row for row in rows if _closes_position(row, position)]
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
        _check_client_id(client_id)
        target = await self._place_conditional(symbol, side, "TAKE_PROFIT_MARKET", take_profit, client_id)
        return ProtectiveOrders(None, None, str(target["clientAlgoId"]), dec(target, "triggerPrice"))

    async def cancel_protective_orders(self, symbol: str) -> None:
        for row in await self._open_algo_orders(symbol):
            if row.get("orderType") not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                continue
            algo_id = row["algoId"]
            # Already triggered or cancelled in between: nothing left to cancel.
            await self._read(
                f"cancel of algo order {row.get('clientAlgoId')}",
                lambda: self._client.futures_cancel_algo_order(algoId=algo_id),  # DELETE takes algoId only
                accept_codes=frozenset({errs.UNKNOWN_ORDER_SENT, errs.ORDER_DOES_NOT_EXIST}),
            )

    # ------------------------------------------------------------ records
    async def closed_trade(self, symbol: str, side: PositionSide, open_time_ms: int) -> ClosedTradeRecord | None:
        """The round trip that opened at ``open_time_ms``; with ``open_time_ms`` 0 (unknown), the latest one."""
        # A fill stamped just now must not be cut off by clock error: end the history a little ahead.
        until = self._server_now_ms() + CLOCK_MARGIN_MS
        known_open = open_time_ms > 0
        # Unknown open time: exactly one userTrades window, the latest.
        since = open_time_ms - OPEN_TIME_SLACK_MS if known_open else until - USER_TRADES_WINDOW_MS + 1
        trades = await self._user_trades(symbol, max(since, until - HISTORY_LIMIT_MS), until)
        self._shared.record_trades(trades)   # booked fills move the daily PnL without an income read
        trips = round_trips(trades, side)
        if not trips:
            return None
        booked = trips[0] if known_open else trips[-1]
        algo_orders = await self._read(
            f"algo order history of {symbol}",
            lambda: self._client.futures_get_all_algo_orders(symbol=symbol, startTime=booked.open_time_ms - OPEN_TIME_SLACK_MS),
        )
        reason = close_reason(booked.closing_order_ids, algo_orders or [], self._shared.own_closes)
        return ClosedTradeRecord(
            symbol=symbol,
            side=side,
            entry_price=booked.entry_price,
            exit_price=booked.exit_price,
            quantity=booked.quantity,
            realized_pnl=booked.realized_pnl,
            fees=booked.fees,
            reason=reason,
            open_time_ms=booked.open_time_ms,
            close_time_ms=booked.close_time_ms,
        )

    async def _user_trades(self, symbol: str, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
        """userTrades between the two times, walking 7-day windows and 1000-row pages."""
        now = until_ms
        rows: dict[int, dict[str, Any]] = {}
        start = min(since_ms, now)
        for _ in range(60):  # bounded: 60 pages
            end = min(start + USER_TRADES_WINDOW_MS - 1, now)
            page = await self._read(
                f"trade history of {symbol}",
                lambda: self._client.futures_account_trades(symbol=symbol, startTime=start, endTime=end, limit=1000),
            )
            page = page or []
            for row in page:
                rows[int(row["id"])] = row
            if len(page) >= 1000:
                start = int(page[-1]["time"])
            elif end >= now:
                break
            else:
                start = end + 1
        return list(rows.values())

    def _server_now_ms(self) -> int:
        return int(time.time() * 1000) + int(self._client.timestamp_offset)

    async def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        """Realised PnL plus commissions since ``since_ms``: income baseline + fills we saw; see ``AccountShared``.

        The baseline (weight 30) is re-read when missing (start-up), when it does
        not reach back to ``since_ms``, or when older than 30 minutes and the IP
        weight has room; older than 2 hours it is re-read whatever the weight,
        and if that fails the daily PnL is unknown: ``Unavailable``, no entry."""
        async with self._shared.income_lock:   # one refresh per account, whatever the number of bots waiting
            await self._refresh_income_locked(since_ms)
            return self._shared.daily_pnl(symbol, since_ms)

    async def realized_pnl_by_symbol_since(self, since_ms: int) -> dict[str, Decimal]:
        async with self._shared.income_lock:
            await self._refresh_income_locked(since_ms)
            return self._shared.daily_pnl_by_symbol(since_ms)

    async def _refresh_income_locked(self, since_ms: int) -> None:
        """Re-read the income baseline when the rule above says so (``income_lock`` held)."""
        shared = self._shared
        baseline = shared.baseline
        must = baseline is None or baseline.since_ms > since_ms or shared.baseline_age() >= INCOME_HARD_MAX_S
        due = shared.baseline_age() >= INCOME_TTL_S
        if must or (due and ip_weight().has_room_for(INCOME_READ_WEIGHT)):
            try:
                rows = await self._income_since(since_ms)
                shared.baseline = IncomeBaseline.of(since_ms, shared.clock(), rows)
            except TradebotError as error:
                if must:
                    raise Unavailable(f"daily realised PnL unknown (income history unreadable: {error.message}); "
                                      "no entry until it can be read") from None
                logger.warning("income refresh failed (%s); keeping the baseline from %.0f s ago",
                               error.message, shared.baseline_age())
        elif due:
            logger.info("income refresh postponed: IP weight %d used of %d", ip_weight().used(), IP_WEIGHT_LIMIT_1M)

    async def _income_since(self, since_ms: int) -> list[dict[str, Any]]:
        rows: dict[tuple[Any, Any], dict[str, Any]] = {}
        start = since_ms
        for _ in range(20):  # bounded: 20 000 income rows
            page = await self._read(
                "income history", lambda: self._client.futures_income_history(startTime=start, limit=1000)
            )
            page = page or []
            for row in page:
                rows[(row.get("tranId"), row.get("incomeType"))] = row
            if len(page) < 1000:
                break
            start = int(page[-1]["time"])
        return list(rows.values())

    async def close(self) -> None:
        await self._client.close_connection()


async def create_binance_broker(*, api_key: str, api_secret: str, futures_url: str, spot_url: str) -> BinanceFuturesBroker:
    """A broker for one connection: client built at the one seam, server clock synced."""
    register_secret(api_key)
    register_secret(api_secret)
    if not api_key or not api_secret:
        raise FailedPrecondition("exchange connection has no API key or secret")
    client = ConfiguredAsyncClient(futures_url=futures_url, spot_url=spot_url, api_key=api_key, api_secret=api_secret)
    account_id = hashlib.sha256(f"{futures_url}\n{api_key}".encode()).hexdigest()[:16]
    broker = BinanceFuturesBroker(client, shared_state(account_id))
    try:
        await broker.sync_clock()
    except BaseException:
        await client.close_connection()
        raise
    return broker

