"""Every RPC of the three services, fed generated requests: OK or a deliberate status, never UNKNOWN/INTERNAL/hang.

Besides "no crash", each run checks the answers that came back OK: a request
with a NaN, infinite or non-positive price, or a confidence outside 0..100,
must never be accepted; an accepted analysis never reports a NaN confidence.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import grpc
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.executor import builders
from tests.executor.conftest import RunningExecutor
from tests.fuzz import messages
from tests.fuzz.rpc_calls import Outcome, StatusTally, assert_deliberate, call
from tradebot.v1 import executor_pb2_grpc, market_pb2_grpc, strategy_pb2_grpc

Check = Callable[[Message, Outcome], None]
# CI runs a bounded, derandomized sample; FUZZ_SCALE=10 (and FUZZ_RANDOM=1 for fresh examples) digs deeper locally.
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"


def run_fuzz(port: int, stub_class: type, method: str, requests: st.SearchStrategy, max_examples: int,
             check: Check | None = None) -> StatusTally:
    tally = StatusTally()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        rpc = getattr(stub_class(channel), method)

        @settings(settings.get_profile("grpc-fuzz"), max_examples=max_examples * SCALE, derandomize=not RANDOM)
        @given(requests)
        def answers_deliberately(request: Message) -> None:
            outcome = call(rpc, request)
            tally.add(outcome)
            assert_deliberate(outcome, request)
            if check is not None:
                check(request, outcome)

        answers_deliberately()
    print(f"{method}: {max_examples * SCALE} generated requests -> {tally.counts}; top reasons {tally.reasons.most_common(4)}")
    return tally


def positive_finite(text: str) -> bool:
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return False
    return number.is_finite() and number > 0


def assert_reached_both_sides(tally: StatusTally) -> None:
    """A fuzz run that never passes validation (or never fails it) tests half the service."""
    assert tally.counts.get("OK", 0) > 0, tally.counts
    assert tally.counts.get("INVALID_ARGUMENT", 0) > 0, tally.counts


# -- market ------------------------------------------------------------------
def check_candles(request: Message, outcome: Outcome) -> None:
    if outcome.code is not grpc.StatusCode.OK:
        return
    assert 0 <= request.limit <= 1500
    assert outcome.response.symbol == request.symbol.strip().upper()
    closed = [candle for candle in outcome.response.candles if candle.closed]
    assert len(closed) <= (request.limit or 200)
    for candle in outcome.response.candles:
        assert all(positive_finite(getattr(candle, name)) for name in ("open", "high", "low", "close"))


async def test_get_candles_answers_every_request_deliberately(market_port: int) -> None:
    tally = await asyncio.to_thread(run_fuzz, market_port, market_pb2_grpc.MarketDataStub, "GetCandles",
                                    messages.get_candles_requests(), 120, check_candles)
    assert_reached_both_sides(tally)


async def test_get_price_and_filters_answer_every_request_deliberately(market_port: int) -> None:
    for method, requests in (("GetPrice", messages.get_price_requests),
                             ("GetSymbolFilters", messages.get_symbol_filters_requests)):
        tally = await asyncio.to_thread(run_fuzz, market_port, market_pb2_grpc.MarketDataStub, method, requests, 60)
        assert_reached_both_sides(tally)


async def test_get_stats_always_answers(market_port: int) -> None:
    tally = await asyncio.to_thread(run_fuzz, market_port, market_pb2_grpc.MarketDataStub, "GetStats",
                                    messages.get_stats_requests, 5)
    assert set(tally.counts) == {"OK"}


# -- strategy ----------------------------------------------------------------
def check_analysis(request: Message, outcome: Outcome) -> None:
    if outcome.code is not grpc.StatusCode.OK:
        return
    for candle in request.candles:
        if candle.closed:
            assert all(positive_finite(getattr(candle, name)) for name in ("open", "high", "low", "close")), candle
    assert all(math.isfinite(value) for value in request.params.values())
    for signal in (outcome.response.signal, outcome.response.technical_signal):
        assert 0 <= signal.confidence <= 100, signal  # also fails on NaN
    assert 0 <= outcome.response.trend.strength <= 100, outcome.response.trend


async def test_analyze_answers_every_request_deliberately(strategy_port: int) -> None:
    tally = await asyncio.to_thread(run_fuzz, strategy_port, strategy_pb2_grpc.StrategyStub, "Analyze",
                                    messages.analyze_requests(), 150, check_analysis)
    assert_reached_both_sides(tally)


async def test_list_strategies_always_answers(strategy_port: int) -> None:
    tally = await asyncio.to_thread(run_fuzz, strategy_port, strategy_pb2_grpc.StrategyStub, "ListStrategies",
                                    messages.list_strategies_requests, 5)
    assert set(tally.counts) == {"OK"}


# -- executor ----------------------------------------------------------------
def check_cycle(request: Message, outcome: Outcome) -> None:
    if outcome.code is not grpc.StatusCode.OK:
        return
    if request.HasField("config"):   # a statement that passed: valid, and the stored config
        assert 0 <= request.config.confidence_threshold <= 100
        assert 1 <= request.config.leverage <= 125
    if request.HasField("signal"):
        assert 0 <= request.signal.confidence <= 100
    assert positive_finite(outcome.response.reference_price), outcome.response


async def test_run_cycle_answers_every_request_deliberately(executor: RunningExecutor,
                                                           paper_connection: tuple[str, str]) -> None:
    user_id, connection_id = paper_connection
    await executor.store(builders.request(user_id=user_id))   # the bot the requests mostly name
    tally = await asyncio.to_thread(run_fuzz, executor.service.port, executor_pb2_grpc.ExecutorStub, "RunCycle",
                                    messages.run_cycle_requests(user_id, connection_id), 120, check_cycle)
    assert_reached_both_sides(tally)


async def test_get_position_answers_every_request_deliberately(executor: RunningExecutor,
                                                                paper_connection: tuple[str, str]) -> None:
    user_id, connection_id = paper_connection
    await executor.store(builders.request(user_id=user_id))
    tally = await asyncio.to_thread(run_fuzz, executor.service.port, executor_pb2_grpc.ExecutorStub, "GetPosition",
                                    messages.get_position_requests(user_id, connection_id), 60)
    assert_reached_both_sides(tally)
