"""Building bot cycles in tests: the stored bot, the market it sees, the gateway's request."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bson import ObjectId
from tradebot.v1 import common_pb2, executor_pb2

from services.common.bot_documents import new_bot_document, parse_bot
from services.executor.bot_config import settings_from_document
from services.executor.brokers.base import Candle
from services.executor.convert import candles_from_proto, stored_position_to_proto
from services.executor.cycle import CycleInput
from services.executor.market_inputs import MarketInputs
from services.common.position_documents import position_to_document

MINUTE_MS = 60_000


def config(**overrides: object) -> executor_pb2.BotConfig:
    values: dict[str, object] = {
        "leverage": 10,
        "stop_loss_percent": "2",
        "take_profit_percent": "4",
        "position_size_percent": "10",
        "max_daily_loss": "500",
        "confidence_threshold": 70.0,
        "max_consecutive_losses": 3,
        "max_position_notional": "",
        "interval": "5m",
        "margin_type": "ISOLATED",
    }
    values.update(overrides)
    return executor_pb2.BotConfig(**values)  # type: ignore[arg-type]


def filters(symbol: str = "BTCUSDT") -> common_pb2.SymbolFilters:
    return common_pb2.SymbolFilters(
        symbol=symbol, tick_size="0.10", step_size="0.001", min_qty="0.001", max_qty="1000",
        min_notional="100", market_step_size="0.001", market_max_qty="120",
    )


def candle(open_time_ms: int, low: str, high: str, close: str | None = None) -> common_pb2.Candle:
    return common_pb2.Candle(
        open_time_ms=open_time_ms, close_time_ms=open_time_ms + 5 * MINUTE_MS - 1,
        open=close or low, high=high, low=low, close=close or high, volume="1", closed=True,
    )


@dataclass(frozen=True)
class BotCycle:
    """One bot's cycle as a test describes it: the bot as stored, the market the executor will read,
    and the request the gateway sends (the bot's id, the tick, the signal)."""

    user_id: str
    tick_id: str
    bot_instance_id: str
    connection_id: str
    price: str
    signal: common_pb2.Signal | None
    candles: tuple[common_pb2.Candle, ...]
    stored_position: executor_pb2.Position | None
    consecutive_losses: int
    bot_config: executor_pb2.BotConfig
    symbol: str
    status: str = "ACTIVE"

    def request(self) -> executor_pb2.RunCycleRequest:
        message = executor_pb2.RunCycleRequest(
            tick_id=self.tick_id,
            bot=executor_pb2.BotRef(bot_instance_id=self.bot_instance_id, user_id=self.user_id, symbol=self.symbol),
        )
        if self.signal is not None:
            message.signal.CopyFrom(self.signal)
        return message

    def document(self) -> dict[str, Any]:
        """The ``botinstances`` document the gateway would have left behind."""
        config = self.bot_config
        stored_config: dict[str, Any] = {
            "leverage": config.leverage,
            "stopLossPercent": _number(config.stop_loss_percent),
            "takeProfitPercent": _number(config.take_profit_percent),
            "positionSizePercent": _number(config.position_size_percent),
            "maxDailyLoss": _number(config.max_daily_loss),
            "interval": config.interval or "5m",
            "confidenceThreshold": config.confidence_threshold,
            "maxConsecutiveLosses": config.max_consecutive_losses,
            "marginType": config.margin_type or "ISOLATED",
        }
        if config.max_position_notional:
            stored_config["maxPositionNotional"] = _number(config.max_position_notional)
        document = new_bot_document(
            user_id=ObjectId(self.user_id), bot_id=1, bot_name="Test bot", symbol=self.symbol, config=stored_config,
            status=self.status,
            exchange_connection_id=ObjectId(self.connection_id) if self.connection_id else None,
        )
        document["_id"] = ObjectId(self.bot_instance_id)
        document["statistics"]["consecutiveLosses"] = self.consecutive_losses
        if self.stored_position is not None:
            document["currentPosition"] = position_to_document(self.stored_position)
        return document

    def input(self) -> CycleInput:
        """The same cycle for a ``CycleRunner`` called directly (no database, no market service)."""
        stored = BotCycle.document(self)
        position = stored.get("currentPosition")
        bot = parse_bot(stored)
        return CycleInput(
            tick_id=self.tick_id, bot_instance_id=self.bot_instance_id, user_id=self.user_id,
            connection_id=self.connection_id, symbol=self.symbol, settings=settings_from_document(bot.config),
            consecutive_losses=self.consecutive_losses,
            stored_position=None if position is None else stored_position_to_proto(bot.position),
            signal=self.signal, market=self.market(),
        )

    def market(self) -> MarketInputs:
        candles = candles_from_proto(self.candles)

        async def load() -> list[Candle]:
            return candles

        return MarketInputs(Decimal(self.price), filters(self.symbol), load)


def _number(text: str) -> int | float:
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


def request(
    *,
    user_id: str,
    tick_id: str = "tick-1",
    bot_instance_id: str = "6650f0f0f0f0f0f0f0f0f0f0",
    connection_id: str = "",
    price: str = "50000",
    action: int = common_pb2.ACTION_BUY,
    confidence: float = 80.0,
    candles: list[common_pb2.Candle] | None = None,
    stored_position: executor_pb2.Position | None = None,
    consecutive_losses: int = 0,
    bot_config: executor_pb2.BotConfig | None = None,
    symbol: str = "BTCUSDT",
    status: str = "ACTIVE",
) -> BotCycle:
    return BotCycle(
        user_id=user_id, tick_id=tick_id, bot_instance_id=bot_instance_id, connection_id=connection_id, price=price,
        signal=common_pb2.Signal(action=action, confidence=confidence, reason="test"),
        candles=tuple(candles or ()), stored_position=stored_position, consecutive_losses=consecutive_losses,
        bot_config=bot_config or config(), symbol=symbol, status=status,
    )


def cycle_input(**fields: Any) -> CycleInput:
    """``request(...)`` as a ``CycleRunner`` called directly takes it."""
    return request(**fields).input()
