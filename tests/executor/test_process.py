"""The real `python -m services.executor` process beside a real market process: reflection, health,
RunCycle over grpcurl, and requests that try to trade on what the caller says instead of what is stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo import MongoClient
from pymongo.database import Database

from services.common.bot_documents import new_bot_document
from services.executor.admin import store_connection
from tests.support.grpcurl import grpcurl
from tests.support.processes import REPO_ROOT, ManagedProcess, free_port, grpc_serving, python_module, wait_until

SECRET = "Zq8-distinctive-api-secret-0xC0FFEE"
CONFIG = {"leverage": 5, "stopLossPercent": 2, "takeProfitPercent": 4, "positionSizePercent": 10,
          "maxDailyLoss": 100, "confidenceThreshold": 70, "maxConsecutiveLosses": 3}
BUY = {"action": "ACTION_BUY", "confidence": 90}


@dataclass
class Stack:
    db: Database
    executor: str
    key: str
    user_id: ObjectId
    executor_process: ManagedProcess

    def add_bot(self, *, user_id: ObjectId | None = None, status: str = "ACTIVE", losses: int = 0,
                **fields: object) -> str:
        document = new_bot_document(user_id=user_id or self.user_id, bot_id=1, bot_name="Process bot",
                                    symbol="BTCUSDT", config=dict(CONFIG), status=status)
        document["statistics"]["consecutiveLosses"] = losses
        document.update(fields)
        return str(self.db.botinstances.insert_one(document).inserted_id)

    def run_cycle(self, request: dict) -> subprocess.CompletedProcess[str]:
        return grpcurl(self.executor, "tradebot.v1.Executor/RunCycle", data=request)

    def orders(self) -> int:
        return self.db.paperfills.count_documents({}) + self.db.paperpositions.count_documents({})


@pytest.fixture(scope="module")
def stack(mongo_uri: str) -> Iterator[Stack]:
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    name = f"test_{uuid.uuid4().hex[:12]}"
    db = client[name]
    key = Fernet.generate_key().decode()
    user_id = ObjectId()
    store_connection(db, str(user_id), "paper", "distinctive-api-key-77", SECRET, Fernet(key.encode()))
    market_port, executor_port = free_port(), free_port()
    market = ManagedProcess("market", python_module("services.market"), {"GRPC_PORT": str(market_port)})
    executor = ManagedProcess("executor", python_module("services.executor"), {
        "MONGODB_URI": mongo_uri, "MONGODB_DB": name, "CREDENTIALS_KEYS": key, "GRPC_PORT": str(executor_port),
        "MARKET_ADDR": f"127.0.0.1:{market_port}",
    })
    try:
        wait_until(lambda: grpc_serving(f"127.0.0.1:{market_port}"), timeout=30, what="market serving")
        executor.wait_for_line(r'"message": "serving"', timeout=30)
        yield Stack(db, f"127.0.0.1:{executor_port}", key, user_id, executor)
    finally:
        executor_code = executor.stop()
        market.stop()
        client.drop_database(name)
        client.close()
    assert executor_code == 0


def test_executor_process_serves_reflection_health_and_runcycle(stack: Stack):
    listed = grpcurl(stack.executor, "list")
    assert "tradebot.v1.Executor" in listed.stdout and "grpc.health.v1.Health" in listed.stdout
    health = grpcurl(stack.executor, "grpc.health.v1.Health/Check", data={"service": "tradebot.v1.Executor"})
    assert json.loads(health.stdout)["status"] == "SERVING"
    bot = stack.add_bot()
    # What the gateway sends: the bot, the tick, the signal. The rest is read from MongoDB and the market.
    reply = stack.run_cycle({"tickId": "t-1", "bot": {"botInstanceId": bot, "userId": str(stack.user_id),
                                                      "symbol": "BTCUSDT"}, "signal": BUY})
    assert reply.returncode == 0, reply.stderr
    body = json.loads(reply.stdout)
    price = Decimal(body["reference_price"])   # the market service's price, not the caller's
    assert body["order"]["placed"] is True
    # 10 % of 10,000 USDT as margin at the stored leverage 5: 5,000 notional, rounded down to the step.
    assert Decimal(body["order"]["quantity"]) == (Decimal(5000) / price).quantize(Decimal("0.001"), ROUND_DOWN)
    assert SECRET not in stack.executor_process.output() and stack.key not in stack.executor_process.output()


def _refused(stack: Stack, request: dict, code: str, *needles: str) -> None:
    before = stack.orders()
    reply = stack.run_cycle(request)
    assert reply.returncode != 0, reply.stdout
    assert f"Code: {code}" in reply.stderr, reply.stderr
    for needle in needles:
        assert needle in reply.stderr, reply.stderr
    assert stack.orders() == before   # nothing was placed


def test_a_forged_user_id_cannot_trade_another_users_bot(stack: Stack):
    victim = stack.add_bot()
    _refused(stack, {"tickId": "forged-user", "bot": {"botInstanceId": victim, "userId": str(ObjectId())},
                     "signal": BUY}, "PermissionDenied", "not the owner of this bot")


def test_a_forged_config_is_refused_not_used(stack: Stack):
    bot = stack.add_bot()
    forged = {"leverage": 20, "stopLossPercent": "2", "takeProfitPercent": "4", "positionSizePercent": "100",
              "maxDailyLoss": "100000", "confidenceThreshold": 0, "maxConsecutiveLosses": 3}
    _refused(stack, {"tickId": "forged-config", "bot": {"botInstanceId": bot}, "config": forged, "signal": BUY},
             "FailedPrecondition", "config.leverage is 20, stored 5")


def test_forged_statistics_cannot_reset_the_losing_streak(stack: Stack):
    bot = stack.add_bot(losses=3)   # the stored streak trips CONSECUTIVE_LOSSES
    _refused(stack, {"tickId": "forged-stats", "bot": {"botInstanceId": bot}, "statistics": {"consecutiveLosses": 0},
                     "signal": BUY}, "FailedPrecondition", "statistics.consecutive_losses is 0, stored 3")
    # Without the forged statistics the stored streak decides: a safety stop, no order.
    reply = stack.run_cycle({"tickId": "stored-stats", "bot": {"botInstanceId": bot}, "signal": BUY})
    body = json.loads(reply.stdout)
    assert body["safety"]["rule"] == "CONSECUTIVE_LOSSES" and not body.get("order", {}).get("placed")


def test_a_bot_that_is_not_active_or_unknown_or_held_by_another_tick_does_not_trade(stack: Stack):
    paused = stack.add_bot(status="PAUSED")
    _refused(stack, {"tickId": "paused", "bot": {"botInstanceId": paused}, "signal": BUY},
             "FailedPrecondition", "bot is PAUSED, not ACTIVE")
    _refused(stack, {"tickId": "unknown", "bot": {"botInstanceId": str(ObjectId())}, "signal": BUY},
             "NotFound", "not found")
    from datetime import UTC, datetime, timedelta
    held = stack.add_bot(lockOwner="another-tick", lockedUntil=datetime.now(UTC) + timedelta(minutes=5))
    _refused(stack, {"tickId": "this-tick", "bot": {"botInstanceId": held}, "signal": BUY},
             "Aborted", "another tick")


def test_missing_or_malformed_credentials_keys_stop_start_up_with_the_name():
    for keys, expected in ((None, "CREDENTIALS_KEYS is required"), ("not-a-key", "not a Fernet key")):
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_KEYS"}
        env["MONGODB_URI"] = "mongodb://127.0.0.1:1"
        if keys is not None:
            env["CREDENTIALS_KEYS"] = keys
        result = subprocess.run([sys.executable, "-m", "services.executor"], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and expected in result.stderr
