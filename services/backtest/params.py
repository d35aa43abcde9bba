"""What a backtest is asked to do; light to import (the CLI parser needs it on every command)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tradebot.v1 import common_pb2, executor_pb2

from services.backtest.pauses import ResumeAfterLosses
from services.common.decimals import format_decimal
from services.common.errors import InvalidArgument
from services.market.sources.universe import SIMULATED_UNIVERSE

DEFAULT_STEP_MS = 5 * 60_000
DEFAULT_TAKER_FEE = Decimal("0.0005")    # Binance USDⓈ-M regular taker fee
DEFAULT_INITIAL_BALANCE = Decimal("10000")


@dataclass(frozen=True)
class BacktestParams:
    preset: int
    symbol: str
    config: executor_pb2.BotConfig
    filters: common_pb2.SymbolFilters
    step_ms: int = DEFAULT_STEP_MS
    start_ms: int | None = None          # first step at or after this time (earlier candles still warm up)
    end_ms: int | None = None            # last step at or before this time
    taker_fee: Decimal = DEFAULT_TAKER_FEE
    initial_balance: Decimal = DEFAULT_INITIAL_BALANCE
    use_ai: bool = False
    resume_after_losses: ResumeAfterLosses = "never"


def filters_for(symbol: str) -> common_pb2.SymbolFilters:
    """The simulated universe's exchange filters for a symbol (the market service's own table)."""
    known = SIMULATED_UNIVERSE.get(symbol)
    if known is None:
        raise InvalidArgument(f"no exchange filters known for {symbol}; give them (tickSize, stepSize, minQty, "
                              "minNotional)")
    rules = known.rules
    return common_pb2.SymbolFilters(
        symbol=symbol, tick_size=format_decimal(rules.tick_size), step_size=format_decimal(rules.step_size),
        min_qty=format_decimal(rules.min_qty), max_qty=format_decimal(rules.max_qty),
        min_notional=format_decimal(rules.min_notional), market_step_size=format_decimal(rules.market_step_size),
        market_max_qty=format_decimal(rules.market_max_qty),
    )
