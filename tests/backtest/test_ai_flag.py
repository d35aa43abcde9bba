"""AI confirmation is opt-in; with it, the report says it is not reproducible."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.backtest.engine import run_backtest
from services.backtest.report import summary
from tests.backtest.scenario import ScriptedStrategy, buy_signal, crafted, params
from tests.fakes.openai_server import FakeOpenAI

HISTORY = crafted(230, {210: buy_signal()})


async def test_without_ai_no_request_is_made_and_the_report_is_reproducible() -> None:
    async with FakeOpenAI() as fake:
        result = await run_backtest(params(), HISTORY, strategy=ScriptedStrategy())
        assert fake.request_count == 0
    report = summary(result)
    assert report["reproducible"] is True and report["aiCalls"] == 0


async def test_with_ai_only_buy_and_sell_signals_are_asked_and_the_report_says_not_reproducible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeOpenAI(mode="disagreement") as fake:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-backtest-0123456789")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_MAX_RETRIES", "0")
        result = await run_backtest(replace(params(), use_ai=True), HISTORY, strategy=ScriptedStrategy())
        # One technical BUY in the whole run (candle 210); every HOLD step cost nothing.
        assert fake.request_count == 1
    report = summary(result)
    assert report["reproducible"] is False and report["aiCalls"] == 1
    assert "cannot be reproduced" in report["reproducibleNote"]
    # The AI disagreed: the signal became HOLD, so the live rule opened nothing.
    assert result.trades == [] and result.open_position is None
