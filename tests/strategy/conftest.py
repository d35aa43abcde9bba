"""Shared helpers for the strategy tests: requests, settings and the fake OpenAI server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.strategy.ai import build_ai_confirmer
from services.strategy.analysis import Analyzer
from services.strategy.settings import StrategySettings
from tests.fakes.openai_server import FakeOpenAI
from tests.strategy import candle_factory as factory
from tradebot.v1 import strategy_pb2

TEST_API_KEY = "sk-test-strategy-0123456789abcdef"


def analyze_request(
    bot_id: int = 1, closes: list[float] | None = None, *, use_ai: bool = False, **params: float
) -> strategy_pb2.AnalyzeRequest:
    candles = factory.candles_from_closes(closes if closes is not None else factory.uptrend_closes())
    return strategy_pb2.AnalyzeRequest(
        bot_id=bot_id, symbol="BTCUSDT", interval="5m", candles=candles, params=params, use_ai=use_ai
    )


def strategy_settings(base_url: str | None = None, **env: str) -> StrategySettings:
    values = {"OPENAI_TIMEOUT_SECONDS": "2", "OPENAI_MAX_RETRIES": "1", **env}
    if base_url is not None:
        values.setdefault("OPENAI_API_KEY", TEST_API_KEY)
        values["OPENAI_BASE_URL"] = base_url
    return StrategySettings.from_env(values)


def make_analyzer(settings: StrategySettings) -> Analyzer:
    return Analyzer(
        build_ai_confirmer(settings),
        fallback_factor=settings.ai_fallback_confidence_factor,
        cache_max_entries=settings.analysis_cache_max_entries,
    )


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake
