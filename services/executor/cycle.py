"""One bot's executor cycle, written only against the ``Broker`` interface.

Its input (``CycleInput``) comes from trusted sources only: the stored bot
and the market service (cycle_requests.py), or the backtest's own replay.

Invariants of the money path, whatever the caller or the exchange does:
* one position per (account, symbol): every cycle that sends orders holds a
  lease on (connection, symbol) shared by every replica (symbol_leases.py) and
  re-reads the position under it;
* a stop-loss from the fill onwards: from the moment an entry is sent until its
  stop is confirmed the work runs in a task the server owns, so a caller's
  deadline cannot cut it short; if the caller has gone, the result is written
  to MongoDB by the executor (late_results.py);
* protection never waits on a read that can fail: the stop audit runs on every
  path that leaves a position open (safety trips, an unreadable daily PnL, a
  partial close), and judges a stop on side, size and price, not on its type.

resolve connection -> broker -> read account and position (fail closed: a
failed read raises, nothing is opened) -> observe the market when a position
is open (paper stops fill here) -> reconcile the stored
position (gone: book the closed trade) -> an operator's flatten closes the open
position (reduce-only) -> safety rules -> monitor + protective order audit when a
position is open, else an entry when the signal is strong enough and no
operator's halt or circuit breaker stops entries (``CycleInput.controls``),
protected at once by stop-loss and take-profit.

The reply's structured fields (``order``, ``closed_trades``, ``safety``) are
what the gateway turns into TRADE and SAFETY TradeLogs; ``events`` carry only
what those fields cannot say (rejections, a restored or failed stop-loss, a
position that vanished without a record), so nothing is logged twice. The
gateway skips its own TRADE (SAFETY) logs when an event of that type is sent,
so no TRADE event is ever sent here and a SAFETY event during a trip carries
the trip itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tradebot.v1 import common_pb2, executor_pb2

from services.common.decimals import parse_decimal
from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, TradebotError
from services.common.trading_controls import NO_CONTROLS, EntryControls
from services.common.weight_governor import Priority, at_priority, deadline_var, waiting_at_most
from services.executor.account_cache import AccountCache
from services.executor.bot_config import BotSettings
from services.executor.brokers.base import (
    AccountNotReady,
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
from services.executor.entry_intents import EntryIntents, MemoryEntryIntents
from services.executor.late_results import LateResults
from services.executor.market_inputs import MarketInputs
from services.executor.operator_controls import (
    FLATTENED,
    blocked_entry,
    entries_stopped_decision,
    flatten_failed_message,
    flattened,
)
from services.executor.safety import PositionSizeRule, SafetyContext, Trip, first_trip
from services.executor.sizing import EntrySize, NoEntry, SymbolRules, protective_prices, size_entry
from services.executor.symbol_leases import Lease, ProcessSymbolLeases, SymbolLeases

log = logging.getLogger(__name__)

_ACTION_SIDE: dict[int, PositionSide] = {common_pb2.ACTION_BUY: "LONG", common_pb2.ACTION_SELL: "SHORT"}


def _at_mark(position: ExchangePosition, mark: Decimal) -> ExchangePosition:
    """The position valued at the mark price this cycle acts on (the market service's premiumIndex). A position
    kept from the user-data stream carries the mark of its last ACCOUNT_UPDATE, and Binance pushes none for a
    price move: the safety rules must judge today's loss at today's price."""
    sign = 1 if position.side == "LONG" else -1
    return replace(position, mark_price=mark, unrealized_pnl=(mark - position.entry_price) * position.quantity * sign)


def _awaiting_bring_up(cycle_input: CycleInput, not_ready: AccountNotReady) -> executor_pb2.RunCycleResponse:
    """The account is being brought up (its first snapshot waits for exchange weight): nothing is decided on
    an unknown account. The stored position is reported as it stands (watched by the account's stream, its
    stop placed earlier on the exchange); the stop audit and any entry wait for the snapshot."""
    response = executor_pb2.RunCycleResponse(reference_price=dec(cycle_input.market.price))
    stored = cycle_input.stored_position
    if stored is not None:
        response.has_position = True
        response.position.CopyFrom(stored)
    response.decision = (f"waiting for the account's bring-up: no new entry, "
                         f"{'the stored position is audited once it is read' if stored else 'nothing open'} "
                         f"({not_ready.message})")
    response.events.append(event("SYSTEM", "WARNING", "ACCOUNT_BRING_UP", response.decision, {}))
    log.warning("account not brought up yet; cycle deferred", extra={"symbol": cycle_input.symbol})
    return response


def _would_enter(cycle: _Cycle) -> bool:
    """Whether a flat bot's signal asks for an entry (BUY or SELL above its confidence threshold) that no
    operator's halt or circuit breaker stops."""
    signal = cycle.input.signal
    return (not cycle.input.controls.entries_stopped and signal is not None and signal.action in _ACTION_SIDE
            and signal.confidence > cycle.settings.confidence_threshold)

# A protected entry (fresh read, leftovers cancelled, entry, stop, target) gets this long, whatever its caller's
# deadline; beyond it the next tick's audit takes over.
ENTRY_PROTECTION_SECONDS = 60.0
ENTRY_WEIGHT_WAIT_SECONDS = 0.0   # an entry (and its day's PnL read) takes only the weight there is now, else waits for a later tick


async def _beyond_the_caller(work: Coroutine[Any, Any, None], seconds: float) -> None:
    """A protected entry outlives its caller: its requests may wait for weight until its own end."""
    deadline_var.set(time.monotonic() + seconds)
    await work
LEASE_WAIT_SECONDS = 20.0        # at most this long for another cycle's orders on the same (account, symbol)


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
    deadline: float | None = None             # the caller's, on time.monotonic(); None: no caller deadline
    controls: EntryControls = NO_CONTROLS     # the operator's halts and the fleet circuit breaker, read now

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
    lease: Lease | None = None     # the (account, symbol) lease while this cycle sends orders
    lease_depth: int = 0
    entry_deferred: str = ""       # why an entry must wait for a later tick (the exchange's budget is spent)

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

    @property
    def holder(self) -> str:
        """Who holds a symbol lease for this cycle."""
        return f"{self.input.tick_id}:{self.input.bot_instance_id}"

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
                 on_connection: Callable[[ExchangeConnection], None] | None = None,
                 leases: SymbolLeases | None = None, late_results: LateResults | None = None,
                 entry_protection_seconds: float = ENTRY_PROTECTION_SECONDS,
                 intents: EntryIntents | None = None) -> None:
        self._connections = connections
        self._brokers = brokers
        self._accounts = accounts
        self._clock = clock
        self._on_connection = on_connection
        self._leases: SymbolLeases = leases or ProcessSymbolLeases()
        self._late = late_results
        self._entry_protection_seconds = entry_protection_seconds
        self._intents: EntryIntents = intents or MemoryEntryIntents()
        self._owned: set[asyncio.Task[Any]] = set()   # protected entries and late writes, outliving their callers

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
        connection = await self._connection(cycle_input.user_id, cycle_input.connection_id, cycle_input.tick_id)
        broker = await self._brokers.broker_for(connection)
        # Bots of one account on the same symbol decide one after another (one-way mode: one position).
        async with self._accounts.symbol_lock(connection.id, cycle_input.symbol):
            return await self._run_locked(cycle_input, connection.id, broker)

    async def _connection(self, user_id: str, connection_id: str, tick_id: str) -> ExchangeConnection:
        connection = await self._accounts.connection(
            user_id, connection_id, tick_id, lambda: self._connections.resolve(user_id, connection_id),
        )
        if self._on_connection is not None:
            self._on_connection(connection)
        return connection

    async def drain(self, timeout: float) -> None:
        """Let protected entries and their late writes finish (at shutdown), for at most ``timeout`` seconds."""
        if self._owned:
            await asyncio.wait(set(self._owned), timeout=timeout)

    async def _run_locked(self, cycle_input: CycleInput, connection_id: str,
                          broker: Broker) -> executor_pb2.RunCycleResponse:
        tick_id, symbol = cycle_input.tick_id, cycle_input.symbol
        # Fail closed: if either read raises, the error ends the cycle and nothing is opened.
        # Both are read once per (connection, tick) and shared by the account's bots.
        try:
            account = await self._accounts.get(connection_id, tick_id, broker.account)
            position = await self._accounts.position(connection_id, tick_id, symbol, broker.positions,
                                                     broker.position)
        except AccountNotReady as not_ready:
            deferred = _awaiting_bring_up(cycle_input, not_ready)
            deferred.entries_stopped = cycle_input.controls.entries_stopped
            return deferred
        # Only an open position has a mark to move and stops to trigger (the paper broker simulates
        # them on this market view): afterwards the symbol is read again, its stop may have filled.
        if position is not None:
            candles = await cycle_input.market.load_candles()
            _check_candle_prices(candles)
            if await broker.observe(MarketView(symbol, cycle_input.market.price, candles)):
                self._accounts.mark_changed(connection_id, tick_id, symbol)
                position = await broker.position(symbol)
        if position is not None:
            position = _at_mark(position, cycle_input.market.price)

        cycle = _Cycle(cycle_input, connection_id, broker, account)
        cycle.response.reference_price = dec(cycle_input.market.price)
        await self._reconcile(cycle, position)
        daily: Decimal | None = None
        try:
            # Flat, not about to enter and nothing closed just now: today's PnL decides nothing, so it is not
            # read (on Binance it costs weight; the response then reports it unknown, never 0).
            if position is not None or cycle.closed or _would_enter(cycle):
                # Never hold the tick for it. An entry's read is the tick's own work; an open position's is
                # background (it is judged on its open loss meanwhile): thousands of positions' first reads of
                # the day after a restart must not take the room every entry needs.
                urgency = Priority.BACKGROUND if position is not None else Priority.TICK
                with waiting_at_most(ENTRY_WEIGHT_WAIT_SECONDS), at_priority(urgency):
                    daily = await self._accounts.daily_pnl(
                        connection_id, tick_id, symbol, utc_midnight_ms(self._clock()),
                        broker.realized_pnl_by_symbol_since, broker.realized_pnl_since,
                    )
        except ResourceExhausted as error:
            if position is None:   # the exchange's weight budget is spent: this entry waits for a later tick
                cycle.entry_deferred = (f"entry deferred: today's realised PnL of {symbol} is not read yet "
                                        f"({error.message})")
            else:   # the read waits for a later tick; the position is judged on its open loss meanwhile
                cycle.note("SYSTEM", "WARNING", "DAILY_PNL_DEFERRED",
                           f"today's realised PnL of {symbol} is not read yet ({error.message}); no new entry, "
                           "the open position is audited and protected, its open loss checked against the limit")
        except TradebotError as error:
            if position is None:
                raise   # nothing to protect, and no entry without today's PnL
            # The open position is protected all the same: the stop audit must not depend on this read.
            daily = None
            cycle.note("ERROR", "ERROR", "DAILY_PNL_UNKNOWN",
                       f"today's realised PnL of {symbol} could not be read ({error.message}); no new entry, "
                       "the open position is still audited and protected")
        cycle.response.daily_realized_pnl = dec(daily)
        cycle.response.available_balance = dec(account.available_balance)
        cycle.response.entries_stopped = cycle_input.controls.entries_stopped
        if position is not None and cycle_input.controls.flatten:
            # Before the safety rules: a rule that pauses the bot must not leave the position open.
            position, daily = await self._flatten(cycle, position, daily)

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
            protection = await broker.protective_orders(position)
            response.has_position = True
            response.position.CopyFrom(position_to_proto(position, protection, open_time_ms=0, entry_client_order_id=""))
        return response

    # -- the lease on (account, symbol) --------------------------------------
    def _lease_wait(self, cycle: _Cycle) -> float:
        deadline = cycle.input.deadline
        if deadline is None:
            return LEASE_WAIT_SECONDS
        return max(0.0, min(LEASE_WAIT_SECONDS, deadline - time.monotonic() - 1.0))

    async def _acquire(self, cycle: _Cycle) -> None:
        """Hold (account, symbol) for this cycle (re-entrant within the cycle)."""
        if cycle.lease is None:
            cycle.lease = await self._leases.acquire(cycle.connection_id, cycle.symbol, cycle.holder,
                                                     self._lease_wait(cycle))
            # Under the lease the account's snapshot of this symbol may be stale (another replica's bot
            # may have traded it): read it from the exchange from now on.
            self._changing(cycle)
        cycle.lease_depth += 1

    async def _release(self, cycle: _Cycle) -> None:
        cycle.lease_depth -= 1
        if cycle.lease_depth == 0 and cycle.lease is not None:
            lease, cycle.lease = cycle.lease, None
            await lease.release()

    @asynccontextmanager
    async def _exclusive(self, cycle: _Cycle) -> AsyncIterator[None]:
        """Hold (account, symbol) while this cycle sends orders or cancels them."""
        await self._acquire(cycle)
        try:
            yield
        finally:
            await self._release(cycle)

    # -- steps -----------------------------------------------------------
    async def _reconcile(self, cycle: _Cycle, position: ExchangePosition | None) -> None:
        """The stored position is gone from the account: book how it ended."""
        if cycle.stored_side is None or (position is not None and position.side == cycle.stored_side):
            return
        stored = cycle.stored
        self._changing(cycle)   # its closing trade counts in today's PnL from now on: no snapshot for it
        record = await cycle.broker.closed_trade(cycle.symbol, cycle.stored_side, stored.open_time_ms)
        if position is None:
            # Its leftover stop or target must go, unless another bot of the account has opened a new
            # position meanwhile: then they are that position's protection.
            async with self._exclusive(cycle):
                if await cycle.broker.position(cycle.symbol) is None:
                    await cycle.broker.cancel_protective_orders(cycle.symbol)
        if record is None:
            cycle.note("SYSTEM", "WARNING", "POSITION_GONE",
                       f"{cycle.stored_side} position on {cycle.symbol} is no longer open; no closing trade was found")
            return
        cycle.book(record)   # the gateway writes its TRADE log from closed_trades
        log.info("stored position closed", extra={"symbol": cycle.symbol, "reason": record.reason,
                                                  "realizedPnl": dec(record.realized_pnl)})

    async def _emergency_stop(self, cycle: _Cycle, trip: Trip, position: ExchangePosition | None,
                              daily: Decimal | None) -> None:
        verdict = cycle.response.safety
        verdict.tripped, verdict.rule, verdict.message = True, trip.rule, trip.message
        verdict.details.update(trip.details)
        verdict.pause_bot = trip.pause_bot
        remaining = position
        if trip.close_position and position is not None:
            async with self._exclusive(cycle):
                try:
                    # Close first: if the close fails, the stop-loss is still working.
                    fill, remaining = await self._close_and_look(cycle, position, "EMERGENCY_STOP")
                    verdict.position_closed = remaining is None
                    if fill is not None and remaining is None:
                        record = await cycle.broker.closed_trade(cycle.symbol, position.side, self._open_time(cycle, position))
                        if record is not None:
                            cycle.book(record)
                            cycle.response.daily_realized_pnl = dec((daily or Decimal(0)) + record.realized_pnl)
                except TradebotError as error:
                    # One SAFETY event with the trip and the failure (the gateway then writes it instead of its own).
                    cycle.note("SAFETY", "CRITICAL", "EMERGENCY_STOP",
                               f"Safety rule {trip.rule} paused the bot: {trip.message}; closing the {position.side} "
                               f"position on {cycle.symbol} FAILED: {error.message}",
                               {**trip.details, "rule": trip.rule, "positionClosed": "false", "closeError": error.message})
                    remaining = await _position_or_none(cycle) or position
        # The gateway writes the CRITICAL SAFETY TradeLog from the verdict; the log line is ours.
        log.critical("safety stop", extra={"rule": trip.rule, "reason": trip.message, "details": trip.details,
                                           "positionClosed": verdict.position_closed, "symbol": cycle.symbol})
        if remaining is not None:
            # A trip pauses trading, not protection: whatever stays open keeps (or gets back) its stop.
            protection = await self._audit(cycle, remaining)
            if protection is not None:
                await self._describe_position(cycle, remaining, protection)
        closed_text = "; position closed at market" if verdict.position_closed else ""
        cycle.response.decision = f"safety stop {trip.rule}: {trip.message}{closed_text}; no order this cycle"

    async def _close_and_look(self, cycle: _Cycle, position: ExchangePosition,
                              reason: str) -> tuple[Fill | None, ExchangePosition | None]:
        """Close at market, then read what is left (a close may fill only in part). Only a confirmed
        flat account loses its protective orders; what remains keeps them. Call under the lease."""
        self._changing(cycle)
        fill = await cycle.broker.close_position(cycle.symbol, cycle.client_id(OrderPurpose.CLOSE), reason)
        try:
            remaining = await cycle.broker.position(cycle.symbol)
        except TradebotError as error:
            cycle.note("SAFETY", "CRITICAL", "CLOSE_UNCONFIRMED",
                       f"the {position.side} position on {cycle.symbol} was sent a close, but what is left could "
                       f"not be read ({error.message}); its protective orders are kept")
            return fill, position
        if remaining is None:
            await cycle.broker.cancel_protective_orders(cycle.symbol)   # leftovers of a flat account
            return fill, None
        cycle.note("SAFETY", "CRITICAL", "CLOSE_PARTIAL",
                   f"the close of the {position.side} position on {cycle.symbol} filled only in part: "
                   f"{dec(remaining.quantity)} of {dec(position.quantity)} is still open and keeps its protection",
                   {"closedQuantity": dec(fill.quantity) if fill else "0", "remainingQuantity": dec(remaining.quantity)})
        return fill, remaining

    async def _monitor(self, cycle: _Cycle, position: ExchangePosition) -> None:
        protection = await self._audit(cycle, position)
        if protection is None:
            return
        await self._describe_position(cycle, position, protection)
        cycle.response.decision = (
            f"{position.side} position open: mark {dec(position.mark_price)}, unrealised PnL "
            f"{dec(position.unrealized_pnl)} USDT; monitoring, no new order"
        )

    async def _audit(self, cycle: _Cycle, position: ExchangePosition) -> ProtectiveOrders | None:
        """The stop must close this position (side, size) no farther than configured; the target must exist.
        Restores what is missing; None when the position had to be closed because its stop could not be."""
        protection = await cycle.broker.protective_orders(position)
        stop, target = self._stored_protection(cycle, position)
        tolerance = self._rules(cycle).tick_size
        if protection.stop_loss_id is None:
            why = "was missing"
        elif not _stop_not_farther(position.side, protection.stop_loss_price, stop, tolerance):
            why = f"was at {dec(protection.stop_loss_price)}, farther than the bot's {dec(stop)}"
        else:
            why = ""
        if why:
            async with self._exclusive(cycle):
                restored = await self._restore_stop(cycle, position, stop, target, why)
            if restored is None:
                return None
            protection = restored
        if protection.take_profit_id is None:
            async with self._exclusive(cycle):
                protection = await self._restore_target(cycle, position, protection, target)
        return protection

    async def _restore_stop(self, cycle: _Cycle, position: ExchangePosition, stop: Decimal, target: Decimal,
                            why: str) -> ProtectiveOrders | None:
        """Re-place stop and target with this tick's ids, or close the position if the stop cannot be."""
        try:
            await cycle.broker.cancel_protective_orders(cycle.symbol)
            protection = await cycle.broker.protect(
                cycle.symbol, position.side, stop, target,
                cycle.client_id(OrderPurpose.STOP_LOSS), cycle.client_id(OrderPurpose.TAKE_PROFIT),
            )
        except TradebotError as error:
            await self._close_unprotected(cycle, position, self._open_time(cycle, position),
                                          f"stop-loss {why} and could not be re-placed: {error.message}")
            return None
        cycle.note("SAFETY", "CRITICAL", "STOP_LOSS_RESTORED",
                   f"stop-loss of the {position.side} position on {cycle.symbol} {why}; re-placed at {dec(stop)}",
                   {"stopLoss": dec(stop), "takeProfit": dec(target)})
        return protection

    async def _restore_target(self, cycle: _Cycle, position: ExchangePosition, protection: ProtectiveOrders,
                              target: Decimal) -> ProtectiveOrders:
        """A take-profit that did not place (or vanished) is placed again; its absence endangers nothing."""
        try:
            placed = await cycle.broker.place_take_profit(cycle.symbol, position.side, target,
                                                          cycle.client_id(OrderPurpose.TAKE_PROFIT))
        except TradebotError as error:
            cycle.note("SYSTEM", "WARNING", "TAKE_PROFIT_MISSING",
                       f"take-profit of the {position.side} position on {cycle.symbol} is missing and could not be "
                       f"placed at {dec(target)}: {error.message}; the stop-loss protects the position")
            return protection
        cycle.note("SYSTEM", "WARNING", "TAKE_PROFIT_RESTORED",
                   f"take-profit of the {position.side} position on {cycle.symbol} was missing; placed at {dec(target)}",
                   {"takeProfit": dec(target)})
        return ProtectiveOrders(protection.stop_loss_id, protection.stop_loss_price,
                                placed.take_profit_id, placed.take_profit_price)

    def _stored_protection(self, cycle: _Cycle, position: ExchangePosition) -> tuple[Decimal, Decimal]:
        """The bot's stop and target for this position: as stored when they belong to it, else from its entry."""
        stored = cycle.stored
        if cycle.stored_side == position.side and stored.stop_loss and stored.take_profit:
            try:
                stop = parse_decimal(stored.stop_loss, "stored_position.stop_loss", positive=True)
                target = parse_decimal(stored.take_profit, "stored_position.take_profit", positive=True)
            except InvalidArgument:
                stop = target = None   # junk in the document: the configured distances decide
            if stop is not None and target is not None:
                return stop, target
        return protective_prices(position.side, position.entry_price, cycle.settings.stop_loss_percent,
                                 cycle.settings.take_profit_percent, self._rules(cycle).tick_size)

    async def _maybe_enter(self, cycle: _Cycle) -> None:
        stopped = cycle.input.controls.entries_stopped
        if stopped:   # an operator's halt or the circuit breaker: no new entry, whatever the signal
            blocked = blocked_entry(cycle.input.signal, cycle.settings.confidence_threshold)
            cycle.response.decision = entries_stopped_decision(stopped, blocked, cycle.response.decision)
            if blocked:
                cycle.note("SYSTEM", "WARNING", "ENTRY_HALTED",
                           f"{blocked} on {cycle.symbol}: entry not made, {stopped}", {"reason": stopped})
            return
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
        if cycle.entry_deferred:
            cycle.response.decision = f"{action} signal ({signal.confidence:g}): {cycle.entry_deferred}"
            return
        entry_id = cycle.client_id(OrderPurpose.ENTRY)
        earlier = None
        if await self._intents.exists(entry_id):   # an earlier attempt got as far as sending: ask the exchange
            with waiting_at_most(ENTRY_WEIGHT_WAIT_SECONDS):
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
        await self._acquire(cycle)   # waits while another cycle trades this (account, symbol)
        # From here the work belongs to the server: a caller that goes away cannot stop it between the
        # entry and its stop. The lease goes with it.
        await self._owned_by_server(cycle, self._enter_under_lease(cycle, side, size, action, rules))

    async def _flatten(self, cycle: _Cycle, position: ExchangePosition,
                       daily: Decimal | None) -> tuple[ExchangePosition | None, Decimal | None]:
        """An operator's halt asked for every position to be closed: close this one reduce-only now and book
        it. Returns what is still open (a failed or partial close: it goes on to the usual audit) and today's
        PnL with the close in it."""
        reason = cycle.input.controls.entries_stopped
        async with self._exclusive(cycle):
            try:
                fill, remaining = await self._close_and_look(cycle, position, FLATTENED)
            except TradebotError as error:
                cycle.note("ERROR", "CRITICAL", "FLATTEN_FAILED",
                           flatten_failed_message(reason, position.side, cycle.symbol, error.message))
                return await _position_or_none(cycle) or position, daily
            if fill is not None and remaining is None:
                record = await cycle.broker.closed_trade(cycle.symbol, position.side, self._open_time(cycle, position))
                if record is not None:
                    cycle.book(record)
                    daily = None if daily is None else daily + record.realized_pnl
                    cycle.response.daily_realized_pnl = dec(daily)
        if remaining is None:
            closed = flattened(position.side, position.quantity, cycle.symbol, fill.price if fill else None)
            cycle.note("SYSTEM", "WARNING", "POSITION_FLATTENED", f"{reason}: {closed}",
                       {"side": position.side, "quantity": dec(position.quantity), "reason": reason})
            cycle.response.decision = closed
        return remaining, daily

    async def _owned_by_server(self, cycle: _Cycle, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(asyncio.wait_for(_beyond_the_caller(work, self._entry_protection_seconds),
                                                      self._entry_protection_seconds))
        self._own(task)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():   # the caller has gone (its deadline): the result must still be stored
                log.warning("caller gone during a protected entry; finishing it", extra={"symbol": cycle.symbol})
                task.add_done_callback(lambda _: self._record_late(cycle))
            raise

    def _own(self, task: asyncio.Task[Any]) -> None:
        self._owned.add(task)
        task.add_done_callback(self._owned.discard)
        task.add_done_callback(_log_failure)

    def _record_late(self, cycle: _Cycle) -> None:
        if self._late is not None:
            self._own(asyncio.ensure_future(self._late.record(cycle.input.bot_instance_id, cycle.input.user_id,
                                                             cycle.response)))

    async def _enter_under_lease(self, cycle: _Cycle, side: PositionSide, size: EntrySize,
                                 action: str, rules: SymbolRules) -> None:
        try:
            fresh = await cycle.broker.position(cycle.symbol)   # the truth under the lease, not the snapshot
            if fresh is not None:
                # Another bot of this account (maybe on another replica) opened it since the snapshot.
                protection = await self._audit(cycle, fresh)
                if protection is not None:
                    await self._describe_position(cycle, fresh, protection)
                cycle.response.decision = (f"{action} signal, but a {fresh.side} position on {cycle.symbol} is already "
                                           "open on this account: one position per symbol, no second entry")
                return
            # Leftovers (a stop or target of an entry whose answer was lost) could close the new position at an
            # old price or make the exchange refuse its stop: a flat account starts clean.
            await cycle.broker.cancel_protective_orders(cycle.symbol)
            await self._enter(cycle, side, size, action, rules)
        finally:
            await self._release(cycle)

    async def _enter(self, cycle: _Cycle, side: PositionSide, size: EntrySize, action: str,
                     rules: SymbolRules) -> None:
        signal = cycle.input.signal
        assert signal is not None
        threshold = cycle.settings.confidence_threshold
        entry_id = cycle.client_id(OrderPurpose.ENTRY)
        order = cycle.response.order
        order.client_order_id, order.side, order.quantity = entry_id, side_to_proto(side), dec(size.quantity)
        try:
            with waiting_at_most(ENTRY_WEIGHT_WAIT_SECONDS):   # before the order: deferring costs nothing
                await cycle.broker.prepare_symbol(cycle.symbol, cycle.settings.leverage, cycle.settings.margin_type)
            self._changing(cycle)
            first = await self._intents.record(entry_id, cycle.input.bot_instance_id)   # before anything is sent
            fill = await cycle.broker.open_position(EntryOrder(cycle.symbol, side, size.quantity, entry_id, cycle.price,
                                                               first_attempt=first))
        except TradebotError as error:
            # An unknown outcome (timeout, 503) may still have filled: look before calling it a failure,
            # so a filled entry is protected now rather than at the next tick's audit.
            # A rate limit (429/418, or our own governor) is a refusal: nothing was executed, so no look-up.
            unknown = error.retryable and not isinstance(error, ResourceExhausted)
            found = await _find_entry_or_none(cycle, entry_id) if unknown else None
            if found is None and isinstance(error, ResourceExhausted):
                cycle.note("SYSTEM", "WARNING", "ENTRY_DEFERRED",
                           f"{side} entry on {cycle.symbol} deferred, nothing sent: {error.message}",
                           {"clientOrderId": entry_id, "retryAfterSeconds": f"{error.retry_after:.1f}"})
                cycle.response.decision = f"{action} entry deferred to a later tick: {error.message}"
                return
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
            entered = await _position_or_none(cycle)
            await self._close_unprotected(cycle, entered, fill.time_ms,
                                          f"stop-loss could not be placed after the entry filled: {error.message}",
                                          side=side)
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

    async def _close_unprotected(self, cycle: _Cycle, position: ExchangePosition | None, open_time_ms: int, why: str,
                                 *, side: PositionSide | None = None) -> None:
        """No leveraged position is left without its stop: close it at market at once (call under the lease)."""
        side = position.side if position is not None else side
        try:
            if position is None:   # unreadable right after the entry: close what the exchange holds
                self._changing(cycle)
                fill = await cycle.broker.close_position(cycle.symbol, cycle.client_id(OrderPurpose.CLOSE),
                                                         "STOP_LOSS_NOT_PLACED")
                remaining = await cycle.broker.position(cycle.symbol)
                if remaining is None:
                    await cycle.broker.cancel_protective_orders(cycle.symbol)
            else:
                fill, remaining = await self._close_and_look(cycle, position, "STOP_LOSS_NOT_PLACED")
        except TradebotError as error:
            cycle.note("SAFETY", "CRITICAL", "UNPROTECTED_POSITION",
                       f"{why}; closing the {side} position on {cycle.symbol} FAILED ({error.message}): "
                       "the position is open without a stop-loss")
            await self._describe_position(cycle, await _position_or_none(cycle))
            cycle.response.decision = f"{why}; emergency close failed: position unprotected"
            return
        if remaining is not None:
            cycle.note("SAFETY", "CRITICAL", "UNPROTECTED_POSITION",
                       f"{why}; the close filled only in part and {dec(remaining.quantity)} {cycle.symbol} is open "
                       "without a stop-loss")
            await self._describe_position(cycle, remaining)
            cycle.response.decision = f"{why}; emergency close filled only in part: the rest is unprotected"
            return
        if fill is not None and side is not None:
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
            protection = await cycle.broker.protective_orders(position)
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


def _stop_not_farther(side: PositionSide, actual: Decimal | None, wanted: Decimal, tolerance: Decimal) -> bool:
    """A working stop protects as configured when it is no farther from the entry than the bot's own."""
    if actual is None:
        return False
    return actual >= wanted - tolerance if side == "LONG" else actual <= wanted + tolerance


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        log.error("server-owned cycle work failed", extra={"error": f"{type(error).__name__}: {error}"})


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
