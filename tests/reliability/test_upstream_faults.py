"""Outside systems misbehaving: Binance answering 5xx or timing out, the AI hanging, a gRPC service
that accepts connections and never answers. The tick always answers before its deadline."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.devstack.processes import ChildProcess, python_module
from tests.fakes.binance_market import Fault, server_error
from tests.reliability.ledger import LEDGER
from tests.reliability.support import HungListener, call, check_results_written, spawn_gateway, spawn_service

pytestmark = pytest.mark.e2e

KLINES = "/fapi/v1/klines"


def test_exchange_5xx_then_ok_is_retried_and_the_bot_runs(rstack):
    user_id, _ = rstack.add_user()
    bot = rstack.add_bot(user_id, 1)
    rstack.market_fake.reset_counts()
    rstack.market_fake.fail_next(KLINES, server_error(503), times=2)
    LEDGER.fault("Binance klines answered 503 twice, then ok")
    started = datetime.now(UTC)

    body = rstack.tick().json()

    [result] = body["results"]
    assert result["status"] == "success" and result["error"] is None, result
    assert rstack.market_fake.count(KLINES) >= 3  # two 503s and the retry that worked
    check_results_written(rstack.db, body, started)
    assert rstack.bot(bot)["lastError"] is None


def test_exchange_timing_out_once_is_retried_within_the_tick(rstack):
    user_id, _ = rstack.add_user()
    rstack.add_bot(user_id, 2)
    # Longer than MARKET_UPSTREAM_TIMEOUT_SECONDS (2): the market gives up on it and asks again.
    rstack.market_fake.fail_next(KLINES, Fault(delay_seconds=4, status=200, body={}))
    LEDGER.fault("Binance klines did not answer within the upstream timeout")
    started = datetime.now(UTC)

    body = rstack.tick().json()

    [result] = body["results"]
    assert result["status"] == "success", result
    check_results_written(rstack.db, body, started)


def test_exchange_always_5xx_fails_the_bots_unavailable_and_the_tick_answers(rstack):
    user_id, _ = rstack.add_user()
    bots = [rstack.add_bot(user_id, 1), rstack.add_bot(user_id, 3)]
    rstack.market_fake.fail_next(KLINES, server_error(502), times=1000)
    LEDGER.fault("Binance klines answered 502 on every attempt")
    started = datetime.now(UTC)

    response = rstack.tick()

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["summary"]["failed"] == 2, body
    for result in body["results"]:
        assert result["error"].startswith("Market data for") and "UNAVAILABLE" in result["error"], result
    check_results_written(rstack.db, body, started)
    for bot in bots:
        assert [log["logType"] for log in rstack.logs(bot)] == ["ERROR"]


def test_ai_hanging_falls_back_within_the_deadline_with_a_warning(rstack):
    strategy, symbol, interval, _ = rstack.find_tradeable()
    openai = ChildProcess("openai-slow", python_module("tests.fakes.openai_server", "--mode", "slow",
                                                       "--slow-seconds", "60"), {})  # fmt: skip
    rstack.extra_processes.append(openai)
    slow_url = openai.wait_for_line(r"READY (\S+)", timeout=30).group(1)
    slow_strategy, address = spawn_service(rstack.stack.config, "strategy", "strategy-slow-ai", {
        "OPENAI_BASE_URL": slow_url, "OPENAI_TIMEOUT_SECONDS": "1", "OPENAI_MAX_RETRIES": "0",
    })  # fmt: skip
    rstack.extra_processes.append(slow_strategy)
    gateway, url = spawn_gateway(rstack.stack.config, "gateway-slow-ai", {
        "STRATEGY_ADDR": address, "TICK_DEADLINE_SECONDS": "10", "TICK_USE_AI": "true",
    })  # fmt: skip
    rstack.extra_processes.append(gateway)
    try:
        user_id, _ = rstack.add_user()
        bot = rstack.add_bot(user_id, strategy, symbol=symbol, config={"interval": interval, "confidenceThreshold": 1})
        LEDGER.fault("OpenAI accepted the request and never answered")
        started = datetime.now(UTC)

        response, took = call(url, rstack.cron_secret)

        assert response.status_code == 200 and took < 10, took
        body = response.json()
        [result] = body["results"]
        assert result["status"] == "success" and result["action"] in ("BUY", "SELL"), result
        analysis = rstack.bot(bot)["lastAnalysis"]
        assert analysis["ai"]["requested"] is True and analysis["ai"]["used"] is False, analysis
        warnings = rstack.logs(bot, severity="WARNING")
        assert any("AI" in log["message"] for log in warnings), warnings
        check_results_written(rstack.db, body, started)
    finally:
        gateway.stop()
        slow_strategy.stop()
        openai.stop()


def test_a_hung_executor_cannot_hold_the_tick_past_its_deadline(rstack):
    deadline = 6.0
    with HungListener() as hung:
        gateway, url = spawn_gateway(rstack.stack.config, "gateway-hung-executor", {
            "EXECUTOR_ADDR": hung.address, "TICK_DEADLINE_SECONDS": str(deadline), "TICK_CONCURRENCY": "1",
        })  # fmt: skip
        rstack.extra_processes.append(gateway)
        try:
            user_id, _ = rstack.add_user()
            bots = [rstack.add_bot(user_id, preset) for preset in (1, 2, 3)]
            LEDGER.fault("executor address accepts connections and never answers")
            started = datetime.now(UTC)

            response, took = call(url, rstack.cron_secret)

            assert response.status_code == 200 and took < deadline, took
            body = response.json()
            assert body["success"] is True and len(body["results"]) == 3, body
            for result in body["results"]:
                if result["status"] == "skipped":
                    assert result["error"] == "deadline", result
                else:
                    assert result["status"] == "failed" and result["error"], result
            check_results_written(rstack.db, body, started)
            for bot in bots:
                document = rstack.bot(bot)
                assert "lockOwner" not in document and rstack.logs(bot), document
        finally:
            gateway.stop()
