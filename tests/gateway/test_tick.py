"""The tick: grouping, per-bot isolation of failures, the writes it makes."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from tradebot.v1 import common_pb2, executor_pb2

from services.common.grpc_server import BOT_INSTANCE_ID_METADATA_KEY
from services.devstack.seed import PRESET_BOTS
from tests.gateway.conftest import AUTH
from tests.support.processes import free_port

BTC, ETH = "BTCUSDT", "ETHUSDT"


async def test_no_active_bots_answers_with_the_message(gateway):
    gateway.add_bots(2, status="PAUSED")
    body = await gateway.tick()
    assert body["success"] is True
    assert body["message"] == "No active bots"
    assert body["summary"] == {"totalBots": 0, "successful": 0, "failed": 0, "withPositions": 0, "skipped": 0}
    assert body["results"] == []
    assert body["timestamp"].endswith("Z")
    assert gateway.fakes.market.calls == []


async def test_response_has_the_seed_shape_and_state_is_written(gateway):
    [bot_id] = gateway.add_bots(1)
    body = await gateway.tick()

    assert set(body) == {"success", "timestamp", "summary", "results"}
    assert body["summary"] == {"totalBots": 1, "successful": 1, "failed": 0, "withPositions": 1, "skipped": 0}
    assert body["results"] == [
        {
            "botInstanceId": str(bot_id), "botName": "Bitcoin Pro", "symbol": BTC, "status": "success",
            "action": "BUY", "confidence": 82.5, "orderPlaced": True, "hasPosition": True, "error": None,
        }
    ]  # fmt: skip
    bot = gateway.bot(bot_id)
    assert bot["lastError"] is None
    assert bot["lastAnalysis"]["signal"] == {"action": "BUY", "confidence": 82.5, "reason": "RSI 28 oversold, MACD cross up"}
    assert bot["lastAnalysis"]["indicators"]["rsi"] == 28.0
    assert bot["lastAnalysis"]["trend"]["direction"] == "UP"
    # The seed's fields, plus the signal that opened the position (what calibration links the trade to).
    assert {key: value for key, value in bot["currentPosition"].items() if key != "openingSignal"} == {
        "symbol": BTC, "side": "LONG", "entryPrice": 101.5, "quantity": 0.5, "leverage": 10, "stopLoss": 98.5,
        "takeProfit": 107.5, "pnl": 0.0, "pnlPercent": 0.0, "openTime": bot["currentPosition"]["openTime"],
    }  # fmt: skip
    assert "lockOwner" not in bot and "lockedUntil" not in bot  # lease released
    logs = gateway.logs(bot_id)
    assert sorted((log["logType"], log["severity"], log["action"]) for log in logs) == [
        ("ANALYSIS", "INFO", "BUY"),
        ("TRADE", "INFO", "OPEN_LONG"),
    ]
    analysis = next(log for log in logs if log["logType"] == "ANALYSIS")
    assert set(analysis) == {"_id", "userId", "botInstanceId", "logType", "severity", "action", "message", "data", "createdAt"}
    assert analysis["userId"] == gateway.user_id
    assert analysis["data"]["signal"]["confidence"] == 82.5
    assert analysis["data"]["indicators"]["macd"] == 1.5

    # The executor gets the bot, the tick and the signal; it reads config, statistics, position and prices itself.
    [(request, metadata)] = gateway.fakes.executor.calls
    assert request.bot.bot_instance_id == str(bot_id) and request.bot.user_id == str(gateway.user_id)
    assert request.signal.action == common_pb2.ACTION_BUY and request.signal.confidence == 82.5
    assert not any(request.HasField(name) for name in ("config", "statistics", "stored_position"))
    assert metadata[BOT_INSTANCE_ID_METADATA_KEY] == str(bot_id)


async def test_work_is_grouped_by_symbol_and_strategy(gateway):
    gateway.add_bots(5, preset=PRESET_BOTS[0], symbol=BTC)
    gateway.add_bots(3, preset=PRESET_BOTS[1], symbol=BTC)
    gateway.add_bots(2, preset=PRESET_BOTS[0], symbol=ETH)
    gateway.add_bots(2, preset=PRESET_BOTS[0], symbol=ETH, config={"interval": "15m"})

    body = await gateway.tick()

    assert body["summary"]["successful"] == 12
    market = gateway.fakes.market
    candle_requests = Counter((request.symbol, request.interval) for name, request, _ in market.calls if name == "GetCandles")
    assert candle_requests == {(BTC, "5m"): 1, (ETH, "5m"): 1, (ETH, "15m"): 1}
    assert all(request.limit >= 200 for name, request, _ in market.calls if name == "GetCandles")
    assert market.count("GetPrice") == 0 and market.count("GetSymbolFilters") == 0  # the executor reads those
    analyses = Counter((r.bot_id, r.symbol, r.interval) for r, _ in gateway.fakes.strategy.calls)
    assert analyses == {(1, BTC, "5m"): 1, (2, BTC, "5m"): 1, (1, ETH, "5m"): 1, (1, ETH, "15m"): 1}
    assert len(gateway.fakes.executor.calls) == 12
    assert len(gateway.fakes.executor_bot_metadata()) == 12
    assert len(gateway.fakes.tick_ids()) == 1  # every call carries the same tick id


async def test_database_round_trips_do_not_grow_with_bots(gateway):
    gateway.add_bots(3)
    gateway.mongo.commands.clear()
    await gateway.tick()
    few = gateway.mongo.data_commands()

    gateway.db.botinstances.delete_many({})
    gateway.add_bots(60, symbol=BTC)
    gateway.add_bots(60, symbol=ETH)
    gateway.mongo.commands.clear()
    body = await gateway.tick()
    many = gateway.mongo.data_commands()

    assert body["summary"]["successful"] == 120
    # claim, read back, bulk_write, insert_many (the weight planner reads nothing)
    assert few == many == ["update", "find", "update", "insert"]
    assert gateway.db.tradelogs.count_documents({"logType": "ANALYSIS"}) == 123


@pytest.mark.parametrize(
    ("overrides", "expected_error"),
    [
        ({"config": None}, "config is missing"),
        ({"botId": 9}, "botId must be one of 1, 2, 3, 4, got 9"),
        ({"symbol": "BTC/USDT"}, "symbol must be a Binance USDⓈ-M futures symbol such as BTCUSDT, got 'BTC/USDT'"),
        ({"config.leverage": 500}, "config.leverage must be between 1 and 125, got 500"),
        ({"config.stopLossPercent": "three"}, "config.stopLossPercent must be a number, got 'three'"),
        ({"config.maxDailyLoss": -5}, "config.maxDailyLoss must be greater than 0, got -5"),
        ({"config.interval": "7m"}, "config.interval must be a Binance interval"),
        ({"statistics": "lots"}, "statistics must be an object, got 'lots'"),
        ({"userId": "not-an-id"}, "userId must be an ObjectId, got 'not-an-id'"),
    ],
)
async def test_a_broken_document_fails_alone(gateway, overrides, expected_error):
    [good] = gateway.add_bots(1)
    [broken] = gateway.add_bots(1, name="Broken")
    if overrides == {"config": None}:
        gateway.db.botinstances.update_one({"_id": broken}, {"$unset": {"config": ""}})
    else:
        gateway.db.botinstances.update_one({"_id": broken}, {"$set": overrides})

    body = await gateway.tick()

    results = {result["botInstanceId"]: result for result in body["results"]}
    assert results[str(good)]["status"] == "success"
    assert results[str(broken)]["status"] == "failed"
    assert expected_error in results[str(broken)]["error"]
    assert body["summary"]["failed"] == 1 and body["summary"]["successful"] == 1
    assert expected_error in gateway.bot(broken)["lastError"]
    [error_log] = gateway.logs(broken)
    assert (error_log["logType"], error_log["severity"]) == ("ERROR", "ERROR")
    assert expected_error in error_log["message"]
    assert [request.bot.bot_instance_id for request, _ in gateway.fakes.executor.calls] == [str(good)]
    assert "lockOwner" not in gateway.bot(broken)


async def test_executor_unavailable_for_one_bot_fails_only_that_bot(gateway):
    first, second, third = gateway.add_bots(3)
    gateway.fakes.executor.unavailable.add(str(second))

    body = await gateway.tick()

    statuses = {result["botInstanceId"]: (result["status"], result["error"]) for result in body["results"]}
    assert statuses[str(first)] == ("success", None)
    assert statuses[str(third)] == ("success", None)
    status, error = statuses[str(second)]
    assert status == "failed"
    assert "UNAVAILABLE" in error and "exchange connection timed out" in error
    assert gateway.bot(second)["lastError"] == error
    assert gateway.bot(second)["currentPosition"] is None  # a failed cycle does not touch the position
    assert [log["severity"] for log in gateway.logs(second)] == ["ERROR"]


async def test_executor_down_fails_its_bots_with_a_clear_reason_and_no_address(gateway_factory):
    port = free_port()
    async with gateway_factory(executor_addr=f"127.0.0.1:{port}") as gateway:
        bots = gateway.add_bots(2)
        started = time.monotonic()
        body = await gateway.tick()
        assert time.monotonic() - started < 10
    assert body["summary"]["failed"] == 2
    for result in body["results"]:
        assert result["error"].startswith("Executor failed: executor RunCycle: UNAVAILABLE")
    assert len(gateway.fakes.strategy.calls) == 1  # the groups still ran once
    # gRPC names the address it failed to reach; none of that leaves for lastError, TradeLogs or webhooks.
    stored = [gateway.bot(bot)["lastError"] for bot in bots] + [log["message"] for bot in bots for log in gateway.logs(bot)]
    assert stored and all(f"127.0.0.1:{port}" not in text and str(port) not in text for text in stored), stored


async def test_safety_trip_pauses_the_bot_with_a_critical_log(gateway):
    tripped, fine = gateway.add_bots(2)
    gateway.fakes.executor.safety_trips.add(str(tripped))

    body = await gateway.tick()

    result = next(r for r in body["results"] if r["botInstanceId"] == str(tripped))
    assert result["status"] == "success" and result["orderPlaced"] is False
    assert "DAILY_LOSS" in result["error"]
    bot = gateway.bot(tripped)
    assert bot["status"] == "PAUSED"
    assert "daily loss 120 exceeds the limit 100" in bot["lastError"]
    [safety] = gateway.logs(tripped, logType="SAFETY")
    assert safety["severity"] == "CRITICAL"
    assert safety["data"]["rule"] == "DAILY_LOSS" and safety["data"]["details"]["maxDailyLoss"] == "100"
    assert gateway.bot(fine)["status"] == "ACTIVE"
    assert gateway.logs(tripped, logType="TRADE") == []


async def test_rate_limited_market_skips_its_bots_with_a_warning(gateway):
    [btc] = gateway.add_bots(1, symbol=BTC)
    eth_bots = gateway.add_bots(2, symbol=ETH)
    gateway.fakes.market.rate_limited_symbols.add(ETH)

    body = await gateway.tick()

    assert body["summary"] == {"totalBots": 3, "successful": 1, "failed": 0, "withPositions": 1, "skipped": 2}
    for bot_id in eth_bots:
        result = next(r for r in body["results"] if r["botInstanceId"] == str(bot_id))
        assert result["status"] == "skipped" and "rate limited" in result["error"] and "retry in" in result["error"]
        [warning] = gateway.logs(bot_id)
        assert (warning["logType"], warning["severity"]) == ("SYSTEM", "WARNING")
        bot = gateway.bot(bot_id)
        assert "lockOwner" not in bot and bot["lastError"] is None
    assert gateway.bot(btc)["currentPosition"] is not None
    assert all(request.bot.symbol == BTC for request, _ in gateway.fakes.executor.calls)


async def test_unknown_symbol_fails_its_bots(gateway):
    [bot_id] = gateway.add_bots(1, symbol="NOPEUSDT")
    gateway.fakes.market.unknown_symbols.add("NOPEUSDT")
    body = await gateway.tick()
    assert body["results"][0]["status"] == "failed"
    assert "NOT_FOUND" in body["results"][0]["error"] and "NOPEUSDT" in gateway.bot(bot_id)["lastError"]


async def test_ai_fallback_logs_a_warning_per_bot(gateway):
    bots = gateway.add_bots(2)
    gateway.fakes.strategy.ai_fallback_reason = "OpenAI timed out"
    await gateway.tick()
    for bot_id in bots:
        [warning] = gateway.logs(bot_id, severity="WARNING")
        assert warning["action"] == "AI_FALLBACK" and "OpenAI timed out" in warning["message"]
        assert gateway.bot(bot_id)["lastAnalysis"]["ai"]["fallbackReason"] == "OpenAI timed out"


async def test_hold_signal_places_no_order(gateway):
    [bot_id] = gateway.add_bots(1)
    gateway.fakes.strategy.signals[1] = (common_pb2.ACTION_HOLD, 40.0)
    body = await gateway.tick()
    assert body["results"][0]["action"] == "HOLD" and body["results"][0]["orderPlaced"] is False
    assert gateway.bot(bot_id)["currentPosition"] is None
    [analysis] = gateway.logs(bot_id)
    assert analysis["action"] == "HOLD"
    assert [request.use_ai for request, _ in gateway.fakes.strategy.calls] == [True]


async def test_closed_trades_are_booked_into_statistics(gateway):
    [bot_id] = gateway.add_bots(
        1,
        statistics={"totalTrades": 2, "winningTrades": 1, "losingTrades": 1, "totalProfit": 20.0, "totalLoss": 5.0,
                    "winRate": 50.0, "avgProfit": 7.5, "consecutiveLosses": 1},
    )  # fmt: skip
    gateway.fakes.executor.closed_trades[str(bot_id)] = [
        executor_pb2.ClosedTrade(symbol=BTC, side=common_pb2.SIDE_LONG, entry_price="100", exit_price="96",
                                 quantity="1", realized_pnl="-4.1", fees="0.1", reason="STOP_LOSS",
                                 close_time_ms=1_000),
        executor_pb2.ClosedTrade(symbol=BTC, side=common_pb2.SIDE_LONG, entry_price="100", exit_price="110",
                                 quantity="1", realized_pnl="9.9", fees="0.1", reason="TAKE_PROFIT",
                                 close_time_ms=2_000),
    ]  # fmt: skip

    await gateway.tick()

    statistics = gateway.bot(bot_id)["statistics"]
    assert statistics["totalTrades"] == 4
    assert statistics["winningTrades"] == 2 and statistics["losingTrades"] == 2
    assert statistics["totalProfit"] == pytest.approx(29.9)
    assert statistics["totalLoss"] == pytest.approx(9.1)
    assert statistics["winRate"] == 50.0
    assert statistics["avgProfit"] == pytest.approx((29.9 - 9.1) / 4)
    assert statistics["consecutiveLosses"] == 0  # the later trade won
    closes = gateway.logs(bot_id, action="CLOSE_POSITION")
    assert sorted(log["data"]["realizedPnl"] for log in closes) == ["-4.1", "9.9"]


async def test_statistics_missing_in_document_are_created(gateway):
    [bot_id] = gateway.add_bots(1, statistics=None)
    gateway.fakes.executor.closed_trades[str(bot_id)] = [
        executor_pb2.ClosedTrade(symbol=BTC, side=common_pb2.SIDE_SHORT, realized_pnl="-2", close_time_ms=1)
    ]
    await gateway.tick()
    statistics = gateway.bot(bot_id)["statistics"]
    assert statistics["totalTrades"] == 1 and statistics["losingTrades"] == 1
    assert statistics["consecutiveLosses"] == 1 and statistics["winRate"] == 0.0


async def test_the_stored_position_is_written_for_the_executor_not_sent_to_it(gateway):
    [bot_id] = gateway.add_bots(1)
    await gateway.tick()  # opens a position
    gateway.fakes.reset()
    body = await gateway.tick()
    [(request, _)] = gateway.fakes.executor.calls
    assert not request.HasField("stored_position")   # the executor reads currentPosition from MongoDB
    assert body["results"][0]["orderPlaced"] is False and body["results"][0]["hasPosition"] is True
    assert gateway.bot(bot_id)["currentPosition"]["side"] == "LONG"


async def test_deadline_bounds_the_tick_and_concurrency_is_bounded(gateway_factory):
    async with gateway_factory(tick_deadline_seconds=3.0, write_reserve_seconds=1.0, tick_concurrency=2) as gateway:
        bots = gateway.add_bots(5)
        gateway.fakes.executor.gate = asyncio_event()  # never opened: every executor call hangs
        started = time.monotonic()
        body = await gateway.tick()
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    statuses = Counter(result["status"] for result in body["results"])
    assert statuses == {"failed": 2, "skipped": 3}
    assert len(gateway.fakes.executor.calls) == 2  # never more than TICK_CONCURRENCY at once
    for result in body["results"]:
        if result["status"] == "skipped":
            assert result["error"] == "deadline"
        else:
            assert "DEADLINE_EXCEEDED" in result["error"]
    assert gateway.db.botinstances.count_documents({"_id": {"$in": bots}, "lockOwner": {"$exists": True}}) == 0


async def test_database_down_at_start_answers_503_with_retry_after(gateway_factory):
    async with gateway_factory(mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300") as gateway:
        response = await gateway.http.get("/api/cron/run-bots", headers=AUTH)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json()["success"] is False


async def test_healthz_reports_database_and_services(gateway):
    response = await gateway.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "services": {"market": "SERVING", "strategy": "SERVING", "executor": "SERVING"},
    }


def asyncio_event():
    import asyncio

    return asyncio.Event()


async def test_executor_events_are_written_as_is_without_duplicates(gateway):
    [bot_id] = gateway.add_bots(1)
    gateway.fakes.executor.safety_trips.add(str(bot_id))
    gateway.fakes.executor.events[str(bot_id)] = [
        executor_pb2.ExecutorEvent(log_type="TRADE", severity="INFO", action="POSITION_CLOSED",
                                   message="closed by the safety stop", data={"realizedPnl": "-20"}),
        executor_pb2.ExecutorEvent(log_type="SAFETY", severity="CRITICAL", action="EMERGENCY_STOP",
                                   message="safety stop (DAILY_LOSS)", data={"dailyPnl": "-120"}),
    ]  # fmt: skip
    await gateway.tick()
    logs = {(log["logType"], log["severity"], log["action"]) for log in gateway.logs(bot_id)}
    assert logs == {
        ("ANALYSIS", "INFO", "BUY"),
        ("TRADE", "INFO", "POSITION_CLOSED"),
        ("SAFETY", "CRITICAL", "EMERGENCY_STOP"),
    }
    [safety] = gateway.logs(bot_id, logType="SAFETY")
    assert safety["data"] == {"dailyPnl": "-120"} and safety["message"] == "safety stop (DAILY_LOSS)"


async def test_a_rejected_order_is_the_bots_last_error(gateway):
    [bot_id] = gateway.add_bots(1)
    gateway.fakes.strategy.signals[1] = (common_pb2.ACTION_HOLD, 10.0)  # no order from the fake itself
    gateway.fakes.executor.events[str(bot_id)] = [
        executor_pb2.ExecutorEvent(log_type="ERROR", severity="ERROR", action="ORDER_FAILED",
                                   message="LONG entry on BTCUSDT rejected: Margin is insufficient"),
    ]  # fmt: skip
    body = await gateway.tick()
    [result] = body["results"]
    assert result["status"] == "success" and result["orderPlaced"] is False
    assert result["error"] == "LONG entry on BTCUSDT rejected: Margin is insufficient"
    assert gateway.bot(bot_id)["lastError"] == result["error"]
    assert gateway.bot(bot_id)["currentPosition"] is None
    [failure] = gateway.logs(bot_id, logType="ERROR")
    assert failure["action"] == "ORDER_FAILED"


async def test_grouping_can_be_turned_off_for_the_baseline(gateway_factory):
    async with gateway_factory(group_work=False) as gateway:
        gateway.add_bots(4, symbol=BTC)
        body = await gateway.tick()
    assert body["summary"]["successful"] == 4
    assert gateway.fakes.market.count("GetCandles") == 4
    assert len(gateway.fakes.strategy.calls) == 4


def test_cycle_percentiles_are_nearest_rank():
    from services.gateway.tick import cycle_percentiles

    assert cycle_percentiles([]) == {}
    samples = [n / 100 for n in range(100, 0, -1)]   # 0.01 .. 1.00 s, unordered
    assert cycle_percentiles(samples) == {"botCycleP50Seconds": 0.5, "botCycleP95Seconds": 0.95,
                                          "botCycleP99Seconds": 0.99}
    assert cycle_percentiles([0.2]) == dict.fromkeys(("botCycleP50Seconds", "botCycleP95Seconds",
                                                      "botCycleP99Seconds"), 0.2)


async def test_ticks_reuse_one_channel_to_the_executor(gateway):
    gateway.add_bots(8)
    await gateway.tick()
    await gateway.tick()
    assert len(gateway.fakes.executor.calls) == 16
    # One connection for 16 concurrent calls over two ticks: the channel is built once and reused.
    assert len(gateway.fakes.executor.peers) == 1, gateway.fakes.executor.peers
