"""AI confirmation through the real openai SDK against the local fake server, one test per failure mode."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import REGISTRY

from services.strategy.combine import combine_with_ai
from services.strategy.strategies.base import Decision
from tests.fakes.openai_server import FakeOpenAI
from tests.strategy.candle_factory import flat_closes
from tests.strategy.conftest import TEST_API_KEY, analyze_request, make_analyzer, strategy_settings

TECHNICAL_CONFIDENCE = 90.0  # Bitcoin Pro on the crafted up-trend (tests/strategy/test_strategies.py)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def analyze_with_ai(fake: FakeOpenAI, **env: str):
    analyzer = make_analyzer(strategy_settings(fake.base_url, **env))
    try:
        started = time.monotonic()
        analysis, _ = await analyzer.analyze(analyze_request(1, use_ai=True))
        return analysis, time.monotonic() - started
    finally:
        await analyzer.close()


async def test_agreement_raises_confidence_and_reports_usage(fake_openai):
    prompt_before = metric("tradebot_strategy_ai_tokens_total", kind="prompt")
    analysis, _ = await analyze_with_ai(fake_openai)
    assert analysis.technical == Decision("BUY", TECHNICAL_CONFIDENCE, analysis.technical.reason)
    assert analysis.ai.requested and analysis.ai.used
    assert analysis.ai.answer is not None and analysis.ai.answer.action == "BUY"
    # 90 + (100 - 90) * 85 / 200 = 94.25
    assert (analysis.signal.action, analysis.signal.confidence) == ("BUY", 94.25)
    assert analysis.ai.model == "gpt-4o"
    assert analysis.ai.prompt_tokens > 0 and analysis.ai.completion_tokens > 0
    assert metric("tradebot_strategy_ai_tokens_total", kind="prompt") - prompt_before == analysis.ai.prompt_tokens
    assert fake_openai.request_count == 1


async def test_request_carries_market_facts_and_strict_schema_but_no_secrets(fake_openai):
    await analyze_with_ai(fake_openai, OPENAI_MODEL="gpt-4o-2024-08-06")
    [request] = fake_openai.requests
    assert request.headers["Authorization"] == f"Bearer {TEST_API_KEY}"
    body = request.body
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]
    assert schema["strict"] is True
    assert schema["schema"]["required"] == ["action", "confidence", "reason"]
    document = json.loads(body["messages"][-1]["content"])
    assert document["proposed_action"] == "BUY"
    assert document["symbol"] == "BTCUSDT" and document["interval"] == "5m"
    assert {"rsi", "macd", "macd_signal", "macd_histogram", "ema_9", "ema_21", "ema_50", "ema_200"} <= set(
        document["indicators"]
    )
    assert document["trend"]["direction"] == "UP"
    assert len(document["recent_candles"]["candles"]) == 12
    assert TEST_API_KEY not in json.dumps(body)


async def test_disagreement_turns_the_signal_to_hold(fake_openai):
    fake_openai.set_mode("disagreement")
    analysis, _ = await analyze_with_ai(fake_openai)
    assert analysis.ai.used
    assert analysis.signal.action == "HOLD"
    assert analysis.signal.confidence == 75.0
    assert "AI disagrees (technical BUY, AI HOLD)" in analysis.signal.reason
    assert fake_openai.request_count == 1


@pytest.mark.parametrize(
    ("mode", "reason", "requests"),
    [
        ("refusal", "AI refused: I'm sorry", 1),
        ("truncated", "AI answer truncated (finish_reason length)", 1),
        ("malformed", "AI answer did not match the schema", 1),
        ("wrong_schema", "AI answer did not match the schema", 1),
        ("unauthorized", "AI rejected the credentials (HTTP 401)", 1),  # never retried
        ("rate_limited", "AI rate limited (HTTP 429, retry-after 1s)", 2),  # 1 + OPENAI_MAX_RETRIES
        ("server_error", "AI server error (HTTP 500)", 2),
    ],
)
async def test_every_ai_failure_falls_back_to_the_reduced_technical_signal(fake_openai, mode, reason, requests):
    kind_labels = {"refusal": "refusal", "truncated": "truncated", "malformed": "malformed",
                   "wrong_schema": "malformed", "unauthorized": "auth", "rate_limited": "rate_limited",
                   "server_error": "server_error"}  # fmt: skip
    fallbacks_before = metric("tradebot_strategy_ai_fallbacks_total", reason=kind_labels[mode])
    fake_openai.set_mode(mode)
    analysis, elapsed = await analyze_with_ai(fake_openai)
    assert analysis.ai.requested and not analysis.ai.used
    assert analysis.ai.fallback_reason.startswith(reason)
    assert analysis.signal.action == "BUY"
    assert analysis.signal.confidence == pytest.approx(TECHNICAL_CONFIDENCE * 0.8)
    assert fake_openai.request_count == requests
    assert elapsed < 2.0  # inside OPENAI_TIMEOUT_SECONDS
    assert TEST_API_KEY not in analysis.ai.fallback_reason + analysis.signal.reason
    assert metric("tradebot_strategy_ai_fallbacks_total", reason=kind_labels[mode]) == fallbacks_before + 1


async def test_a_slow_ai_falls_back_within_the_configured_timeout(fake_openai):
    fake_openai.set_mode("slow")
    analysis, elapsed = await analyze_with_ai(fake_openai, OPENAI_TIMEOUT_SECONDS="0.4")
    assert analysis.ai.fallback_reason == "AI timed out after 0.4s"
    assert analysis.signal.confidence == pytest.approx(TECHNICAL_CONFIDENCE * 0.8)
    assert 0.35 < elapsed < 0.9
    assert 1 <= fake_openai.request_count <= 2


async def test_a_rate_limit_then_an_answer_is_used_after_one_bounded_retry(fake_openai):
    fake_openai.set_mode("success", script=["rate_limited"])
    analysis, _ = await analyze_with_ai(fake_openai)
    assert analysis.ai.used and analysis.signal.confidence == 94.25
    assert fake_openai.request_count == 2


async def test_retries_are_bounded_by_the_setting(fake_openai):
    fake_openai.set_mode("server_error")
    analysis, _ = await analyze_with_ai(fake_openai, OPENAI_MAX_RETRIES="0")
    assert not analysis.ai.used
    assert fake_openai.request_count == 1


async def test_unreachable_ai_falls_back_with_a_connection_error():
    async with FakeOpenAI() as fake:
        base_url = fake.base_url
    analysis, elapsed = await analyze_with_ai(FakeOpenAI(base_url=base_url), OPENAI_MAX_RETRIES="0")
    assert analysis.ai.fallback_reason == "AI connection error"
    assert analysis.signal.action == "BUY"
    assert elapsed < 2.0


async def test_without_a_key_the_ai_is_not_configured_and_never_called(fake_openai):
    analyzer = make_analyzer(strategy_settings(None, OPENAI_BASE_URL=fake_openai.base_url))
    analysis, _ = await analyzer.analyze(analyze_request(1, use_ai=True))
    assert analysis.ai.requested and not analysis.ai.used
    assert analysis.ai.fallback_reason == "AI not configured"
    assert analysis.signal.confidence == pytest.approx(72.0)
    assert fake_openai.request_count == 0


async def test_a_hold_or_use_ai_false_costs_no_ai_call(fake_openai):
    analyzer = make_analyzer(strategy_settings(fake_openai.base_url))
    try:
        hold, _ = await analyzer.analyze(analyze_request(1, flat_closes(), use_ai=True))
        assert hold.signal.action == "HOLD" and not hold.ai.requested
        no_ai, _ = await analyzer.analyze(analyze_request(1, use_ai=False))
        assert no_ai.signal == no_ai.technical and not no_ai.ai.requested
    finally:
        await analyzer.close()
    assert fake_openai.request_count == 0


def test_combining_rule_by_hand():
    technical = Decision("SELL", 80.0, "t")
    assert combine_with_ai(technical, Decision("SELL", 100.0, "a")).confidence == 90.0
    assert combine_with_ai(technical, Decision("SELL", 0.0, "a")).confidence == 80.0
    opposite = combine_with_ai(technical, Decision("BUY", 60.0, "a"))
    assert (opposite.action, opposite.confidence) == ("HOLD", 60.0)


async def test_a_timed_out_attempt_is_retried_inside_the_budget(fake_openai):
    fake_openai.set_mode("success", script=["slow"])
    # 2 s budget, 1 retry: each attempt may take 1 s, leaving room for the retry's answer.
    analysis, elapsed = await analyze_with_ai(fake_openai, OPENAI_TIMEOUT_SECONDS="2")
    assert analysis.ai.used and analysis.signal.confidence == 94.25
    assert fake_openai.request_count == 2
    assert 1.0 <= elapsed < 2.0
