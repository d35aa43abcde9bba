"""Building RunCycle requests in tests."""

from __future__ import annotations

from tradebot.v1 import common_pb2, executor_pb2

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


def filters() -> common_pb2.SymbolFilters:
    return common_pb2.SymbolFilters(
        symbol="BTCUSDT", tick_size="0.10", step_size="0.001", min_qty="0.001", max_qty="1000",
        min_notional="100", market_step_size="0.001", market_max_qty="120",
    )


def candle(open_time_ms: int, low: str, high: str, close: str | None = None) -> common_pb2.Candle:
    return common_pb2.Candle(
        open_time_ms=open_time_ms, close_time_ms=open_time_ms + 5 * MINUTE_MS - 1,
        open=close or low, high=high, low=low, close=close or high, volume="1", closed=True,
    )


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
) -> executor_pb2.RunCycleRequest:
    message = executor_pb2.RunCycleRequest(
        tick_id=tick_id,
        bot=executor_pb2.BotRef(
            bot_instance_id=bot_instance_id, user_id=user_id, bot_id=1, bot_name="Test bot",
            symbol=symbol, exchange_connection_id=connection_id,
        ),
        config=bot_config or config(),
        statistics=executor_pb2.BotStatistics(consecutive_losses=consecutive_losses),
        signal=common_pb2.Signal(action=action, confidence=confidence, reason="test"),
        market=executor_pb2.MarketContext(price=price, filters=filters(), candles=candles or []),
    )
    if stored_position is not None:
        message.stored_position.CopyFrom(stored_position)
    return message
