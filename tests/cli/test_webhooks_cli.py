"""``tradebot webhook add``: the signing secret is stored and shown exactly once."""

from __future__ import annotations

from bson import ObjectId
from pymongo.database import Database

from tests.cli.conftest import RunCli, insert_bot


def test_webhook_add_prints_the_signing_secret_once_and_list_hides_it(run_cli: RunCli, db: Database, user_id) -> None:
    bot_id = insert_bot(db, user_id)
    added = run_cli("webhook", "add", "--user-id", str(user_id), "--bot-id", str(bot_id),
                    "--url", "https://hooks.example.com/tradebot", "--events", "trade,safety")
    assert added.returncode == 0, added.stderr
    stored = db.webhooks.find_one({"userId": user_id})
    assert stored["botInstanceId"] == bot_id and stored["events"] == ["TRADE", "SAFETY"] and stored["isActive"]
    assert added.stdout.count(stored["secret"]) == 1
    listed = run_cli("webhook", "list", "--user-id", str(user_id))
    assert "https://hooks.example.com/tradebot" in listed.stdout and stored["secret"] not in listed.stdout


def test_webhook_add_rejects_bad_urls_and_foreign_bots(run_cli: RunCli, db: Database, user_id) -> None:
    bad_url = run_cli("webhook", "add", "--user-id", str(user_id), "--url", "hooks.example.com/x")
    assert bad_url.returncode == 2 and "absolute http(s) URL" in bad_url.stderr
    someone_elses = insert_bot(db, ObjectId())
    foreign = run_cli("webhook", "add", "--user-id", str(user_id), "--bot-id", str(someone_elses),
                      "--url", "https://hooks.example.com/x")
    assert foreign.returncode == 1 and "no bot" in foreign.stderr
    assert db.webhooks.count_documents({}) == 0
