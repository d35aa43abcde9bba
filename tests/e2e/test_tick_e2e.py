"""The whole tick through the real processes: HTTP in, gRPC across, MongoDB out."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.devstack.seed import seed_demo

pytestmark = pytest.mark.e2e


def test_bad_secret_is_refused_before_any_work(stack):
    """Seed scenario 1."""
    user_id, _ = stack.add_user()
    bot_id = stack.add_bot(user_id)
    for secret in ("wrong", stack.cron_secret + "x", stack.cron_secret[:-1]):
        response = stack.tick(secret=secret)
        assert response.status_code == 401
        assert response.json() == {"success": False, "error": "Unauthorized"}
    assert "lockOwner" not in stack.bot(bot_id) and "lastRunAt" not in stack.bot(bot_id)
    assert stack.db.tradelogs.count_documents({}) == 0


def test_no_active_bots(stack):
    """Seed scenario 2."""
    user_id, _ = stack.add_user()
    stack.add_bot(user_id, status="PAUSED")
    stack.add_bot(user_id, status="STOPPED")
    response = stack.tick(method="POST")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "No active bots"
    assert body["summary"] == {"totalBots": 0, "successful": 0, "failed": 0, "withPositions": 0, "skipped": 0}


def test_demo_bots_run_and_a_strong_signal_opens_a_paper_position_once(stack):
    seed_demo(stack.db, _key_of(stack))  # the same seeding as make run
    demo_ids = [bot["_id"] for bot in stack.db.botinstances.find({}, {"_id": 1})]
    strategy, symbol, interval, confidence = stack.find_tradeable()
    user_id, connection_id = stack.add_user()
    bot_id = stack.add_bot(user_id, strategy, symbol=symbol, config={"interval": interval, "confidenceThreshold": 1})

    response = stack.tick()

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["timestamp"].endswith("Z")
    assert body["summary"]["totalBots"] == 5 and body["summary"]["failed"] == 0, body
    results = {result["botInstanceId"]: result for result in body["results"]}
    assert {str(bot) for bot in demo_ids} <= set(results)
    traded = results[str(bot_id)]
    assert traded["status"] == "success" and traded["action"] in ("BUY", "SELL"), traded
    assert traded["orderPlaced"] is True and traded["hasPosition"] is True

    # botinstances: the analysis and the position, the lease released.
    bot = stack.bot(bot_id)
    assert bot["lastError"] is None and "lockOwner" not in bot
    assert bot["lastAnalysis"]["signal"]["action"] == traded["action"]
    assert {"rsi", "macd", "macd_signal"} <= set(bot["lastAnalysis"]["indicators"])
    [analysis] = stack.logs(bot_id, logType="ANALYSIS")
    assert 0 <= analysis["data"]["indicators"]["rsi"] <= 100
    assert bot["lastAnalysis"]["ai"]["requested"] is True and bot["lastAnalysis"]["ai"]["used"] is True
    position = bot["currentPosition"]
    assert position["side"] == ("LONG" if traded["action"] == "BUY" else "SHORT")
    assert position["symbol"] == symbol and position["quantity"] > 0 and position["stopLoss"] and position["takeProfit"]

    # The paper account: one position at the stored entry, the fee paid from the wallet.
    key = f"{connection_id}:{symbol}"
    paper_position = stack.db.paperpositions.find_one({"_id": key})
    assert paper_position is not None
    assert Decimal(paper_position["entryPrice"]) == Decimal(str(position["entryPrice"]))
    account = stack.db.paperaccounts.find_one({"_id": str(connection_id)})
    assert account is not None
    assert Decimal(account["walletBalance"]) == Decimal("10000") - Decimal(paper_position["entryFee"])
    assert Decimal(paper_position["entryFee"]) > 0

    # tradelogs: one ANALYSIS per bot, and the entry as a TRADE.
    assert stack.db.tradelogs.count_documents({"logType": "ANALYSIS"}) == 5
    trades = stack.logs(bot_id, logType="TRADE")
    assert len(trades) == 1 and trades[0]["severity"] == "INFO"
    for log in stack.db.tradelogs.find({}):
        assert set(log) == {"_id", "userId", "botInstanceId", "logType", "severity", "action", "message", "data", "createdAt"}

    # A second delivery: the position is monitored, no second order.
    fills_before = stack.db.paperfills.count_documents({})
    again = {result["botInstanceId"]: result for result in stack.tick().json()["results"]}
    assert again[str(bot_id)]["orderPlaced"] is False and again[str(bot_id)]["hasPosition"] is True
    assert stack.db.paperfills.count_documents({}) == fills_before
    assert stack.db.paperpositions.count_documents({"connectionId": str(connection_id)}) == 1


def test_connection_problems_fail_only_their_bots(stack):
    """Seed scenario 3: a missing connection, undecryptable credentials; the others go on."""
    good_user, _ = stack.add_user()
    good = stack.add_bot(good_user)
    lonely_user, _ = stack.add_user(with_paper_connection=False)
    no_connection = stack.add_bot(lonely_user)
    broken_user, _ = stack.add_user(with_paper_connection=False)
    stack.db.exchangeconnections.insert_one({
        "userId": broken_user, "exchange": "binance", "mode": "paper", "apiKey": "not-a-fernet-token",
        "apiSecret": "not-a-fernet-token-either", "isActive": True,
    })  # fmt: skip
    undecryptable = stack.add_bot(broken_user)

    body = stack.tick().json()

    results = {result["botInstanceId"]: result for result in body["results"]}
    assert results[str(good)]["status"] == "success"
    assert body["summary"]["failed"] == 2 and body["summary"]["successful"] == 1
    for bot_id in (no_connection, undecryptable):
        result = results[str(bot_id)]
        assert result["status"] == "failed" and result["error"].startswith("Executor failed:")
        assert stack.bot(bot_id)["lastError"] == result["error"]
        [error_log] = stack.logs(bot_id)
        assert (error_log["logType"], error_log["severity"]) == ("ERROR", "ERROR")
    assert "NOT_FOUND" in results[str(no_connection)]["error"]
    assert "not-a-fernet-token" not in stack.all_output() + str(body)


def test_daily_loss_limit_pauses_the_bot_without_an_order(stack):
    """Seed scenario 5: today's realised loss above maxDailyLoss."""
    strategy, symbol, interval, _ = stack.find_tradeable()
    user_id, connection_id = stack.add_user()
    bot_id = stack.add_bot(
        user_id, strategy, symbol=symbol, config={"interval": interval, "confidenceThreshold": 1, "maxDailyLoss": 100}
    )
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    # A trade the paper account booked earlier today, lost 150 USDT.
    stack.db.papertrades.insert_one({
        "connectionId": str(connection_id), "symbol": symbol, "side": "LONG", "entryPrice": "100", "exitPrice": "85",
        "quantity": "10", "realizedPnl": "-150", "fees": "0.5", "reason": "STOP_LOSS",
        "openTimeMs": now_ms - 60_000, "closeTimeMs": now_ms - 1_000,
    })  # fmt: skip

    body = stack.tick().json()

    [result] = body["results"]
    assert result["status"] == "success" and result["orderPlaced"] is False and result["hasPosition"] is False
    assert "DAILY_LOSS" in result["error"]
    bot = stack.bot(bot_id)
    assert bot["status"] == "PAUSED"
    assert "DAILY_LOSS" in bot["lastError"]
    critical = stack.logs(bot_id, logType="SAFETY", severity="CRITICAL")
    assert critical, stack.logs(bot_id)
    assert stack.db.paperfills.count_documents({}) == 0
    assert stack.db.paperpositions.count_documents({}) == 0
    # Paused bots are not run again.
    assert stack.tick().json()["message"] == "No active bots"


def test_no_secret_reaches_output_responses_or_logs(stack):
    user_id, _ = stack.add_user()
    stack.add_bot(user_id)
    body = stack.tick().text
    stored = str(list(stack.db.tradelogs.find({}))) + str(list(stack.db.botinstances.find({})))
    everything = stack.all_output() + body + stored
    for secret in (stack.cron_secret, stack.openai_key, _key_of(stack)):
        assert secret not in everything


def _key_of(stack) -> str:
    return stack.stack.config.credentials_keys
