"""Backtest: replay history through the live strategy, executor cycle, paper broker and safety rules.

Every step (the cron cadence, 5 minutes by default) does what a live tick
does for one bot, with the same code:

1. the strategy sees only the candles CLOSED at that moment (open time +
   interval <= now): indicators (``IndicatorSeries``, computed once, equal
   to ``compute_indicators`` on those candles), ``assess_trend``, the
   registered strategy's ``decide``; AI confirmation only when asked;
2. the executor's ``CycleRunner.run`` gets the same ``CycleInput`` a live
   cycle resolves from the stored bot and the market service (config,
   statistics, stored position, signal, price, filters, candles closed since
   the previous cycle) and runs against a ``PaperBroker`` on an in-memory
   store with the simulated clock;
3. the reply is booked like the gateway books it: statistics through the
   gateway's own ``records.tally``, a tripped pausing rule pauses the bot
   (see ``pauses`` for when it resumes).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tradebot.v1 import common_pb2, executor_pb2

from services.backtest.candles import History
from services.backtest.params import (  # re-exported: the engine is the library entry point
    DEFAULT_INITIAL_BALANCE,
    DEFAULT_STEP_MS,
    DEFAULT_TAKER_FEE,
    BacktestParams,
    filters_for,
)
from services.backtest.pauses import Pause, pause_for
from services.backtest.wiring import (
    BACKTEST_BOT_INSTANCE_ID,
    BACKTEST_USER_ID,
    SimulatedClock,
    build_runner,
)
from services.common.decimals import format_decimal, parse_decimal
from services.common.errors import InvalidArgument
from services.executor.bot_config import validate_config
from services.executor.brokers.base import Candle, ExchangePosition, MarketView
from services.executor.convert import candles_from_proto
from services.executor.cycle import CycleInput
from services.executor.market_inputs import MarketInputs
from services.gateway.records import tally
from services.strategy.candles import CandleSeries
from services.strategy.combine import combine_with_ai, fallback_without_ai
from services.strategy.indicators import IndicatorSeries
from services.strategy.prompt import PromptFacts
from services.strategy.strategies import strategy_for
from services.strategy.strategies.base import Decision, Strategy
from services.strategy.trend import assess_trend

if TYPE_CHECKING:
    from services.strategy.ai import AiConfirmer

__all__ = ["DEFAULT_INITIAL_BALANCE", "DEFAULT_STEP_MS", "DEFAULT_TAKER_FEE", "BacktestParams", "BacktestResult",
           "SafetyTrip", "filters_for", "run_backtest", "step_times"]

FIRST_CYCLE_CANDLES = 10                 # what the gateway hands the executor at least (RECENT_CANDLES_FOR_EXECUTOR)

_ACTIONS = {"BUY": common_pb2.ACTION_BUY, "SELL": common_pb2.ACTION_SELL, "HOLD": common_pb2.ACTION_HOLD}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SafetyTrip:
    time_ms: int
    rule: str
    message: str
    position_closed: bool
    paused: bool


@dataclass
class BacktestResult:
    params: BacktestParams
    strategy_name: str
    step_times_ms: list[int] = field(default_factory=list)
    equity: list[Decimal] = field(default_factory=list)
    in_position: list[bool] = field(default_factory=list)
    paused: list[bool] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    safety_trips: list[SafetyTrip] = field(default_factory=list)
    decisions: list[tuple[int, str, float]] = field(default_factory=list)   # (time, action, confidence) per cycle
    first_candle_ms: int = 0
    last_candle_ms: int = 0
    ai_calls: int = 0
    open_position: ExchangePosition | None = None   # still open when the history ended (not in the trades)


def step_times(history: History, step_ms: int, min_candles: int, start_ms: int | None,
               end_ms: int | None) -> list[int]:
    """Cron-aligned step times from the first moment ``min_candles`` candles are closed to the last close."""
    if len(history) < min_candles:
        raise InvalidArgument(f"the strategy needs at least {min_candles} candles, the history has {len(history)}")
    ready = history.candles[min_candles - 1].open_time_ms + history.interval_ms
    first = max(ready, start_ms or ready)
    first = -(-first // step_ms) * step_ms
    last = history.candles[-1].open_time_ms + history.interval_ms
    if end_ms is not None:
        last = min(last, end_ms)
    if first > last:
        raise InvalidArgument("no step falls inside the period (after the warm-up of the first candles)")
    return list(range(first, last + 1, step_ms))


class _Replay:
    def __init__(self, params: BacktestParams, history: History, progress: Progress | None,
                 strategy: Strategy | None = None) -> None:
        if history.interval_ms <= 0:
            raise InvalidArgument("history has no interval")
        self.params = params
        self.history = history
        self.progress = progress
        self.strategy_class: type[Strategy] = strategy_for(params.preset)
        self.strategy = strategy if strategy is not None else self.strategy_class()
        self.strategy_params = self.strategy_class.resolve_parameters({})   # the gateway sends no overrides
        self.series = history.series()
        self.indicators = IndicatorSeries(self.series)
        self.close_ends = [c.open_time_ms + history.interval_ms for c in history.candles]
        self.clock = SimulatedClock()
        self.runner, self.broker, self.store = build_runner(
            initial_balance=params.initial_balance, taker_fee=params.taker_fee, clock=self.clock)
        self.settings = validate_config(params.config)
        self.statistics = executor_pb2.BotStatistics(total_profit="0", total_loss="0")
        self.stored_position: executor_pb2.Position | None = None
        self.observed_through = -1          # last candle index handed to the broker
        self.pause: Pause | None = None
        self.proto_candles: dict[int, common_pb2.Candle] = {}
        self.confirmer: AiConfirmer | None = None
        self.fallback_factor = 1.0
        self.result = BacktestResult(params, self.strategy_class.name,
                                     first_candle_ms=history.candles[0].open_time_ms,
                                     last_candle_ms=history.candles[-1].open_time_ms)

    def candle_proto(self, index: int) -> common_pb2.Candle:
        candle = self.proto_candles.pop(index, None)
        if candle is None:
            source = self.history.candles[index]
            candle = common_pb2.Candle(
                open_time_ms=source.open_time_ms, close_time_ms=source.open_time_ms + self.history.interval_ms - 1,
                open=source.open, high=source.high, low=source.low, close=source.close, volume=source.volume,
                closed=True)
        return candle

    def new_candles(self, last: int) -> list[common_pb2.Candle]:
        """Candles closed since the previous cycle (the first cycle: the gateway's recent 10).

        Earlier candles were already shown to the broker, which would have
        triggered SL/TP on them then; the gateway sends more, to the same effect.
        """
        if self.observed_through < 0:
            first = max(0, last - FIRST_CYCLE_CANDLES + 1)
        elif last <= self.observed_through:
            first = last  # nothing new closed (a step shorter than the interval): the latest candle again
        else:
            first = self.observed_through + 1
        self.observed_through = max(self.observed_through, last)
        return [self.candle_proto(index) for index in range(first, last + 1)]

    async def signal(self, last: int) -> Decision:
        values = self.indicators.at(last)
        trend = assess_trend(values)
        technical = self.strategy.decide(values, trend, self.strategy_params)
        if not self.params.use_ai or technical.action == "HOLD":
            return technical
        facts = PromptFacts(self.params.symbol, self.history.interval, self.strategy_class.name, technical, values,
                            trend, _prefix(self.series, last + 1))
        assert self.confirmer is not None
        outcome = await self.confirmer.confirm(facts)
        self.result.ai_calls += 1
        if outcome.answer is None:
            return fallback_without_ai(technical, self.fallback_factor, outcome.failure or "AI gave no answer")
        return combine_with_ai(technical, outcome.answer)

    async def run(self) -> BacktestResult:
        params = self.params
        if params.use_ai:
            from services.strategy.ai import build_ai_confirmer
            from services.strategy.settings import StrategySettings
            settings = StrategySettings.from_env()
            self.confirmer = build_ai_confirmer(settings)
            self.fallback_factor = settings.ai_fallback_confidence_factor
        times = step_times(self.history, params.step_ms, self.strategy_class.min_candles,
                           params.start_ms, params.end_ms)
        try:
            for number, now in enumerate(times):
                self.clock.now_ms = now
                last = bisect.bisect_right(self.close_ends, now) - 1
                await self.step(now, last)
                if self.progress is not None:
                    self.progress(number + 1, len(times))
        finally:
            if self.confirmer is not None:
                await self.confirmer.close()
        self.result.trades = self.store.trades
        self.result.open_position = await self.broker.position(params.symbol)
        return self.result

    async def step(self, now: int, last: int) -> None:
        pause = self.pause
        if pause is not None and pause.resume_at_ms is not None and now >= pause.resume_at_ms:
            if pause.reset_losses:
                self.statistics.consecutive_losses = 0
            self.pause = None
        if self.pause is not None:
            await self.exchange_only(last)
        else:
            await self.cycle(now, last)
        await self.record_equity(now)

    async def exchange_only(self, last: int) -> None:
        """Paused: no cycle, but the exchange still triggers an open position's SL/TP."""
        if await self.broker.position(self.params.symbol) is None:
            self.observed_through = last
            return
        candles = self.new_candles(last)
        price = Decimal(self.history.candles[last].close)
        await self.broker.observe(MarketView(self.params.symbol, price, candles_from_proto(candles)))

    async def cycle(self, now: int, last: int) -> None:
        params = self.params
        decision = await self.signal(last)
        candles = candles_from_proto(self.new_candles(last))

        async def load_candles() -> list[Candle]:
            return candles

        price = parse_decimal(self.history.candles[last].close, "close", positive=True)
        assert price is not None
        cycle_input = CycleInput(
            tick_id=f"backtest-{now}",
            bot_instance_id=BACKTEST_BOT_INSTANCE_ID,
            user_id=BACKTEST_USER_ID,
            connection_id="",
            symbol=params.symbol,
            settings=self.settings,
            consecutive_losses=self.statistics.consecutive_losses,
            stored_position=self.stored_position,
            signal=common_pb2.Signal(action=_ACTIONS[decision.action], confidence=decision.confidence,
                                     reason=decision.reason),
            market=MarketInputs(price, params.filters, load_candles),
        )
        response = await self.runner.run(cycle_input)
        self.result.decisions.append((now, decision.action, decision.confidence))
        self.book(now, response)

    def book(self, now: int, response: executor_pb2.RunCycleResponse) -> None:
        """What the gateway writes back to the bot document, kept in memory."""
        if response.has_position:
            stored = executor_pb2.Position()
            stored.CopyFrom(response.position)
            stored.ClearField("mark_price")              # the gateway's document does not keep these two
            stored.ClearField("entry_client_order_id")
            self.stored_position = stored
        else:
            self.stored_position = None
        if response.closed_trades:
            counted = tally(self.statistics.consecutive_losses, response.closed_trades)
            stats = self.statistics
            stats.total_trades += counted.trades
            stats.winning_trades += counted.wins
            stats.losing_trades += counted.losses
            stats.total_profit = format_decimal(Decimal(stats.total_profit) + Decimal(repr(counted.profit)))
            stats.total_loss = format_decimal(Decimal(stats.total_loss) + Decimal(repr(counted.loss)))
            stats.consecutive_losses = counted.consecutive_losses
        safety = response.safety
        if safety.tripped:
            self.result.safety_trips.append(SafetyTrip(now, safety.rule, safety.message, safety.position_closed,
                                                       safety.pause_bot))
            if safety.pause_bot:
                self.pause = pause_for(safety.rule, now, self.params.resume_after_losses)

    async def record_equity(self, now: int) -> None:
        account = await self.broker.account()
        position = await self.broker.position(self.params.symbol)
        equity = account.wallet_balance + (position.unrealized_pnl if position is not None else Decimal(0))
        result = self.result
        result.step_times_ms.append(now)
        result.equity.append(equity)
        result.in_position.append(position is not None)
        result.paused.append(self.pause is not None)


def _prefix(series: CandleSeries, count: int) -> CandleSeries:
    return CandleSeries(series.open_time_ms[:count], series.open[:count], series.high[:count],
                        series.low[:count], series.close[:count], series.volume[:count])


async def run_backtest(params: BacktestParams, history: History, progress: Progress | None = None, *,
                       strategy: Strategy | None = None) -> BacktestResult:
    """Replay ``history`` for one bot; see the module docstring for what each step does.

    ``strategy`` replaces the preset's strategy instance (its decide() gets the
    same indicators and trend): for scripted signals in tests and research.

    The executor's per-cycle log lines (one per step, a CRITICAL per safety
    stop) are silenced for the run: the report carries them.
    """
    executor_log = logging.getLogger("services.executor")
    previous = executor_log.level
    executor_log.setLevel(logging.CRITICAL + 1)
    try:
        return await _Replay(params, history, progress, strategy).run()
    finally:
        executor_log.setLevel(previous)
