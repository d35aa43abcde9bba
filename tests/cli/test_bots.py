"""``tradebot bot create|list|pause|resume|stop`` through the installed entry point."""

from __future__ import annotations

import re

import pytest
from bson import ObjectId
from pymongo.database import Database

from tests.cli.conftest import RunCli, insert_bot


def create_bot(run_cli: RunCli, user_id: ObjectId, *extra: str) -> ObjectId:
    result = run_cli("bot", "create", "--user-id", str(user_id), *extra)
    assert result.returncode == 0, result.stderr
    match = re.search(r"created bot ([0-9a-f]{24})", result.stdout)
    assert match, result.stdout
    return ObjectId(match.group(1))


def test_user_create(run_cli: RunCli, db: Database) -> None:
    result = run_cli("user", "create", "--email", "Someone@Example.com", "--name", "Someone")
    assert result.returncode == 0, result.stderr
    user = db.users.find_one({"email": "someone@example.com"})
    assert user is not None and user["name"] == "Someone" and str(user["_id"]) in result.stdout
    again = run_cli("user", "create", "--email", "someone@example.com")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert db.users.count_documents({}) == 1


def test_create_writes_a_seed_shaped_bot_the_gateway_accepts(run_cli: RunCli, db: Database, user_id) -> None:
    bot_id = create_bot(run_cli, user_id, "--preset", "1", "--symbol", "btcusdt",
                        "--config", '{"leverage": 5, "takeProfitPercent": 4.5}', "--stop-loss", "2.5")
    bot = db.botinstances.find_one({"_id": bot_id})
    assert bot["userId"] == user_id
    assert (bot["botId"], bot["botName"], bot["symbol"], bot["status"]) == (1, "Bitcoin Pro", "BTCUSDT", "ACTIVE")
    assert bot["config"] == {
        "leverage": 5, "stopLossPercent": 2.5, "takeProfitPercent": 4.5, "positionSizePercent": 10,
        "maxDailyLoss": 100, "interval": "5m", "confidenceThreshold": 70, "maxConsecutiveLosses": 3,
    }
    assert bot["currentPosition"] is None and bot["lastAnalysis"] is None
    assert bot["statistics"]["consecutiveLosses"] == 0 and bot["statistics"]["totalTrades"] == 0
    assert bot["createdAt"] == bot["updatedAt"]
    documents = pytest.importorskip("services.common.bot_documents")
    parsed = documents.parse_bot(bot)  # the tick reads it without complaint
    assert parsed.config.leverage == 5 and str(parsed.config.stop_loss_percent) == "2.5"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--preset", "5", "--symbol", "BTCUSDT"], "preset must be one of 1, 2, 3, 4, got 5"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--leverage", "126"], "leverage must be >= 1 and <= 125, got 126"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--leverage", "2.5"], "leverage must be a whole number"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--stop-loss", "0"], "stopLossPercent must be >= 0.05 and < 100, got 0"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--take-profit", "100"],
         "takeProfitPercent must be >= 0.05 and < 100, got 100"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--position-size", "150"],
         "positionSizePercent must be > 0 and <= 100, got 150"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--max-daily-loss", "abc"], "maxDailyLoss must be a number"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--leverage", "50", "--stop-loss", "3"],
         "stopLossPercent 3 at leverage 50 is at or beyond liquidation"),
        (["--preset", "1", "--symbol", "BTCEUR"], "symbol must be a Binance USDⓈ-M futures symbol"),
        (["--preset", "1", "--symbol", "BTC-USDT"], "symbol must be a Binance USDⓈ-M futures symbol"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--config", "{leverage: 5}"], "--config is not valid JSON"),
        (["--preset", "1", "--symbol", "BTCUSDT", "--config", '{"levrage": 5}'], "unknown config setting levrage"),
    ],
)
def test_invalid_settings_exit_2_with_a_clear_message_and_write_nothing(
    run_cli: RunCli, db: Database, user_id, arguments: list[str], message: str
) -> None:
    result = run_cli("bot", "create", "--user-id", str(user_id), *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert db.botinstances.count_documents({}) == 0


def test_create_for_an_unknown_user_fails(run_many, db: Database) -> None:
    create = ("bot", "create", "--preset", "1", "--symbol", "BTCUSDT", "--user-id")
    result, bad_id = run_many(((*create, str(ObjectId())), {}), ((*create, "42"), {}))
    assert result.returncode == 1
    assert "no user" in result.stderr and "tradebot user create" in result.stderr
    assert bad_id.returncode == 2 and "--user-id must be a 24-character hex id" in bad_id.stderr


def test_list_shows_status_position_pnl_win_rate_and_last_signal(run_cli: RunCli, db: Database, user_id) -> None:
    quiet = insert_bot(db, user_id, preset=3, symbol="SOLUSDT")
    busy = insert_bot(db, user_id, preset=2, symbol="ETHUSDT", botName="Eth Safe")
    db.botinstances.update_one({"_id": busy}, {"$set": {
        "currentPosition": {"symbol": "ETHUSDT", "side": "LONG", "entryPrice": "3000.5", "quantity": "0.250",
                            "leverage": 10, "pnl": "12.3456", "pnlPercent": "16.4"},
        "statistics": {"totalTrades": 4, "winningTrades": 3, "losingTrades": 1, "totalProfit": "40.10",
                       "totalLoss": "-10.05", "consecutiveLosses": 0},
        "lastAnalysis": {"signal": {"action": "BUY", "confidence": 82.5, "reason": "trend up"}},
    }})
    result = run_cli("bot", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SYMBOL", "STATUS", "POSITION", "UPNL", "NET", "PNL", "TRADES",
                                "WIN", "RATE", "LAST", "SIGNAL"]
    busy_row = next(line for line in lines if str(busy) in line)
    assert re.search(r"Eth Safe\s+ETHUSDT\s+ACTIVE\s+LONG 0\.25\s+12\.35\s+30\.05\s+4\s+75\.0%\s+BUY 82\.5%", busy_row)
    quiet_row = next(line for line in lines if str(quiet) in line)
    assert re.search(r"Trend Rider\s+SOLUSDT\s+ACTIVE\s+-\s+-\s+0\.00\s+0\s+-\s+-$", quiet_row)


def test_pause_resume_stop_move_the_status(run_cli: RunCli, db: Database, user_id) -> None:
    bot_id = insert_bot(db, user_id, preset=4, symbol="BTCUSDC")

    def status() -> str:
        return db.botinstances.find_one({"_id": bot_id})["status"]

    paused = run_cli("bot", "pause", str(bot_id))
    assert paused.returncode == 0 and "ACTIVE -> PAUSED" in paused.stdout and status() == "PAUSED"
    assert run_cli("bot", "resume", str(bot_id)).returncode == 0 and status() == "ACTIVE"

    db.botinstances.update_one({"_id": bot_id}, {"$set": {
        "currentPosition": {"symbol": "BTCUSDC", "side": "SHORT", "entryPrice": "60000", "quantity": "0.01",
                            "leverage": 5}}})
    stopped = run_cli("bot", "stop", str(bot_id))
    assert stopped.returncode == 0 and status() == "STOPPED"
    assert "open position" in stopped.stdout  # the user is told the exchange position is still there
    assert run_cli("bot", "pause", str(bot_id)).returncode == 1  # STOPPED cannot be paused
    assert status() == "STOPPED"

    missing = run_cli("bot", "pause", str(ObjectId()))
    assert missing.returncode == 1 and "no bot" in missing.stderr


def test_resume_after_a_losing_streak_warns_or_resets(run_cli: RunCli, db: Database, user_id) -> None:
    bot_id = insert_bot(db, user_id, status="PAUSED")
    db.botinstances.update_one({"_id": bot_id}, {"$set": {"statistics.consecutiveLosses": 3}})
    warned = run_cli("bot", "resume", str(bot_id))
    assert warned.returncode == 0 and "--reset-losses" in warned.stdout
    db.botinstances.update_one({"_id": bot_id}, {"$set": {"status": "PAUSED"}})
    reset = run_cli("bot", "resume", str(bot_id), "--reset-losses")
    assert reset.returncode == 0 and "warning" not in reset.stdout
    bot = db.botinstances.find_one({"_id": bot_id})
    assert bot["status"] == "ACTIVE" and bot["statistics"]["consecutiveLosses"] == 0
