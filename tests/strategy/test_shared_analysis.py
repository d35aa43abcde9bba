"""Bots sharing (strategy, symbol, interval, params, last closed candle) share one analysis and one AI call."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.grpc_server import start_server
from services.strategy.analysis_cache import SingleFlightCache
from services.strategy.server import strategy_binding
from tests.strategy import candle_factory as factory
from tests.strategy.conftest import analyze_request, make_analyzer, strategy_settings
from tradebot.v1 import strategy_pb2_grpc

BOTS = 20


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_concurrent_identical_requests_make_exactly_one_ai_call(fake_openai):
    fake_openai.latency_ms = 150  # the first call is still in flight when the others arrive
    analyzer = make_analyzer(strategy_settings(fake_openai.base_url))
    service = await start_server([strategy_binding(analyzer)])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = strategy_pb2_grpc.StrategyStub(channel)
            request = analyze_request(1, use_ai=True)
            answered_before = metric("tradebot_strategy_ai_requests_total", outcome="answered")
            saved_before = metric("tradebot_ai_calls_total", outcome="cached")
            replies = await asyncio.gather(*(stub.Analyze(request) for _ in range(BOTS)))
            assert fake_openai.request_count == 1
            assert sum(not reply.cached for reply in replies) == 1
            assert all(reply.ai.used for reply in replies)
            assert sum(reply.ai.cached for reply in replies) == BOTS - 1
            assert len({reply.signal.SerializeToString() for reply in replies}) == 1
            assert metric("tradebot_strategy_ai_requests_total", outcome="answered") == answered_before + 1
            assert metric("tradebot_ai_calls_total", outcome="cached") == saved_before + BOTS - 1

            # Later in the same tick: still the same question, still one call.
            again = await stub.Analyze(request)
            assert again.cached and fake_openai.request_count == 1

            # Different parameters are a different group.
            await stub.Analyze(analyze_request(1, use_ai=True, min_score=70))
            assert fake_openai.request_count == 2

            # Next tick: a new closed candle is a new question.
            closes = factory.uptrend_closes()
            next_tick = analyze_request(1, [*closes, closes[-1] * 1.003], use_ai=True)
            reply = await stub.Analyze(next_tick)
            assert not reply.cached and fake_openai.request_count == 3
    finally:
        await service.stop(0)
        await analyzer.close()


async def test_failures_are_shared_by_waiters_but_not_kept():
    cache: SingleFlightCache[str, int] = SingleFlightCache(max_entries=8)
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    results = await asyncio.gather(*(cache.get_or_compute("k", failing) for _ in range(5)), return_exceptions=True)
    assert calls == 1 and all(isinstance(result, RuntimeError) for result in results)

    async def working() -> int:
        return 42

    assert await cache.get_or_compute("k", working) == (42, False)
    assert await cache.get_or_compute("k", working) == (42, True)


async def test_cache_is_bounded():
    cache: SingleFlightCache[int, int] = SingleFlightCache(max_entries=3)
    for key in range(5):
        await cache.get_or_compute(key, lambda key=key: asyncio.sleep(0, result=key))
    assert len(cache) == 3
    _, cached = await cache.get_or_compute(0, lambda: asyncio.sleep(0, result=0))
    assert not cached  # evicted, recomputed


async def test_a_cancelled_caller_does_not_cancel_the_shared_work():
    cache: SingleFlightCache[str, str] = SingleFlightCache(max_entries=8)

    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    first = asyncio.ensure_future(cache.get_or_compute("k", slow))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(cache.get_or_compute("k", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == ("done", True)
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_the_strategies_of_one_market_parse_its_candles_and_compute_its_indicators_once(monkeypatch):
    from services.strategy import analysis

    counts = {"parse": 0, "indicators": 0}
    real_parse, real_indicators = analysis.parse_candles, analysis.compute_indicators

    def counting_parse(candles):  # type: ignore[no-untyped-def]
        counts["parse"] += 1
        return real_parse(candles)

    def counting_indicators(candles):  # type: ignore[no-untyped-def]
        counts["indicators"] += 1
        return real_indicators(candles)

    monkeypatch.setattr(analysis, "parse_candles", counting_parse)
    monkeypatch.setattr(analysis, "compute_indicators", counting_indicators)
    analyzer = make_analyzer(strategy_settings())
    try:
        replies = await asyncio.gather(*(analyzer.analyze(analyze_request(bot_id)) for bot_id in (1, 2, 3, 4)))
        assert len({analysis_.strategy_name for analysis_, _ in replies}) == 4     # four different analyses
        assert len({tuple(sorted(a.indicators.items())) for a, _ in replies}) == 1   # on the same indicators
        assert counts == {"parse": 1, "indicators": 1}

        closes = factory.uptrend_closes()
        await analyzer.analyze(analyze_request(1, [*closes, closes[-1] * 1.003]))  # the next candle: new work
        assert counts == {"parse": 2, "indicators": 2}
        other = analyze_request(2)
        other.symbol = "ETHUSDT"   # the same numbers on another market are kept apart
        await analyzer.analyze(other)
        assert counts == {"parse": 3, "indicators": 3}
    finally:
        await analyzer.close()


async def test_two_histories_ending_on_the_same_candle_get_their_own_analysis():
    # The answer must be a function of the request: EMA-200 depends on every candle sent, not the last one.
    analyzer = make_analyzer(strategy_settings())
    service = await start_server([strategy_binding(analyzer)])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = strategy_pb2_grpc.StrategyStub(channel)
            first = analyze_request(1)
            other = analyze_request(1)
            for candle in other.candles[:100]:   # an older history 5 % higher, the last 139 candles identical
                for field in ("open", "high", "low", "close"):
                    setattr(candle, field, f"{float(getattr(candle, field)) * 1.05:.2f}")
            assert other.candles[-1] == first.candles[-1]

            a = await stub.Analyze(first)
            b = await stub.Analyze(other)
            assert not b.cached
            assert b.indicators["ema_200"] != a.indicators["ema_200"]
            fresh = make_analyzer(strategy_settings())   # what a cold service answers for the second history
            try:
                alone, _ = await fresh.analyze(other)
            finally:
                await fresh.close()
            assert b.indicators["ema_200"] == pytest.approx(alone.indicators["ema_200"])

            again = await stub.Analyze(first)   # an identical request is still shared
            assert again.cached and dict(again.indicators) == dict(a.indicators)
    finally:
        await service.stop(0)
        await analyzer.close()
