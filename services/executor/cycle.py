"""One bot's executor cycle, written only against the ``Broker`` interface.

Its input (``CycleInput``) comes from trusted sources only: the stored bot
and the market service (cycle_requests.py), or the backtest's own replay.

resolve connection -> broker -> read account and position (fail closed: a
failed read raises, nothing is opened) -> observe the market when a position
is open (paper stops fill here) -> reconcile the stored
position (gone: book the closed trade) -> safety rules -> monitor + protective
order audit when a position is open, else an entry when the signal is strong
enough, protected at once by stop-loss and take-profit.

The reply's structured fields (``order``, ``closed_trades``, ``safety``) are
what the gateway turns into TRADE and SAFETY TradeLogs; ``events`` carry only
what those fields cannot say (rejections, a restored or failed stop-loss, a
position that vanished without a record), so nothing is logged twice. The
gateway skips its own TRADE (SAFETY) logs when an event of that type is sent,
so no TRADE event is ever sent here and a SAFETY event during a trip carries
the trip itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from tradebot.v1 import common_pb2, executor_pb2

from services.common.decimals import parse_decimal
from services.common.errors import FailedPrecondition, InvalidArgument, TradebotError
from services.executor.account_cache import AccountCache
from services.executor.bot_config import BotSettings
from services.executor.brokers.base import (
    AccountSnapshot,
    Broker,
    Candle,
    ClosedTradeRecord,
    EntryOrder,
    ExchangePosition,
    Fill,
    MarketView,
    PositionSide,
    ProtectiveOrders,
)
from services.executor.brokers.factory import BrokerFactory
from services.executor.client_ids import OrderPurpose, client_order_id
from services.executor.connections import ConnectionRepository, ExchangeConnection
from services.executor.convert import (
    closed_trade_to_proto,
    dec,
    event,
    position_to_proto,
    side_from_proto,
    side_to_proto,
)
from services.executor.market_inputs import MarketInputs
from services.executor.safety import PositionSizeRule, SafetyContext, Trip, first_trip
from services.executor.sizing import NoEntry, SymbolRules, protective_prices, size_entry

log = logging.getLogger(__name__)

_ACTION_SIDE: dict[int, PositionSide] = {common_pb2.ACTION_BUY: "LONG", common_pb2.ACTION_SELL: "SHORT"}


_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


def check_symbol(symbol: str) -> None:
    # The symbol becomes part of MongoDB field paths and exchange URLs: letters and digits only.
    if not _SYMBOL.match(symbol):
        raise InvalidArgument(f"bot.symbol must be an exchange symbol like BTCUSDT, got {symbol!r}")


# No price or exchange filter comes near these; values beyond them ("1E-999999") make the
# sizing arithmetic overflow Decimal's exponent range, which would surface as INTERNAL.
_SMALLEST_MARKET_NUMBER = Decimal("1e-30")
_LARGEST_MARKET_NUMBER = Decimal("1e30")
_FILTER_FIELDS = ("tick_size", "step_size", "min_qty", "max_qty", "min_notional", "market_step_size", "market_max_qty")


def _check_magnitude(value: Decimal, field: str) -> None:
    if value != 0 and not _SMALLEST_MARKET_NUMBER <= abs(value) <= _LARGEST_MARKET_NUMBER:
        raise InvalidArgument(f"{field} is out of range (1e-30 to 1e30), got {value}")


def _check_market_numbers(price: Decimal, filters: common_pb2.SymbolFilters) -> None:
    _check_magnitude(price, "market.price")
    for name in _FILTER_FIELDS:
        value = parse_decimal(getattr(filters, name), f"market.filters.{name}", allow_empty=True)
        if value is not None:
            _check_magnitude(value, f"market.filters.{name}")


def _check_candle_prices(candles: list[Candle]) -> None:
    # A paper stop triggers on candle lows and highs: a zero or negative price would close a position for nothing.
    for index, candle in enumerate(candles):
        for name in ("open", "high", "low", "close"):
            value: Decimal = getattr(candle, name)
            if value <= 0:
                raise InvalidArgument(f"market.candles[{index}].{name} must be greater than 0, got {value}")
            _check_magnitude(value, f"market.candles[{index}].{name}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def utc_midnight_ms(now_ms: int) -> int:
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    return int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


@dataclass(frozen=True)
class CycleInput:
    """Everything one cycle acts on. Built from the stored bot and the market service (never from a
    caller's say-so), or by the backtest from its own replay."""

    tick_id: str
    bot_instance_id: str
    user_id: str
    connection_id: str                        # "" = the user's single active connection
    symbol: str
    settings: BotSettings
    consecutive_losses: int                   # the stored losing streak the safety rule reads
    stored_position: executor_pb2.Position | None   # the bot's currentPosition as stored
    signal: common_pb2.Signal | None          # None or HOLD: monitor only
    market: MarketInputs

    @property
    def stored_side(self) -> PositionSide | None:
        return None if self.stored_position is None else side_from_proto(self.stored_position.side)


@dataclass
class _Cycle:
    """The state of one RunCycle call while it is worked through."""

    input: CycleInput
    connection_id: str
    broker: Broker
    account: AccountSnapshot
    response: executor_pb2.RunCycleResponse = field(default_factory=executor_pb2.RunCycleResponse)
    closed: list[ClosedTradeRecord] = field(default_factory=list)

    @property
    def settings(self) -> BotSettings:
        return self.input.settings

    @property
    def symbol(self) -> str:
        return self.input.symbol

    @property
    def price(self) -> Decimal:
        return self.input.market.price

    @property
    def stored_side(self) -> PositionSide | None:
        return self.input.stored_side

    @property
    def stored(self) -> executor_pb2.Position:
        """The stored position (an empty message when none is stored)."""
        return self.input.stored_position or executor_pb2.Position()

    def client_id(self, purpose: OrderPurpose) -> str:
        return client_order_id(self.input.bot_instance_id, self.input.tick_id, purpose)

    def book(self, record: ClosedTradeRecord) -> None:
        self.closed.append(record)
        self.response.closed_trades.append(closed_trade_to_proto(record))

    def note(self, log_type: str, severity: str, action: str, message: str, data: dict[str, str] | None = None) -> None:
        self.response.events.append(event(log_type, severity, action, message, data))
        level = logging.CRITICAL if severity == "CRITICAL" else logging.WARNING if severity in ("WARNING", "ERROR") else logging.INFO
        log.log(level, message, extra={"eventAction": action, "symbol": self.symbol})


class CycleRunner:
    def __init__(self, connections: ConnectionRepository, brokers: BrokerFactory, accounts: AccountCache,
                 clock: Callable[[], int] = _now_ms,
                 on_connection: Callable[[ExchangeConnection], None] | None = None) -> None:
        self._connections = connections
        self._brokers = brokers
        self._accounts = accounts
        self._clock = clock
        self._on_connection = on_connection

    async def run(self, cycle_input: CycleInput) -> executor_pb2.RunCycleResponse:
        check_symbol(cycle_input.symbol)
        signal = cycle_input.signal
        if signal is not None and not 0 <= signal.confidence <= 100:  # also rejects NaN
            raise InvalidArgument(f"signal.confidence must be in 0..100, got {signal.confidence}")
        if not cycle_input.market.price > 0:
            raise FailedPrecondition(f"market price of {cycle_input.symbol} must be greater than 0, "
                                     f"got {cycle_input.market.price}")
        _check_market_numbers(cycle_input.market.price, cycle_input.market.filters)
        # Looked up once per (user, connection) per tick and shared by the account's bots.
        connection = await self.connection(cycle_input.user_id, cycle_input.connection_id, cycle_input.tick_id)
        broker = await self._brokers.broker_for(connection)
        # Bots of one account on the same symbol decide one after another (one-way mode: one position).
        async with self._accounts.symbol_lock(connection.id, cycle_input.symbol):
            return await self._run_locked(cycle_input, connection.id, broker)

    async def connection(self, user_id: str, connection_id: str, tick_id: str) -> ExchangeConnection:
        connection = await self._accounts.connection(
            user_id, connection_id, tick_id, lambda: self._connections.resolve(user_id, connection_id),
        )
        if self._on_connection is not None:
            self._on_connection(connection)
        return connection

    async def _run_locked(self, cycle_input: CycleInput, connection_id: str,
                          broker: Broker) -> executor_pb2.RunCycleResponse:
        tick_id, symbol = cycle_input.tick_id, cycle_input.symbol
        # Fail closed: if either read raises, the error ends the cycle and nothing is opened.
        # Both are read once per (connection, tick) and shared by the account's bots.
        account = await self._accounts.get(connection_id, tick_id, broker.account)
        position = await self._accounts.position(connection_id, tick_id, symbol, broker.positions, broker.position)
        # Only an open position has a mark to move and stops to trigger (the paper broker simulates
        # them on this market view): afterwards the symbol is read again, its stop may have filled.
        if position is not None:
            candles = await cycle_input.market.load_candles()
            _check_candle_prices(candles)
            if await broker.observe(MarketView(symbol, cycle_input.market.price, candles)):
                self._accounts.mark_changed(connection_id, tick_id, symbol)
                position = await broker.position(symbol)

        cycle = _Cycle(cycle_input, connection_id, broker, account)
        cycle.response.reference_price = dec(cycle_input.market.price)
        await self._reconcile(cycle, position)
        daily = await self._accounts.daily_pnl(
            connection_id, tick_id, symbol, utc_midnight_ms(self._clock()),
            broker.realized_pnl_by_symbol_since, broker.realized_pnl_since,
        )
        cycle.response.daily_realized_pnl = dec(daily)
        cycle.response.available_balance = dec(account.available_balance)

        trip = first_trip(SafetyContext(
            settings=cycle_input.settings,
            account=account,
            position=position,
            daily_realized_pnl=daily,
            consecutive_losses=cycle_input.consecutive_losses,
            trades_closed_this_cycle=cycle.closed,
        ))
        if trip is not None:
            await self._emergency_stop(cycle, trip, position, daily)
        elif position is not None:
            await self._monitor(cycle, position)
        else:
            await self._maybe_enter(cycle)
        log.info("cycle decided", extra={"symbol": symbol, "decision": cycle.response.decision,
                                         "orderPlaced": cycle.response.order.placed,
                                         "hasPosition": cycle.response.has_position})
        return cycle.response

    async def get_position(self, user_id: str, connection_id: str, symbol: str) -> executor_pb2.GetPositionResponse:
        check_symbol(symbol)
        connection = await self._connections.resolve(user_id, connection_id)
        broker = await self._brokers.broker_for(connection)
        account = await broker.account()
        position = await broker.position(symbol)
        response = executor_pb2.GetPositionResponse(available_balance=dec(account.available_balance))
        if position is not None:
            protection = await broker.protective_orders(symbol)
            response.has_position = True
            response.position.CopyFrom(position_to_proto(position, protection, open_time_ms=0, entry_client_order_id=""))
        return response

    # -- steps -----------------------------------------------------------
    async def _reconcile(self, cycle: _Cycle, position: ExchangePosition | None) -> None:
        """The stored position is gone from the account: book how it ended."""
        if cycle.stored_side is None or (position is not None and position.side == cycle.stored_side):
            return
        stored = cycle.stored
        self._changing(cycle)   # its closing trade counts in today's PnL from now on: no snapshot for it
        record = await cycle.broker.closed_trade(cycle.symbol, cycle.stored_side, stored.open_time_ms)
        if position is None:
            await cycle.broker.cancel_protective_orders(cycle.symbol)
        if record is None:
            cycle.note("SYSTEM", "WARNING", "POSITION_GONE",
                       f"{cycle.stored_side} position on {cycle.symbol} is no longer open; no closing trade was found")
            return
        cycle.book(record)   # the gateway writes its TRADE log from closed_trades
        log.info("stored position closed", extra={"symbol": cycle.symbol, "reason": record.reason,
                                                  "realizedPnl": dec(record.realized_pnl)})

    async def _emergency_stop(self, cycle: _Cycle, trip: Trip, position: ExchangePosition | None,
                              daily: Decimal) -> None:
        verdict = cycle.response.safety
        verdict.tripped, verdict.rule, verdict.message = True, trip.rule, trip.message
        verdict.details.update(trip.details)
        verdict.pause_bot = trip.pause_bot
        if trip.close_position and position is not None:
            try:
                # Close first: if the close fails, the stop-loss is still working.
                self._changing(cycle)
                fill = await cycle.broker.close_position(cycle.symbol, cycle.client_id(OrderPurpose.CLOSE), "EMERGENCY_STOP")
                verdict.position_closed = True
                await cycle.broker.cancel_protective_orders(cycle.symbol)
                if fill is not None:
                    record = await cycle.broker.closed_trade(cycle.symbol, position.side, self._open_time(cycle, position))
                    if record is not None:
                        cycle.book(record)
                        cycle.response.daily_realized_pnl = dec(daily + record.realized_pnl)
            except TradebotError as error:
                # One SAFETY event with the trip and the failure (the gateway then writes it instead of its own).
                cycle.note("SAFETY", "CRITICAL", "EMERGENCY_STOP",
                           f"Safety rule {trip.rule} paused the bot: {trip.message}; closing the {position.side} "
                           f"position on {cycle.symbol} FAILED: {error.message}",
                           {**trip.details, "rule": trip.rule, "positionClosed": "false", "closeError": error.message})
        # The gateway writes the CRITICAL SAFETY TradeLog from the verdict; the log line is ours.
        log.critical("safety stop", extra={"rule": trip.rule, "reason": trip.message, "details": trip.details,
                                           "positionClosed": verdict.position_closed, "symbol": cycle.symbol})
        if not verdict.position_closed and position is not None:
            await self._describe_position(cycle, await _position_or_none(cycle) or position)
        closed_text = "; position closed at market" if verdict.position_closed else ""
        cycle.response.decision = f"safety stop {trip.rule}: {trip.message}{closed_text}; no order this cycle"

    async def _monitor(self, cycle: _Cycle, position: ExchangePosition) -> None:
        protection = await cycle.broker.protective_orders(cycle.symbol)
        if protection.stop_loss_id is None:
            protection = await self._restore_stop(cycle, position)
            if protection is None:
                return
        await self._describe_position(cycle, position, protection)
        cycle.response.decision = (
            f"{position.side} position open: mark {dec(position.mark_price)}, unrealised PnL "
            f"{dec(position.unrealized_pnl)} USDT; monitoring, no new order"
        )

    async def _restore_stop(self, cycle: _Cycle, position: ExchangePosition) -> ProtectiveOrders | None:
        """Audit found no stop-loss: re-place it, or close the position if that fails."""
        stop, target = self._stored_protection(cycle, position)
        try:
            await cycle.broker.cancel_protective_orders(cycle.symbol)
            protection = await cycle.broker.protect(
                cycle.symbol, position.side, stop, target,
                cycle.client_id(OrderPurpose.STOP_LOSS), cycle.client_id(OrderPurpose.TAKE_PROFIT),
            )
        except TradebotError as error:
            await self._close_unprotected(cycle, position.side, self._open_time(cycle, position),
                                          f"stop-loss was missing and could not be re-placed: {error.message}")
            return None
        cycle.note("SAFETY", "CRITICAL", "STOP_LOSS_RESTORED",
                   f"stop-loss of the {position.side} position on {cycle.symbol} was missing; re-placed at {dec(stop)}",
                   {"stopLoss": dec(stop), "takeProfit": dec(target)})
        return protection

    def _stored_protection(self, cycle: _Cycle, position: ExchangePosition) -> tuple[Decimal, Decimal]:
        stored = cycle.stored
        if cycle.stored_side == position.side and stored.stop_loss and stored.take_profit:
            stop = parse_decimal(stored.stop_loss, "stored_position.stop_loss", positive=True)
            target = parse_decimal(stored.take_profit, "stored_position.take_profit", positive=True)
            assert stop is not None and target is not None
            return stop, target
        return protective_prices(position.side, position.entry_price, cycle.settings.stop_loss_percent,
                                 cycle.settings.take_profit_percent, self._rules(cycle).tick_size)

    async def _maybe_enter(self, cycle: _Cycle) -> None:
        signal = cycle.input.signal
        side = _ACTION_SIDE.get(signal.action) if signal is not None else None
        if side is None or signal is None:
            cycle.response.decision = "no position; signal is HOLD: monitoring only"
            return
        threshold = cycle.settings.confidence_threshold
        action = common_pb2.Action.Name(signal.action).removeprefix("ACTION_")
        if not signal.confidence > threshold:
            cycle.response.decision = (
                f"no position; {action} confidence {signal.confidence:g} is not above the threshold {threshold:g}: no order"
            )
            return
        entry_id = cycle.client_id(OrderPurpose.ENTRY)
        earlier = await cycle.broker.find_entry(cycle.symbol, entry_id)
        if earlier is not None:
            cycle.response.decision = f"the entry of this tick ({entry_id}) was already placed; not repeated"
            return
        rules = self._rules(cycle)
        size = size_entry(cycle.account.available_balance, cycle.price, cycle.settings, rules)
        if isinstance(size, NoEntry):
            cycle.response.decision = f"{action} signal ({signal.confidence:g}) but no order: {size.reason}"
            return
        refusal = PositionSizeRule().check_entry(cycle.settings, cycle.account, size.margin, size.notional)
        if refusal is not None:
            cycle.response.decision = refusal
            return
        order = cycle.response.order
        order.client_order_id, order.side, order.quantity = entry_id, side_to_proto(side), dec(size.quantity)
        try:
            await cycle.broker.prepare_symbol(cycle.symbol, cycle.settings.leverage, cycle.settings.margin_type)
            self._changing(cycle)
            fill = await cycle.broker.open_position(EntryOrder(cycle.symbol, side, size.quantity, entry_id, cycle.price))
        except TradebotError as error:
            # An unknown outcome (timeout, 503) may still have filled: look before calling it a failure,
            # so a filled entry is protected now rather than at the next tick's audit.
            found = await _find_entry_or_none(cycle, entry_id) if error.retryable else None
            if found is None:
                cycle.note("ERROR", "ERROR", "ORDER_FAILED", f"{side} entry on {cycle.symbol} rejected: {error.message}",
                           {"clientOrderId": entry_id, "quantity": dec(size.quantity), "price": dec(cycle.price)})
                cycle.response.decision = f"{action} order rejected: {error.message}; retry next cycle"
                return
            fill = found
        order.placed = True
        order.exchange_order_id, order.fill_price = fill.exchange_order_id, dec(fill.price)
        order.quantity, order.fee = dec(fill.quantity), dec(fill.fee)
        self._accounts.reserve(cycle.connection_id, cycle.input.tick_id, fill.price * fill.quantity / cycle.settings.leverage + fill.fee)
        cycle.response.available_balance = dec(cycle.account.available_balance - fill.price * fill.quantity / cycle.settings.leverage - fill.fee)
        stop, target = protective_prices(side, fill.price, cycle.settings.stop_loss_percent,
                                         cycle.settings.take_profit_percent, rules.tick_size)
        order.stop_loss, order.take_profit = dec(stop), dec(target)
        try:
            protection = await cycle.broker.protect(cycle.symbol, side, stop, target,
                                                    cycle.client_id(OrderPurpose.STOP_LOSS),
                                                    cycle.client_id(OrderPurpose.TAKE_PROFIT))
        except TradebotError as error:
            await self._close_unprotected(cycle, side, fill.time_ms,
                                          f"stop-loss could not be placed after the entry filled: {error.message}")
            return
        order.stop_loss_order_id = protection.stop_loss_id or ""
        order.take_profit_order_id = protection.take_profit_id or ""
        log.info("position opened", extra={"symbol": cycle.symbol, "side": side, "clientOrderId": entry_id,
                                           "quantity": dec(fill.quantity), "fillPrice": dec(fill.price),
                                           "stopLoss": dec(stop), "takeProfit": dec(target)})
        position = await cycle.broker.position(cycle.symbol)
        if position is not None:
            cycle.response.has_position = True
            cycle.response.position.CopyFrom(position_to_proto(
                position, protection, open_time_ms=fill.time_ms, entry_client_order_id=entry_id))
        cycle.response.decision = (
            f"{action} confidence {signal.confidence:g} above the threshold {threshold:g}: opened {side} "
            f"{dec(fill.quantity)} at {dec(fill.price)} with stop-loss {dec(stop)} and take-profit {dec(target)}"
        )

    async def _close_unprotected(self, cycle: _Cycle, side: PositionSide, open_time_ms: int, why: str) -> None:
        """No leveraged position is left without its stop: close it at market at once."""
        try:
            self._changing(cycle)
            fill = await cycle.broker.close_position(cycle.symbol, cycle.client_id(OrderPurpose.CLOSE), "STOP_LOSS_NOT_PLACED")
            await cycle.broker.cancel_protective_orders(cycle.symbol)   # a take-profit may have been placed
        except TradebotError as error:
            cycle.note("SAFETY", "CRITICAL", "UNPROTECTED_POSITION",
                       f"{why}; closing the {side} position on {cycle.symbol} FAILED ({error.message}): "
                       "the position is open without a stop-loss")
            await self._describe_position(cycle, await _position_or_none(cycle))
            cycle.response.decision = f"{why}; emergency close failed: position unprotected"
            return
        if fill is not None:
            record = await cycle.broker.closed_trade(cycle.symbol, side, open_time_ms)
            if record is not None:
                cycle.book(record)
        cycle.note("SAFETY", "CRITICAL", "STOP_LOSS_FAILED",
                   f"{why}; the {side} position on {cycle.symbol} was closed at market",
                   {"closePrice": dec(fill.price) if fill else ""})
        cycle.response.has_position = False
        cycle.response.ClearField("position")
        cycle.response.decision = f"{why}; position closed at market"

    async def _describe_position(self, cycle: _Cycle, position: ExchangePosition | None,
                                 protection: ProtectiveOrders | None = None) -> None:
        if position is None:
            return
        if protection is None:
            protection = await cycle.broker.protective_orders(cycle.symbol)
        stored = cycle.stored
        same = cycle.stored_side == position.side
        open_time, entry_id = (stored.open_time_ms, stored.entry_client_order_id) if same else (0, "")
        if not same:  # opened by this tick's entry (a duplicated call) or outside the bot
            fill = await cycle.broker.find_entry(cycle.symbol, cycle.client_id(OrderPurpose.ENTRY))
            if fill is not None:
                open_time, entry_id = fill.time_ms, fill.client_order_id
        cycle.response.has_position = True
        cycle.response.position.CopyFrom(position_to_proto(
            position, protection, open_time_ms=open_time, entry_client_order_id=entry_id))

    def _changing(self, cycle: _Cycle) -> None:
        """An order that may change the symbol's position is about to go out (its outcome may be
        unknown), or a closed trade is being booked: from now on this tick reads the symbol's position
        and daily PnL from the exchange, not from the account's snapshots."""
        self._accounts.mark_changed(cycle.connection_id, cycle.input.tick_id, cycle.symbol)

    def _open_time(self, cycle: _Cycle, position: ExchangePosition) -> int:
        return cycle.stored.open_time_ms if cycle.stored_side == position.side else 0

    @staticmethod
    def _rules(cycle: _Cycle) -> SymbolRules:
        filters = cycle.input.market.filters
        return SymbolRules.from_filters(filters.tick_size, filters.step_size, filters.min_qty, filters.max_qty,
                                        filters.min_notional, filters.market_step_size, filters.market_max_qty)


async def _find_entry_or_none(cycle: _Cycle, client_id: str) -> Fill | None:
    try:
        return await cycle.broker.find_entry(cycle.symbol, client_id)
    except TradebotError:
        return None


async def _position_or_none(cycle: _Cycle) -> ExchangePosition | None:
    try:
        return await cycle.broker.position(cycle.symbol)
    except TradebotError:
        return None
