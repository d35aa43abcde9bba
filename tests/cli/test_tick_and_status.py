"""``tradebot tick`` and ``tradebot status``, plus the status report the gateway can serve."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.database import Database

from services.gateway.status_report import build_status_report
from tests.cli.conftest import RunCli, insert_bot
from tests.cli.fake_gateway import SECRET, STATUS_TOKEN, fake_gateway
from tests.support.processes import free_port

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_tick_posts_with_the_bearer_secret_and_prints_the_summary(run_many) -> None:
    with fake_gateway() as url:
        result, refused = run_many(
            (("tick",), {"extra_env": {"GATEWAY_URL": url, "CRON_SECRET": SECRET}}),
            (("tick",), {"extra_env": {"GATEWAY_URL": url, "CRON_SECRET": "wrong-secret"}}),
        )
    # One bot failed in that tick: the summary is shown and the exit code says so.
    assert result.returncode == 1, result.stderr
    assert "totalBots 2, successful 1, failed 1, withPositions 1, skipped 0" in result.stdout
    assert re.search(r"Bitcoin Pro\s+BTCUSDT\s+success\s+BUY\s+82\.5%\s+yes\s+yes", result.stdout)
    assert re.search(r"Safe Trader\s+ETHUSDT\s+failed\s+-\s+-\s+no\s+no\s+credentials could not be decrypted",
                     result.stdout)
    assert "running one tick" in result.stderr and "tick finished in" in result.stderr
    assert refused.returncode == 1 and "the gateway answered 401: Unauthorized" in refused.stderr
    assert SECRET not in result.stdout + result.stderr + refused.stdout + refused.stderr


def test_tick_needs_the_secret_and_a_reachable_gateway(run_many) -> None:
    missing, down = run_many(
        (("tick",), {}),
        (("tick",), {"extra_env": {"GATEWAY_URL": f"http://127.0.0.1:{free_port()}", "CRON_SECRET": SECRET}}),
    )
    assert missing.returncode == 2 and "CRON_SECRET is required" in missing.stderr
    assert down.returncode == 1 and "could not reach the gateway" in down.stderr


def seed_activity(db: Database, user_id: ObjectId) -> tuple[ObjectId, ObjectId]:
    holder = insert_bot(db, user_id, botName="Holder", currentPosition={
        "symbol": "BTCUSDT", "side": "LONG", "entryPrice": "60000.0", "quantity": "0.010", "leverage": 10,
        "pnl": "15.5", "pnlPercent": "25.83", "openTime": NOW - timedelta(hours=2)})
    closer = insert_bot(db, user_id, preset=2, symbol="ETHUSDT", botName="Closer")
    insert_bot(db, user_id, preset=3, symbol="SOLUSDT", botName="Paused", status="PAUSED")

    def entry(bot: ObjectId, log_type: str, severity: str, at: datetime, data: dict | None = None) -> dict:
        return {"userId": user_id, "botInstanceId": bot, "logType": log_type, "severity": severity, "action": "X",
                "message": "m", "data": data or {}, "createdAt": at}

    db.tradelogs.insert_many([
        entry(closer, "TRADE", "INFO", NOW - timedelta(hours=3), {"realizedPnl": "12.40"}),
        entry(closer, "TRADE", "INFO", NOW - timedelta(hours=1), {"realizedPnl": "-5.15"}),
        entry(closer, "TRADE", "INFO", NOW - timedelta(minutes=30), {"side": "LONG"}),  # an opening: nothing realised
        entry(closer, "TRADE", "INFO", NOW - timedelta(hours=16), {"realizedPnl": "100"}),  # yesterday (UTC)
        entry(holder, "ANALYSIS", "INFO", NOW - timedelta(minutes=5)),
        entry(closer, "ANALYSIS", "INFO", NOW - timedelta(minutes=5)),
        entry(closer, "ANALYSIS", "INFO", NOW - timedelta(hours=30)),  # older than 24 h
        entry(closer, "ERROR", "ERROR", NOW - timedelta(hours=2)),
        entry(holder, "SAFETY", "CRITICAL", NOW - timedelta(hours=4)),
    ])
    return holder, closer


async def test_status_report_from_the_database(db: Database, mongo_uri: str, mongo_db_name: str, user_id) -> None:
    holder, closer = seed_activity(db, user_id)
    db.ticks.insert_one({"tickId": "t-earlier", "startedAt": NOW - timedelta(minutes=11),
                         "finishedAt": NOW - timedelta(minutes=10), "outcome": "success"})
    db.ticks.insert_one({"tickId": "t-latest", "startedAt": NOW - timedelta(minutes=6),
                         "finishedAt": NOW - timedelta(minutes=5), "outcome": "partial",
                         "summary": {"totalBots": 2, "successful": 1, "failed": 1}})
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        report = await build_status_report(client[mongo_db_name], now=NOW)
        await client[mongo_db_name].ticks.drop()
        without_tick_records = await build_status_report(client[mongo_db_name], now=NOW)
    finally:
        await client.close()
    assert report["botsByStatus"] == {"ACTIVE": 2, "PAUSED": 1}
    assert report["openPositions"] == [{
        "botInstanceId": str(holder), "botName": "Holder", "status": "ACTIVE", "symbol": "BTCUSDT", "side": "LONG",
        "quantity": "0.010", "entryPrice": "60000.0", "pnl": "15.5", "pnlPercent": "25.83",
        "openTime": "2026-11-25T13:00:00Z",
    }]
    assert report["realizedPnlToday"] == [
        {"botInstanceId": str(closer), "botName": "Closer", "realizedPnl": "7.25", "closedTrades": 2}
    ]
    assert report["tradeLogsLast24h"] == {"ANALYSIS": 2, "ERROR": 1, "CRITICAL": 1}
    assert report["lastTick"]["tickId"] == "t-latest" and report["lastTick"]["outcome"] == "partial"
    assert report["lastTick"]["at"] == "2026-11-25T14:55:00Z"
    # Without tick records, the newest per-bot write of a tick tells when it ran.
    assert without_tick_records["lastTick"]["at"] == "2026-11-25T14:55:00Z"
    assert without_tick_records["lastTick"]["outcome"] is None
    json.dumps(report)  # the gateway can return it as is


def test_status_command_prefers_the_gateway_and_falls_back_to_the_database(run_many, db: Database, user_id) -> None:
    seed_activity(db, user_id)
    with fake_gateway() as url:
        remote, local, forced_local = run_many(
            (("status",), {"extra_env": {"GATEWAY_URL": url, "STATUS_TOKEN": STATUS_TOKEN}}),
            (("status",), {"extra_env": {"GATEWAY_URL": f"http://127.0.0.1:{free_port()}", "STATUS_TOKEN": STATUS_TOKEN}}),
            (("status", "--local", "--json"), {"extra_env": {"GATEWAY_URL": url, "STATUS_TOKEN": STATUS_TOKEN}}),
        )
    assert remote.returncode == 0, remote.stderr
    assert f"(from gateway {url})" in remote.stdout and "ACTIVE 7, PAUSED 1" in remote.stdout

    assert local.returncode == 0, local.stderr
    assert "(from database)" in local.stdout and "bots: ACTIVE 2, PAUSED 1" in local.stdout
    assert re.search(r"Holder\s+BTCUSDT\s+LONG\s+0\.01\s+60,000\.00\s+15\.50\s+25\.83", local.stdout)
    assert re.search(r"ANALYSIS \d+, ERROR \d+, CRITICAL \d+", local.stdout)
    assert json.loads(forced_local.stdout)["botsByStatus"] == {"ACTIVE": 2, "PAUSED": 1}
