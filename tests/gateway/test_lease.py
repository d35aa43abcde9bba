"""Overlapping deliveries: every bot is processed by exactly one tick at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.gateway.conftest import AUTH


async def test_a_second_concurrent_tick_skips_bots_in_progress(gateway):
    bots = gateway.add_bots(3)
    gate = asyncio.Event()
    gateway.fakes.executor.gate = gate

    first = asyncio.create_task(gateway.http.get("/api/cron/run-bots", headers=AUTH))
    await asyncio.wait_for(gateway.fakes.executor.entered.wait(), 5)
    second = await gateway.tick()
    gate.set()
    first_body = (await first).json()

    assert second["summary"] == {"totalBots": 3, "successful": 0, "failed": 0, "withPositions": 0, "skipped": 3}
    assert {result["error"] for result in second["results"]} == {"in progress (claimed by another tick)"}
    assert first_body["summary"]["successful"] == 3
    # Each bot ran its cycle once between the two ticks, and no lease is left behind.
    assert sorted(request.bot.bot_instance_id for request, _ in gateway.fakes.executor.calls) == sorted(map(str, bots))
    assert gateway.db.botinstances.count_documents({"lockOwner": {"$exists": True}}) == 0
    assert gateway.db.tradelogs.count_documents({"logType": "ANALYSIS"}) == 3


async def test_an_expired_lease_is_reclaimed_and_a_live_one_respected(gateway):
    now = datetime.now(UTC)
    [crashed] = gateway.add_bots(1, lockOwner="crashed-tick", lockedUntil=now - timedelta(seconds=1))
    [running] = gateway.add_bots(1, lockOwner="running-tick", lockedUntil=now + timedelta(minutes=4))

    body = await gateway.tick()

    results = {result["botInstanceId"]: result for result in body["results"]}
    assert results[str(crashed)]["status"] == "success"
    assert results[str(running)]["status"] == "skipped"
    assert "lockOwner" not in gateway.bot(crashed)
    assert gateway.bot(running)["lockOwner"] == "running-tick"  # not ours to release


async def test_results_of_a_tick_that_lost_its_lease_are_not_written(gateway_factory):
    async with gateway_factory() as gateway:
        [bot_id] = gateway.add_bots(1)
        gate = asyncio.Event()
        gateway.fakes.executor.gate = gate
        tick = asyncio.create_task(gateway.http.get("/api/cron/run-bots", headers=AUTH))
        await asyncio.wait_for(gateway.fakes.executor.entered.wait(), 5)
        # Another tick took the bot over (this tick's lease had expired).
        gateway.db.botinstances.update_one({"_id": bot_id}, {"$set": {"lockOwner": "newer-tick"}})
        gate.set()
        await tick
    bot = gateway.bot(bot_id)
    assert bot["lockOwner"] == "newer-tick"
    assert bot["currentPosition"] is None and bot.get("lastAnalysis") is None
