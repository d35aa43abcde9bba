"""Final writes under a flaky database: bounded retries, nothing counted twice, failures reported."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect
from tradebot.v1 import common_pb2, executor_pb2

from tests.gateway.conftest import AUTH


@pytest.fixture
def flaky_writes(monkeypatch):
    """bulk_write/insert_many apply their writes and then lose the acknowledgement ``failures`` times."""
    state = {"failures": 0, "calls": 0}
    real_bulk_write, real_insert_many = AsyncCollection.bulk_write, AsyncCollection.insert_many

    async def bulk_write(self, requests, *args, **kwargs):
        state["calls"] += 1
        result = await real_bulk_write(self, requests, *args, **kwargs)
        if state["failures"] > 0:
            state["failures"] -= 1
            raise AutoReconnect("connection reset after the write")
        return result

    async def insert_many(self, documents, *args, **kwargs):
        state["calls"] += 1
        result = await real_insert_many(self, documents, *args, **kwargs)
        if state["failures"] > 0:
            state["failures"] -= 1
            raise AutoReconnect("connection reset after the write")
        return result

    monkeypatch.setattr(AsyncCollection, "bulk_write", bulk_write)
    monkeypatch.setattr(AsyncCollection, "insert_many", insert_many)
    return state


async def test_lost_acknowledgements_are_retried_without_double_counting(gateway, flaky_writes):
    [bot_id] = gateway.add_bots(1)
    gateway.fakes.executor.closed_trades[str(bot_id)] = [
        executor_pb2.ClosedTrade(symbol="BTCUSDT", side=common_pb2.SIDE_LONG, realized_pnl="5", close_time_ms=1)
    ]
    flaky_writes["failures"] = 2  # the bulk_write once, the insert_many once

    body = await gateway.tick()

    assert body["success"] is True
    assert flaky_writes["calls"] == 4
    statistics = gateway.bot(bot_id)["statistics"]
    assert statistics["totalTrades"] == 1 and statistics["totalProfit"] == 5.0
    assert len(gateway.logs(bot_id, logType="ANALYSIS")) == 1


async def test_writes_that_keep_failing_are_reported_in_the_response(gateway, flaky_writes):
    gateway.add_bots(2)
    flaky_writes["failures"] = 100

    response = await gateway.http.get("/api/cron/run-bots", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["error"] == "Results could not be saved: AutoReconnect"
    assert body["summary"]["successful"] == 2  # what ran is still reported
    assert flaky_writes["calls"] == 3  # bounded


async def test_a_hanging_database_cannot_hold_the_response_past_the_deadline(gateway_factory, monkeypatch):
    import asyncio
    import time

    real_bulk_write = AsyncCollection.bulk_write

    async def hanging_bulk_write(self, requests, *args, **kwargs):
        if self.name == "botinstances":
            await asyncio.sleep(60)
        return await real_bulk_write(self, requests, *args, **kwargs)

    async with gateway_factory(tick_deadline_seconds=3.0, write_reserve_seconds=1.0) as gateway:
        gateway.add_bots(1)
        monkeypatch.setattr(AsyncCollection, "bulk_write", hanging_bulk_write)
        started = time.monotonic()
        response = await gateway.http.get("/api/cron/run-bots", headers=AUTH)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert response.status_code == 200
    assert response.json()["error"] == ("Results could not be saved before the deadline (TimeoutError); "
                                        "they are still being written")


async def test_a_write_cut_off_by_the_deadline_finishes_after_the_response_and_releases_the_leases(
        gateway_factory, monkeypatch):
    # Without it the next tick found these bots "in progress" until their leases expired.
    import asyncio

    real_bulk_write = AsyncCollection.bulk_write

    async def slow_bulk_write(self, requests, *args, **kwargs):
        if self.name == "botinstances":
            await asyncio.sleep(2.5)
        return await real_bulk_write(self, requests, *args, **kwargs)

    async with gateway_factory(tick_deadline_seconds=3.0, write_reserve_seconds=1.0) as gateway:
        [bot] = gateway.add_bots(1)
        monkeypatch.setattr(AsyncCollection, "bulk_write", slow_bulk_write)
        response = await gateway.http.get("/api/cron/run-bots", headers=AUTH)
        assert response.json()["error"].startswith("Results could not be saved before the deadline")
        assert gateway.bot(bot).get("lockOwner")   # still leased when the response left
        for _ in range(50):
            if not gateway.bot(bot).get("lockOwner"):
                break
            await asyncio.sleep(0.1)
        document = gateway.bot(bot)
        assert "lockOwner" not in document and document.get("lastRunAt") is not None
        monkeypatch.setattr(AsyncCollection, "bulk_write", real_bulk_write)
        again = await gateway.tick()
        assert again["summary"]["skipped"] == 0   # the next tick serves it
