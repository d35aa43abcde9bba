"""Crafted candle series and a scripted strategy for hand-checked backtests.

Every candle is flat at 100.00 (open = high = low = close) unless the
scenario gives it other prices. The scripted strategy signals from the last
closed candle's close: 100.50 -> BUY, 99.50 -> SELL (confidence 90), else HOLD,
so an entry happens exactly at the step after a signal candle closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from tradebot.v1 import common_pb2, executor_pb2

from services.backtest.candles import History, HistoryCandle
from services.backtest.engine import BacktestParams
from services.strategy.indicators import Indicators
from services.strategy.strategies.base import Decision, Strategy
from services.strategy.trend import TrendAssessment

START_MS = 1_735_689_600_000          # 2025-01-01T00:00:00Z
FIVE_MINUTES_MS = 300_000
BUY_CLOSE, SELL_CLOSE = 100.5, 99.5

Prices = tuple[str, str, str, str]    # open, high, low, close


def open_ms(index: int) -> int:
    return START_MS + index * FIVE_MINUTES_MS


def step_after(index: int) -> int:
    """The step (cycle time) at which candle ``index`` has just closed."""
    return open_ms(index + 1)


def crafted(count: int, special: Mapping[int, Prices]) -> History:
    candles = []
    for index in range(count):
        open_, high, low, close = special.get(index, ("100.00", "100.00", "100.00", "100.00"))
        candles.append(HistoryCandle(open_ms(index), open_, high, low, close, "10"))
    return History("5m", FIVE_MINUTES_MS, tuple(candles))


def buy_signal() -> Prices:
    return ("100.00", "100.50", "100.00", "100.50")


def sell_signal() -> Prices:
    return ("100.00", "100.00", "99.50", "99.50")


class ScriptedStrategy(Strategy):
    bot_id = 0
    name = "Scripted"
    description = "BUY on a 100.50 close, SELL on a 99.50 close"
    parameters = ()

    def decide(self, indicators: Indicators, trend: TrendAssessment, params: Mapping[str, float]) -> Decision:
        if indicators["close"] == BUY_CLOSE:
            return Decision("BUY", 90.0, "scripted buy")
        if indicators["close"] == SELL_CLOSE:
            return Decision("SELL", 90.0, "scripted sell")
        return Decision("HOLD", 50.0, "scripted hold")


FILTERS = common_pb2.SymbolFilters(symbol="TESTUSDT", tick_size="0.01", step_size="0.001", min_qty="0.001",
                                   max_qty="100000", min_notional="5")


def params(*, max_daily_loss: str = "100000", max_consecutive_losses: int = 100,
           resume_after_losses: str = "never") -> BacktestParams:
    config = executor_pb2.BotConfig(
        leverage=10, stop_loss_percent="2", take_profit_percent="4", position_size_percent="10",
        max_daily_loss=max_daily_loss, confidence_threshold=70, max_consecutive_losses=max_consecutive_losses,
        interval="5m", margin_type="ISOLATED")
    return BacktestParams(preset=1, symbol="TESTUSDT", config=config, filters=FILTERS,
                          initial_balance=Decimal("10000"), taker_fee=Decimal("0.0005"),
                          resume_after_losses=resume_after_losses)  # type: ignore[arg-type]
