"""Turning a RunCycle request into a ``CycleInput`` the executor can trust.

The caller contributes the bot's id, the tick's id and the signal, nothing
else. Who owns the bot, which exchange connection it trades on, its config,
its statistics (what the safety rules read) and its stored position come from
``botinstances``; the price and filters from the market service. Fields a
caller still sends (the gateway sends the bot's identity) are statements to
check, not values to use: a request whose user, connection, config,
statistics or position disagrees with the stored bot is refused, and so is a
bot that is not ACTIVE or that another tick holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from tradebot.v1 import executor_pb2

from services.common.decimals import format_decimal, parse_decimal
from services.common.errors import Aborted, FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.trading_controls import NO_CONTROLS, EntryControls
from services.executor.bot_config import BotSettings, settings_from_document, validate_config
from services.executor.convert import side_from_proto, stored_position_to_proto
from services.executor.cycle import CycleInput
from services.executor.market_inputs import MarketReader
from services.executor.stored_bots import StoredBot, StoredBotReader
from services.executor.trading_controls_reader import TradingControlsReader

RUNNABLE_STATUS = "ACTIVE"


class CycleRequests:
    def __init__(self, bots: StoredBotReader, market: MarketReader,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 controls: TradingControlsReader | None = None) -> None:
        self._bots = bots
        self._market = market
        self._now = now
        self._controls = controls   # None: no operator controls (a test's executor)

    async def resolve(self, request: executor_pb2.RunCycleRequest, deadline: float | None) -> CycleInput:
        if not request.tick_id:
            raise InvalidArgument("tick_id is required")
        if len(request.tick_id) > 128:
            raise InvalidArgument("tick_id is at most 128 characters")
        if request.HasField("signal") and not 0 <= request.signal.confidence <= 100:  # also rejects NaN
            raise InvalidArgument(f"signal.confidence must be in 0..100, got {request.signal.confidence}")
        stored = await self.stored_bot(request.bot)
        check_runnable(stored, request.tick_id, self._now())
        check_statements(request, stored)
        bot = stored.bot
        position = None if bot.position is None else stored_position_to_proto(bot.position)
        # The operator's halts and the circuit breaker, as they stand now, read beside the market data.
        market, controls = await asyncio.gather(
            self._market.inputs(bot.symbol, bot.config.interval,
                                position.open_time_ms if position is not None else None, request.tick_id, deadline),
            self._entry_controls(str(bot.user_id)),
        )
        return CycleInput(
            tick_id=request.tick_id,
            bot_instance_id=str(bot.instance_id),
            user_id=str(bot.user_id),
            connection_id="" if bot.exchange_connection_id is None else str(bot.exchange_connection_id),
            symbol=bot.symbol,
            settings=settings_from_document(bot.config),
            consecutive_losses=bot.statistics.consecutive_losses,
            stored_position=position,
            signal=request.signal if request.HasField("signal") else None,
            market=market,
            deadline=deadline,
            controls=controls,
        )

    async def _entry_controls(self, user_id: str) -> EntryControls:
        return NO_CONTROLS if self._controls is None else await self._controls.for_user(user_id)

    async def stored_bot(self, ref: executor_pb2.BotRef) -> StoredBot:
        """The named bot, refused when the caller's statement of its owner or connection is wrong."""
        if not ref.bot_instance_id:
            raise InvalidArgument("bot.bot_instance_id is required")
        stored = await self._bots.get(ref.bot_instance_id)
        check_identity(ref, stored)
        return stored


def check_runnable(stored: StoredBot, tick_id: str, now: datetime) -> None:
    if stored.status != RUNNABLE_STATUS:
        raise FailedPrecondition(f"bot is {stored.status}, not ACTIVE: it does not trade")
    held_by_another = (stored.lock_owner is not None and stored.lock_owner != tick_id
                       and stored.locked_until is not None and stored.locked_until > now)
    if held_by_another:
        # Two ticks must never drive one bot at once: their orders would carry different ids.
        raise Aborted("bot is being run by another tick")


def check_identity(ref: executor_pb2.BotRef, stored: StoredBot) -> None:
    bot = stored.bot
    if ref.user_id and ref.user_id != str(bot.user_id):
        raise PermissionDenied("bot.user_id is not the owner of this bot")
    stored_connection = "" if bot.exchange_connection_id is None else str(bot.exchange_connection_id)
    if ref.exchange_connection_id and ref.exchange_connection_id != stored_connection:
        raise PermissionDenied("bot.exchange_connection_id is not this bot's exchange connection")
    _same("bot.symbol", ref.symbol, bot.symbol)
    _same("bot.bot_id", ref.bot_id, bot.bot_id)


def check_statements(request: executor_pb2.RunCycleRequest, stored: StoredBot) -> None:
    """Config, statistics and position a caller sent must be the stored ones (they are never used)."""
    bot = stored.bot
    if request.HasField("config"):
        claimed = validate_config(request.config)
        actual = settings_from_document(bot.config)
        for name in BotSettings.__dataclass_fields__:
            _same(f"config.{name}", getattr(claimed, name), getattr(actual, name))
        if request.config.interval:
            _same("config.interval", request.config.interval, bot.config.interval)
    if request.HasField("statistics"):
        sent, kept = request.statistics, bot.statistics
        for name in ("total_trades", "winning_trades", "losing_trades", "consecutive_losses"):
            _same(f"statistics.{name}", getattr(sent, name), getattr(kept, name))
        for name in ("total_profit", "total_loss"):
            sent_amount = parse_decimal(getattr(sent, name), f"statistics.{name}", allow_empty=True) or Decimal(0)
            _same(f"statistics.{name}", sent_amount, Decimal(repr(getattr(kept, name))))
    if request.HasField("stored_position"):
        sent_position = request.stored_position
        if bot.position is None:
            raise FailedPrecondition("request disagrees with the stored bot: stored_position is sent, the bot has none")
        _same("stored_position.side", side_from_proto(sent_position.side), bot.position.side)
        for name, kept_value in (("entry_price", bot.position.entry_price), ("quantity", bot.position.quantity)):
            sent_value = parse_decimal(getattr(sent_position, name), f"stored_position.{name}", allow_empty=True)
            _same(f"stored_position.{name}", sent_value, kept_value)


def _same(field: str, sent: object, stored: object) -> None:
    if sent in ("", 0, None) and field.startswith("bot."):
        return   # identity fields the caller left out
    if sent != stored:
        raise FailedPrecondition(
            f"request disagrees with the stored bot: {field} is {_show(sent)}, stored {_show(stored)}; "
            "the executor acts only on the stored bot"
        )


def _show(value: object) -> str:
    if isinstance(value, Decimal):
        return format_decimal(value)
    return repr(value) if isinstance(value, str) else str(value)


def deadline_from(time_remaining: float | None) -> float | None:
    """A gRPC context's time left as a monotonic deadline (None: the caller set none)."""
    return None if time_remaining is None else time.monotonic() + time_remaining
