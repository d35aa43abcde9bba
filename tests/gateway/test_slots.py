"""Executor slots: bounded, and bots with open positions are served first when contended."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.slots import PrioritySlots
from tests.gateway.conftest import AUTH


async def test_slots_bound_concurrency_and_serve_priority_first():
    slots = PrioritySlots(2)
    running = 0
    peak = 0
    order: list[str] = []
    gate = asyncio.Event()

    async def worker(name: str, priority: int) -> None:
        nonlocal running, peak
        async with slots.slot(priority):
            running += 1
            peak = max(peak, running)
            order.append(name)
            await gate.wait()
            running -= 1

    tasks = [asyncio.create_task(worker(f"entry{i}", 1)) for i in range(4)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(worker(f"position{i}", 0)) for i in range(2)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 2
    assert order == ["entry0", "entry1", "position0", "position1", "entry2", "entry3"]


async def test_a_cancelled_waiter_does_not_leak_its_slot():
    slots = PrioritySlots(1)
    await slots.acquire(1)
    waiter = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    await asyncio.wait_for(slots.acquire(1), 1)  # the slot came back


async def test_bots_with_open_positions_reach_the_executor_first(gateway_factory):
    position = {"symbol": "BTCUSDT", "side": "LONG", "entryPrice": 100.0, "quantity": 0.5, "leverage": 10,
                "stopLoss": 97.0, "takeProfit": 106.0, "pnl": 0.0, "pnlPercent": 0.0, "openTime": None}  # fmt: skip
    async with gateway_factory(tick_concurrency=1) as gateway:
        gate = asyncio.Event()
        gateway.fakes.executor.gate = gate
        entries = gateway.add_bots(3)
        holders = gateway.add_bots(2, currentPosition=position)
        tick = asyncio.create_task(gateway.http.get("/api/cron/run-bots", headers=AUTH))
        await asyncio.wait_for(gateway.fakes.executor.entered.wait(), 5)
        await asyncio.sleep(0.2)  # every other bot is now queued for the single slot
        gate.set()
        body = (await tick).json()
    assert body["summary"]["successful"] == 5
    called = [request.bot.bot_instance_id for request, _ in gateway.fakes.executor.calls]
    queued = called[1:]  # the first caller found the slot free
    holder_ids = {str(bot) for bot in holders}
    assert set(queued[: len(holder_ids - {called[0]})]) == holder_ids - {called[0]}
    assert {str(bot) for bot in entries} | holder_ids == set(called)
