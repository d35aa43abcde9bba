"""Upstash delivers at least once and runs overlap: two simultaneous deliveries, every bot once, one order each."""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime

import pytest

from tests.reliability.ledger import LEDGER
from tests.reliability.support import check_one_order_each, check_results_written

pytestmark = pytest.mark.e2e

BOTS = 6


def test_two_simultaneous_deliveries_process_every_bot_exactly_once(rstack):
    strategy, symbol, interval, _ = rstack.find_tradeable()
    connections, bots = [], []
    for _ in range(BOTS):  # one connection per bot: each may open exactly one position
        user_id, connection_id = rstack.add_user()
        connections.append(connection_id)
        bots.append(str(rstack.add_bot(user_id, strategy, symbol=symbol,
                                       config={"interval": interval, "confidenceThreshold": 1})))  # fmt: skip
    started = datetime.now(UTC)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        deliveries = [pool.submit(rstack.tick) for _ in range(2)]
        responses = [delivery.result() for delivery in deliveries]
    LEDGER.fault("duplicate delivery: two simultaneous calls of /api/cron/run-bots")

    assert [response.status_code for response in responses] == [200, 200]
    bodies = [response.json() for response in responses]
    for bot in bots:
        outcomes = [result for body in bodies for result in body["results"] if result["botInstanceId"] == bot]
        statuses = sorted(result["status"] for result in outcomes)
        assert statuses == ["skipped", "success"], outcomes
        skipped = next(result for result in outcomes if result["status"] == "skipped")
        assert "in progress" in (skipped["error"] or ""), skipped
        ran = next(result for result in outcomes if result["status"] == "success")
        assert ran["orderPlaced"] is True and ran["hasPosition"] is True, ran
    for body in bodies:
        check_results_written(rstack.db, body, started)
    counts = check_one_order_each(rstack.db, connections)
    assert set(counts.values()) == {1}, counts
    assert rstack.db.botinstances.count_documents({"lockOwner": {"$exists": True}}) == 0
