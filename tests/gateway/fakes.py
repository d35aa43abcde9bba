"""In-process fake servicers of the three services, on real grpc.aio servers.

They implement the protos with scripted behaviour and record every call, so
tests can count round trips (grouping) and trigger failures per bot. Like the
real executor, the fake one reads each bot (threshold, leverage, stored
position) from the test's ``botinstances``, not from the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc
from tradebot.v1 import (
    common_pb2,
    executor_pb2,
    executor_pb2_grpc,
    market_pb2,
    market_pb2_grpc,
    strategy_pb2,
    strategy_pb2_grpc,
)

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from services.common.bot_documents import parse_bot
from services.common.errors import ResourceExhausted
from services.executor.convert import stored_position_to_proto
from services.common.grpc_server import (
    BOT_INSTANCE_ID_METADATA_KEY,
    TICK_ID_METADATA_KEY,
    GrpcService,
    ServiceBinding,
    start_server,
)

CANDLE_MS = 5 * 60 * 1000
BASE_TIME_MS = 1_760_000_000_000
PRICE = "101.5"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {item.key: item.value for item in context.invocation_metadata() or ()}


def make_candles(count: int, *, start_price: Decimal = Decimal("100")) -> list[common_pb2.Candle]:
    candles = []
    for index in range(count):
        price = start_price + Decimal(index % 7)
        candles.append(
            common_pb2.Candle(
                open_time_ms=BASE_TIME_MS + index * CANDLE_MS,
                close_time_ms=BASE_TIME_MS + (index + 1) * CANDLE_MS - 1,
                open=str(price),
                high=str(price + 2),
                low=str(price - 2),
                close=str(price + 1),
                volume="10",
                closed=True,
            )
        )
    return candles


@dataclass
class FakeMarket(market_pb2_grpc.MarketDataServicer):
    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    rate_limited_symbols: set[str] = field(default_factory=set)
    unknown_symbols: set[str] = field(default_factory=set)

    def count(self, method: str) -> int:
        return sum(1 for name, _, _ in self.calls if name == method)

    def _check(self, symbol: str) -> None:
        if symbol in self.rate_limited_symbols:
            raise ResourceExhausted("request weight budget exhausted", retry_after=42.0)

    async def GetCandles(self, request, context):
        self.calls.append(("GetCandles", request, _metadata(context)))
        self._check(request.symbol)
        if request.symbol in self.unknown_symbols:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown symbol {request.symbol}")
        candles = make_candles(request.limit or 200)
        open_candle = common_pb2.Candle(open_time_ms=candles[-1].close_time_ms + 1, close="1", closed=False)
        return market_pb2.GetCandlesResponse(
            symbol=request.symbol, interval=request.interval, candles=[*candles, open_candle], source="simulated"
        )

    async def GetPrice(self, request, context):
        self.calls.append(("GetPrice", request, _metadata(context)))
        self._check(request.symbol)
        return market_pb2.GetPriceResponse(symbol=request.symbol, price=PRICE, time_ms=BASE_TIME_MS)

    async def GetSymbolFilters(self, request, context):
        self.calls.append(("GetSymbolFilters", request, _metadata(context)))
        self._check(request.symbol)
        return common_pb2.SymbolFilters(
            symbol=request.symbol, tick_size="0.1", step_size="0.001", min_qty="0.001", max_qty="1000",
            min_notional="5", market_step_size="0.001", market_max_qty="1000",
        )  # fmt: skip

    async def GetStats(self, request, context):
        return market_pb2.MarketStats(source="fake")


@dataclass
class FakeStrategy(strategy_pb2_grpc.StrategyServicer):
    calls: list[tuple[Any, dict[str, str]]] = field(default_factory=list)
    signals: dict[int, tuple[int, float]] = field(default_factory=dict)  # bot_id -> (action, confidence)
    ai_fallback_reason: str = ""
    # Declared parameters and bounds; like the real service, anything else is INVALID_ARGUMENT.
    param_bounds: dict[str, tuple[float, float]] = field(default_factory=lambda: {"rsiOversold": (5.0, 45.0)})

    async def Analyze(self, request, context):
        self.calls.append((request, _metadata(context)))
        for name, value in sorted(request.params.items()):
            if name not in self.param_bounds:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Strategy {request.bot_id} has no parameter {name}")
            low, high = self.param_bounds[name]
            if not low <= value <= high:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Strategy {request.bot_id} parameter {name} must be between {low:g} and {high:g}, got {value:g}",
                )
        action, confidence = self.signals.get(request.bot_id, (common_pb2.ACTION_BUY, 82.5))
        signal = common_pb2.Signal(action=action, confidence=confidence, reason="RSI 28 oversold, MACD cross up")
        requested = request.use_ai and action != common_pb2.ACTION_HOLD
        return strategy_pb2.AnalyzeResponse(
            strategy_name=f"Strategy {request.bot_id}",
            signal=signal,
            technical_signal=signal,
            indicators={"rsi": 28.0, "macd": 1.5, "macd_signal": 1.2, "ema_fast": 101.0, "ema_slow": 99.0},
            trend=strategy_pb2.Trend(direction="UP", strength=61.0, rule="ema_fast > ema_slow"),
            ai=strategy_pb2.AiVerdict(
                requested=requested,
                used=requested and not self.ai_fallback_reason,
                signal=signal if requested and not self.ai_fallback_reason else None,
                model="gpt-4o-mini",
                fallback_reason=self.ai_fallback_reason if requested else "",
            ),
            last_candle_open_time_ms=request.candles[-1].open_time_ms if request.candles else 0,
        )


Behaviour = Callable[[executor_pb2.RunCycleRequest], Any]


@dataclass
class FakeExecutor(executor_pb2_grpc.ExecutorServicer):
    calls: list[tuple[Any, dict[str, str]]] = field(default_factory=list)
    unavailable: set[str] = field(default_factory=set)          # bot instance ids answering UNAVAILABLE
    safety_trips: set[str] = field(default_factory=set)         # bot instance ids tripping DAILY_LOSS
    closed_trades: dict[str, list[executor_pb2.ClosedTrade]] = field(default_factory=dict)
    events: dict[str, list[executor_pb2.ExecutorEvent]] = field(default_factory=dict)
    entries_stopped: dict[str, str] = field(default_factory=dict)   # bot instance id -> why (a halt, the breaker)
    gate: asyncio.Event | None = None                           # set: every call waits for it
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    peers: set[str] = field(default_factory=set)                # client address:port of every call
    bots: AsyncDatabase | None = None                            # where the bots are stored (set per test)

    async def RunCycle(self, request, context):
        self.calls.append((request, _metadata(context)))
        self.peers.add(context.peer())
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        bot_id = request.bot.bot_instance_id
        if bot_id in self.unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "exchange connection timed out")
        assert self.bots is not None, "the gateway fixture sets where the bots are stored"
        stored = parse_bot(await self.bots.botinstances.find_one({"_id": ObjectId(bot_id)}))
        response = executor_pb2.RunCycleResponse(
            closed_trades=self.closed_trades.get(bot_id, []), daily_realized_pnl="0", available_balance="1000",
            events=self.events.get(bot_id, []), reference_price=PRICE,
            entries_stopped=self.entries_stopped.get(bot_id, ""),
        )
        if bot_id in self.safety_trips:
            response.safety.CopyFrom(
                executor_pb2.SafetyVerdict(
                    tripped=True, rule="DAILY_LOSS", message="daily loss 120 exceeds the limit 100",
                    details={"dailyLoss": "120", "maxDailyLoss": "100"}, position_closed=False, pause_bot=True,
                )
            )  # fmt: skip
            response.decision = "safety stop: no order"
            return response
        if stored.position is not None:
            response.has_position = True
            response.position.CopyFrom(stored_position_to_proto(stored.position))
            response.decision = "position open: monitoring"
            return response
        signal = request.signal
        if response.entries_stopped:
            response.decision = f"{response.entries_stopped}: no new entry"
        elif signal.action in (common_pb2.ACTION_BUY, common_pb2.ACTION_SELL) and (
            signal.confidence > stored.config.confidence_threshold
        ):
            side = common_pb2.SIDE_LONG if signal.action == common_pb2.ACTION_BUY else common_pb2.SIDE_SHORT
            response.order.CopyFrom(
                executor_pb2.OrderResult(
                    placed=True, client_order_id=f"tb-{request.tick_id[:8]}-{bot_id[-6:]}", exchange_order_id="1",
                    side=side, quantity="0.5", fill_price=PRICE, stop_loss="98.5",
                    take_profit="107.5", fee="0.02",
                )
            )  # fmt: skip
            response.has_position = True
            response.position.CopyFrom(
                executor_pb2.Position(
                    symbol=stored.symbol, side=side, entry_price=PRICE, quantity="0.5",
                    leverage=stored.config.leverage, stop_loss="98.5", take_profit="107.5", pnl="0",
                    pnl_percent="0", open_time_ms=BASE_TIME_MS, mark_price=PRICE,
                )
            )  # fmt: skip
            response.decision = "order placed"
        else:
            response.decision = "signal below threshold"
        return response

    async def GetPosition(self, request, context):
        return executor_pb2.GetPositionResponse(has_position=False)


@dataclass
class FakeServices:
    market: FakeMarket
    strategy: FakeStrategy
    executor: FakeExecutor
    servers: list[GrpcService]

    @property
    def addresses(self) -> dict[str, str]:
        return {
            name: f"127.0.0.1:{server.port}"
            for name, server in zip(("market", "strategy", "executor"), self.servers, strict=True)
        }

    def reset(self, bots: AsyncDatabase | None = None) -> None:
        """Forget every call; ``bots`` (kept when not given) is where the fake executor reads bots."""
        kept = bots if bots is not None else self.executor.bots
        self.market.__init__()  # type: ignore[misc]
        self.strategy.__init__()  # type: ignore[misc]
        self.executor.__init__(bots=kept)  # type: ignore[misc]

    def tick_ids(self) -> set[str]:
        ids = {meta.get(TICK_ID_METADATA_KEY) for _, _, meta in self.market.calls}
        ids |= {meta.get(TICK_ID_METADATA_KEY) for _, meta in self.strategy.calls}
        ids |= {meta.get(TICK_ID_METADATA_KEY) for _, meta in self.executor.calls}
        return ids

    def executor_bot_metadata(self) -> set[str]:
        return {meta.get(BOT_INSTANCE_ID_METADATA_KEY) for _, meta in self.executor.calls}

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop(0)


async def start_fake_services() -> FakeServices:
    market, strategy, executor = FakeMarket(), FakeStrategy(), FakeExecutor()
    servers = [
        await start_server([ServiceBinding("tradebot.v1.MarketData", market, market_pb2_grpc.add_MarketDataServicer_to_server)]),
        await start_server([ServiceBinding("tradebot.v1.Strategy", strategy, strategy_pb2_grpc.add_StrategyServicer_to_server)]),
        await start_server([ServiceBinding("tradebot.v1.Executor", executor, executor_pb2_grpc.add_ExecutorServicer_to_server)]),
    ]
    return FakeServices(market, strategy, executor, servers)
