"""MongoDB down when a tick starts (503 + Retry-After) and dying during the final writes (reported, leases bounded).

The database here is its own embedded MongoDB on SQLite, so it can be killed and brought back with its data.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from services.devstack.processes import free_port, start_mongo
from tests.reliability.ledger import LEDGER
from tests.reliability.support import HungListener, call, spawn_gateway

pytestmark = pytest.mark.e2e

DEADLINE = 5.0
LEASE = 5.0


def test_database_down_at_start_is_503_and_dying_mid_tick_is_reported_with_bounded_leases(rstack, tmp_path):
    port = free_port()
    path = tmp_path / "mongo.sqlite"
    mongo, uri = start_mongo("sqlite", path=path, port=port)
    client: MongoClient = MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    db = client[rstack.stack.config.mongodb_db]
    with HungListener() as hung_strategy:
        # Analyze hangs, so the tick is still running when the database dies under it.
        gateway, url = spawn_gateway(rstack.stack.config, "gateway-mongo", {
            "MONGODB_URI": uri, "STRATEGY_ADDR": hung_strategy.address, "TICK_DEADLINE_SECONDS": str(DEADLINE),
            "LEASE_SECONDS": str(LEASE), "MONGODB_TIMEOUT_MS": "300",
        })  # fmt: skip
        rstack.extra_processes += [mongo, gateway]
        try:
            user_id, _ = rstack.add_user()
            bot = rstack.add_bot(user_id)
            db.botinstances.insert_one(rstack.bot(bot))

            # 1. Down before the tick: 503 with Retry-After, nothing claimed.
            mongo.kill()
            LEDGER.fault("MongoDB killed before a tick")
            response, took = call(url, rstack.cron_secret)
            assert response.status_code == 503 and took < DEADLINE, (response.text, took)
            assert int(response.headers["Retry-After"]) > 0
            body = response.json()
            assert (body["success"], body["error"]) == (False, "Database unavailable"), body

            # 2. Dies during the tick: bounded retries, the error in the response and in the log, before the deadline.
            mongo, uri = start_mongo("sqlite", path=path, port=port)
            rstack.extra_processes.append(mongo)
            claimed_before = datetime.now(UTC)
            killer = _kill_when_claimed(db, bot, mongo, gateway)
            response, took = call(url, rstack.cron_secret)
            killer.join()
            LEDGER.fault("MongoDB killed between the claim and the final writes")
            assert response.status_code == 200 and took < DEADLINE, (response.text, took)
            body = response.json()
            assert body["success"] is False and body["error"].startswith("Results could not be saved"), body
            assert [result["botInstanceId"] for result in body["results"]] == [str(bot)]
            gateway.wait_for_line("writing tick results failed", timeout=5)  # the error is in the log too

            # 3. Back up: the lease that could not be released is bounded by LEASE_SECONDS, then reclaimed.
            mongo, uri = start_mongo("sqlite", path=path, port=port)
            rstack.extra_processes.append(mongo)
            stored = db.botinstances.find_one({"_id": bot})
            assert stored["lockOwner"], stored
            assert stored["lockedUntil"] <= claimed_before + timedelta(seconds=LEASE + 1), stored
            time.sleep(max(0.0, (stored["lockedUntil"] - datetime.now(UTC)).total_seconds()) + 0.2)
            # The gateway's driver rediscovers the restarted server on its next check; with a 300 ms
            # server-selection timeout on a loaded machine the first call may still be a 503 with
            # Retry-After, which Upstash retries: so do we, a few times.
            for _ in range(5):
                response, took = call(url, rstack.cron_secret)
                if response.status_code != 503:
                    break
                time.sleep(0.5)
            body = response.json()
            assert response.status_code == 200 and body["success"] is True, body
            [result] = body["results"]
            assert result["status"] in ("failed", "skipped") and "in progress" not in (result["error"] or ""), result
            assert "lockOwner" not in db.botinstances.find_one({"_id": bot})
            LEDGER.writes(1, 0)
        finally:
            client.close()
            gateway.stop()
            mongo.stop()


def _kill_when_claimed(db, bot, mongo, gateway):
    import threading

    def kill() -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                if db.botinstances.find_one({"_id": bot, "lockOwner": {"$exists": True}}):
                    # Past the claim's read-back (a death inside the claim is a 503, case 1) and before
                    # the writes: the gateway logs its weight plan right after reading the claimed bots
                    # back, with no database work until the writes (a fixed sleep raced a loaded machine).
                    gateway.wait_for_line(r"weight plan", timeout=DEADLINE)
                    mongo.kill()
                    return
            except Exception:  # noqa: BLE001 (the database is the thing being broken)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread
