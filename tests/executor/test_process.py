"""The real `python -m services.executor` process: reflection, health, a RunCycle over grpcurl, logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bson import ObjectId
from cryptography.fernet import Fernet

from services.executor.admin import store_connection
from tests.support.grpcurl import grpcurl
from tests.support.processes import REPO_ROOT, ManagedProcess, free_port, python_module

SECRET = "Zq8-distinctive-api-secret-0xC0FFEE"


def test_executor_process_serves_reflection_health_and_runcycle(mongo_uri, mongo_client, mongo_db_name):
    key = Fernet.generate_key().decode()
    user_id = str(ObjectId())
    store_connection(mongo_client[mongo_db_name], user_id, "paper", "distinctive-api-key-77", SECRET,
                     Fernet(key.encode()))
    port = free_port()
    process = ManagedProcess("executor", python_module("services.executor"), {
        "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name, "CREDENTIALS_KEYS": key, "GRPC_PORT": str(port),
    })
    try:
        process.wait_for_line(r'"message": "serving"', timeout=30)
        address = f"127.0.0.1:{port}"
        listed = grpcurl(address, "list")
        assert "tradebot.v1.Executor" in listed.stdout and "grpc.health.v1.Health" in listed.stdout
        health = grpcurl(address, "grpc.health.v1.Health/Check", data={"service": "tradebot.v1.Executor"})
        assert json.loads(health.stdout)["status"] == "SERVING"
        reply = grpcurl(address, "tradebot.v1.Executor/RunCycle", data={
            "tickId": "t-1",
            "bot": {"botInstanceId": "b1", "userId": user_id, "symbol": "BTCUSDT"},
            "config": {"leverage": 5, "stopLossPercent": "2", "takeProfitPercent": "4",
                       "positionSizePercent": "10", "maxDailyLoss": "100", "confidenceThreshold": 70},
            "signal": {"action": "ACTION_BUY", "confidence": 90},
            "market": {"price": "50000", "filters": {"tickSize": "0.1", "stepSize": "0.001", "minQty": "0.001",
                                                      "minNotional": "100"}},
        })
        assert reply.returncode == 0, reply.stderr
        body = json.loads(reply.stdout)
        assert body["order"]["placed"] is True and body["order"]["quantity"] == "0.1"
    finally:
        assert process.stop() == 0
    assert SECRET not in process.output() and key not in process.output()
    assert '"message": "stopped"' in process.output()


def test_missing_or_malformed_credentials_keys_stop_start_up_with_the_name():
    for keys, expected in ((None, "CREDENTIALS_KEYS is required"), ("not-a-key", "not a Fernet key")):
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_KEYS"}
        env["MONGODB_URI"] = "mongodb://127.0.0.1:1"
        if keys is not None:
            env["CREDENTIALS_KEYS"] = keys
        result = subprocess.run([sys.executable, "-m", "services.executor"], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and expected in result.stderr
