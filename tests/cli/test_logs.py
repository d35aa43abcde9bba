"""``tradebot logs``: filters, limits and follow mode against real TradeLog documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bson import ObjectId
from pymongo.database import Database

from tests.cli.conftest import TRADEBOT, RunCli, insert_bot
from tests.support.processes import ManagedProcess

START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def log(bot: ObjectId, user: ObjectId, minutes: int, log_type: str, severity: str, action: str) -> dict:
    return {"userId": user, "botInstanceId": bot, "logType": log_type, "severity": severity, "action": action,
            "message": f"{action} message", "data": {}, "createdAt": START + timedelta(minutes=minutes)}


def seed(db: Database, user_id: ObjectId) -> tuple[ObjectId, ObjectId]:
    alpha = insert_bot(db, user_id, botName="Alpha")
    beta = insert_bot(db, user_id, preset=2, symbol="ETHUSDT", botName="Beta")
    db.tradelogs.insert_many([
        log(alpha, user_id, 0, "ANALYSIS", "INFO", "HOLD"),
        log(alpha, user_id, 5, "TRADE", "INFO", "OPEN_LONG"),
        log(beta, user_id, 6, "ERROR", "ERROR", "ORDER_FAILED"),
        log(alpha, user_id, 10, "TRADE", "INFO", "CLOSE_LONG"),
        log(beta, user_id, 11, "SAFETY", "CRITICAL", "DAILY_LOSS"),
        log(alpha, user_id, 12, "SAFETY", "CRITICAL", "CONSECUTIVE_LOSSES"),
    ])
    return alpha, beta


def test_filters_by_bot_type_and_severity_oldest_first(run_many, db: Database, user_id) -> None:
    alpha, beta = seed(db, user_id)
    trades, newest_critical, beta_logs = run_many(
        (("logs", "--bot", str(alpha), "--type", "trade"), {}),
        (("logs", "--severity", "CRITICAL", "--limit", "1"), {}),
        (("logs", "--bot", str(beta)), {}),
    )
    assert trades.returncode == 0, trades.stderr
    lines = trades.stdout.splitlines()
    assert [line.split()[-3] for line in lines] == ["OPEN_LONG", "CLOSE_LONG"]
    assert lines[0].startswith("2026-11-25 12:05:00") and "Alpha" in lines[0] and str(alpha) in lines[0]

    assert newest_critical.returncode == 0
    assert len(newest_critical.stdout.splitlines()) == 1 and "CONSECUTIVE_LOSSES" in newest_critical.stdout

    assert "ORDER_FAILED" in beta_logs.stdout and "DAILY_LOSS" in beta_logs.stdout
    assert "Alpha" not in beta_logs.stdout


def test_bad_filters_exit_2(run_many) -> None:
    bad_type, bad_bot = run_many((("logs", "--type", "DEBUG"), {}), (("logs", "--bot", "not-an-id"), {}))
    assert bad_type.returncode == 2 and "--type must be one of TRADE, ERROR, ANALYSIS, SAFETY, SYSTEM" in bad_type.stderr
    assert bad_bot.returncode == 2 and "--bot must be a 24-character hex id" in bad_bot.stderr


def test_follow_prints_entries_written_after_it_started(cli_env, db: Database, user_id) -> None:
    alpha, beta = seed(db, user_id)
    follower = ManagedProcess(
        "tradebot logs --follow", [*TRADEBOT, "logs", "--bot", str(alpha), "--follow", "--interval", "0.2"], cli_env
    )
    try:
        follower.wait_for_line("CONSECUTIVE_LOSSES", timeout=10)
        db.tradelogs.insert_many([
            log(beta, user_id, 20, "TRADE", "INFO", "OTHER_BOT_TRADE"),
            # Same instant as the last entry shown: a tie must not be lost.
            log(alpha, user_id, 12, "SYSTEM", "WARNING", "SAME_INSTANT"),
            log(alpha, user_id, 21, "TRADE", "INFO", "OPEN_SHORT"),
        ])
        follower.wait_for_line("OPEN_SHORT", timeout=10)
        follower.wait_for_line("SAME_INSTANT", timeout=5)
    finally:
        follower.stop()
    output = follower.output()
    assert "OTHER_BOT_TRADE" not in output
    assert sum("CONSECUTIVE_LOSSES" in line for line in follower.lines) == 1  # nothing shown twice
