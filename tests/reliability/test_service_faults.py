"""gRPC services dying: killed in the middle of a tick, restarted between ticks."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from tests.reliability.ledger import LEDGER
from tests.reliability.support import check_one_order_each, check_results_written

pytestmark = pytest.mark.e2e


def _tradeable_bots(rstack, count: int):
    strategy, symbol, interval, _ = rstack.find_tradeable()
    connections, bots = [], []
    for _ in range(count):
        user_id, connection_id = rstack.add_user()
        connections.append(connection_id)
        bots.append(rstack.add_bot(user_id, strategy, symbol=symbol,
                                   config={"interval": interval, "confidenceThreshold": 1}))  # fmt: skip
    return connections, bots


def test_executor_killed_mid_tick_fails_its_bots_and_the_next_tick_places_no_duplicate(rstack):
    # 14 bots through 2 executor slots: the tick is still placing orders when the executor dies.
    connections, bots = _tradeable_bots(rstack, 14)
    killed = threading.Event()

    def kill_after_first_order() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if rstack.db.paperfills.count_documents({}) >= 2:
                rstack.stack.processes["executor"].kill()  # SIGKILL, with RunCycle calls in flight
                killed.set()
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_after_first_order)
    killer.start()
    started = datetime.now(UTC)
    try:
        response = rstack.tick()
    finally:
        killer.join()
    assert killed.is_set(), "the tick finished before the executor could be killed"
    LEDGER.fault("executor SIGKILLed mid-tick with RunCycle calls in flight")

    assert response.status_code == 200
    body = response.json()
    statuses = [result["status"] for result in body["results"]]
    assert len(statuses) == len(bots) and "skipped" not in statuses, body
    failed = [result for result in body["results"] if result["status"] == "failed"]
    assert failed, body
    # The kill landed mid-tick: orders had been placed (the killer waited for them) and bots were cut off;
    # those whose fill was stored before the kill are the lost-answer case the next tick must reconcile.
    assert rstack.db.paperfills.count_documents({}) >= 2
    for result in failed:
        assert result["error"].startswith("Executor failed") and "UNAVAILABLE" in result["error"], result
    check_results_written(rstack.db, body, started)
    for result in failed:
        [error_log] = [log for log in rstack.db.tradelogs.find({"logType": "ERROR"})
                       if str(log["botInstanceId"]) == result["botInstanceId"]]  # fmt: skip
        assert "UNAVAILABLE" in error_log["message"]

    rstack.stack.restart("executor")
    second_started = datetime.now(UTC)
    again = rstack.tick().json()
    assert again["summary"]["successful"] == len(bots), again
    assert all(result["hasPosition"] for result in again["results"]), again
    check_results_written(rstack.db, again, second_started)
    # A cycle cut off after its fill was stored is reconciled from the paper store, not re-ordered.
    counts = check_one_order_each(rstack.db, connections)
    assert set(counts.values()) == {1}, counts


def test_services_restarted_between_ticks_reconcile_positions_and_duplicate_nothing(rstack):
    connections, bots = _tradeable_bots(rstack, 3)
    first = rstack.tick().json()
    assert first["summary"]["successful"] == 3 and all(r["orderPlaced"] for r in first["results"]), first
    for service in ("executor", "strategy", "market"):
        rstack.stack.restart(service)
        LEDGER.fault(f"{service} restarted between ticks")
    # The gateway's copy of one position was lost (a write that never happened): the paper store is the truth.
    rstack.db.botinstances.update_one({"_id": bots[0]}, {"$set": {"currentPosition": None}})

    started = datetime.now(UTC)
    second = rstack.tick().json()

    assert second["summary"]["successful"] == 3, second
    for result in second["results"]:
        assert result["hasPosition"] is True and result["orderPlaced"] is False, result
    check_results_written(rstack.db, second, started)
    restored = rstack.bot(bots[0])["currentPosition"]
    assert restored is not None and restored["quantity"] > 0, restored
    counts = check_one_order_each(rstack.db, connections)
    assert set(counts.values()) == {1}, counts
