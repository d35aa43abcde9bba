"""``tradebot halt`` / ``tradebot resume``: the controls, their history and their TradeLogs, the flatten
confirmation, the breaker's manual reset; ``webhook add --operator``; ``status`` showing it all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bson import ObjectId
from pymongo.database import Database

from services.common.trading_controls import (
    BREAKER_ID,
    COLLECTION,
    EVENTS_COLLECTION,
    breaker_document,
)
from tests.cli.conftest import RunCli, insert_bot


def test_halt_records_who_when_why_and_resume_lifts_it(run_cli: RunCli, db: Database) -> None:
    halted = run_cli("halt", "--reason", "  exchange   maintenance ", "--by", "alice")
    assert halted.returncode == 0, halted.stderr
    assert "halted the whole fleet: exchange maintenance (by alice)" in halted.stdout
    halt = db[COLLECTION].find_one({"_id": "halt:fleet"})
    assert halt["reason"] == "exchange maintenance" and halt["by"] == "alice" and halt["flatten"] is False
    assert abs(halt["since"] - datetime.now(UTC)) < timedelta(seconds=30)
    [event] = db[EVENTS_COLLECTION].find({})
    [log] = db.tradelogs.find({})
    assert event["_id"] == log["_id"] and event["action"] == log["action"] == "TRADING_HALTED"
    assert (log["logType"], log["severity"], log["userId"]) == ("SAFETY", "CRITICAL", None)
    assert "exchange maintenance" in log["message"] and "alice" in log["message"]

    resumed = run_cli("resume", extra_env={"TRADEBOT_OPERATOR": "bob"})
    assert resumed.returncode == 0, resumed.stderr
    assert "lifted the halt of the whole fleet" in resumed.stdout
    assert db[COLLECTION].count_documents({}) == 0
    actions = [entry["action"] for entry in db.tradelogs.find({}).sort("_id", 1)]
    assert actions == ["TRADING_HALTED", "TRADING_RESUMED"]
    assert db[EVENTS_COLLECTION].find_one({"action": "TRADING_RESUMED"})["data"]["by"] == "bob"


def test_flatten_needs_the_typed_confirmation(run_many, db: Database, user_id) -> None:
    insert_bot(db, user_id, currentPosition={"symbol": "BTCUSDT", "side": "LONG", "quantity": 0.1})
    refused, unknown_user = run_many(
        (("halt", "--reason", "incident", "--flatten"), {"input": "yes\n"}),
        (("halt", "--user", str(ObjectId()), "--reason", "x"), {}),
    )
    assert refused.returncode == 1 and "not confirmed" in refused.stderr
    assert "1 open position(s) of ACTIVE bots" in refused.stdout
    assert unknown_user.returncode == 1 and "no user" in unknown_user.stderr
    assert db[COLLECTION].count_documents({}) == 0 and db[EVENTS_COLLECTION].count_documents({}) == 0


def test_flatten_confirmed_by_typing_or_yes_and_kept_by_a_later_halt(run_cli: RunCli, db: Database, user_id) -> None:
    typed = run_cli("halt", "--user", str(user_id), "--reason", "incident", "--flatten", input="FLATTEN\n")
    assert typed.returncode == 0, typed.stderr
    halt = db[COLLECTION].find_one({"_id": f"halt:user:{user_id}"})
    assert halt["flatten"] is True and halt["userId"] == str(user_id) and halt["scope"] == "user"
    log = db.tradelogs.find_one({})
    assert log["userId"] == user_id and log["data"]["flatten"] is True

    # A new reason does not cancel a flatten already asked for (no prompt then).
    again = run_cli("halt", "--user", str(user_id), "--reason", "still investigating")
    assert again.returncode == 0, again.stderr
    halt = db[COLLECTION].find_one({"_id": f"halt:user:{user_id}"})
    assert halt["flatten"] is True and halt["reason"] == "still investigating"

    fleet = run_cli("halt", "--reason", "everything", "--flatten", "--yes")
    assert fleet.returncode == 0 and "Type FLATTEN" not in fleet.stdout
    assert db[COLLECTION].find_one({"_id": "halt:fleet"})["flatten"] is True


def test_resume_closes_the_breaker_at_once_and_a_user_resume_leaves_the_fleet_alone(
        run_cli: RunCli, db: Database, user_id) -> None:
    now = datetime.now(UTC)
    db[COLLECTION].insert_one(breaker_document(cause="exchange_errors", reason="5 accounts failed",
                                               evidence={}, by="executor@x", now=now, cooldown_seconds=900))
    db[COLLECTION].insert_one({"_id": f"halt:user:{user_id}", "reason": "review", "by": "alice", "since": now})
    db.breakerevidence.insert_one({"_id": "connection-a", "at": now})

    user_only = run_cli("resume", "--user", str(user_id))
    assert user_only.returncode == 0 and "lifted the halt of user" in user_only.stdout
    assert db[COLLECTION].find_one({"_id": BREAKER_ID}) is not None

    fleet = run_cli("resume")
    assert fleet.returncode == 0, fleet.stderr
    assert "lifted the circuit breaker (5 accounts failed)" in fleet.stdout
    assert db[COLLECTION].count_documents({}) == 0 and db.breakerevidence.count_documents({}) == 0
    assert db.tradelogs.find_one({"action": "CIRCUIT_BREAKER_RESET"})["severity"] == "CRITICAL"

    nothing = run_cli("resume")
    assert nothing.returncode == 0 and "nothing to resume" in nothing.stdout


def test_operator_webhook_and_status_show_the_controls(run_many, db: Database) -> None:
    db[COLLECTION].insert_one({"_id": "halt:fleet", "reason": "incident 7", "by": "alice",
                               "since": datetime.now(UTC), "flatten": False})
    added, with_bot, status = run_many(
        (("webhook", "add", "--operator", "--url", "https://ops.example.com/hook"), {}),
        (("webhook", "add", "--operator", "--bot-id", str(ObjectId()), "--url", "https://ops.example.com/x"), {}),
        (("status", "--local"), {}),
    )
    assert added.returncode == 0, added.stderr
    hook = db.webhooks.find_one({"operator": True})
    assert hook["userId"] is None and hook["url"] == "https://ops.example.com/hook"
    assert added.stdout.count(hook["secret"]) == 1
    assert with_bot.returncode == 2 and "--operator" in with_bot.stderr
    assert status.returncode == 0, status.stderr
    assert "trading: HALTED for the fleet" in status.stdout and "incident 7" in status.stdout
    assert "circuit breaker: closed" in status.stdout
