"""The weight governor on its own: reservation, the exchange's header, waiting or refusing, 429 and 418."""

from __future__ import annotations

import asyncio
import re

import pytest

from services.common.errors import ResourceExhausted
from services.common.weight_governor import (
    IP_BAN_WORDS,
    GovernorSettings,
    Priority,
    WeightGovernor,
    caller_deadline,
    priority_var,
    waiting_at_most,
)


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def governor(clock: Clock, **settings: float) -> WeightGovernor:
    return WeightGovernor(GovernorSettings(**settings), clock=clock)  # type: ignore[arg-type]


async def test_reserves_before_sending_and_refuses_past_the_process_share() -> None:
    clock = Clock(1_800_000_000.0 + 45)          # 15 s before the minute rolls over
    gov = governor(clock, limit_1m=100, share=0.5, max_wait_s=1.0)
    for _ in range(5):
        ticket = await gov.acquire(10, "GET /fapi/v3/account")
        gov.settle(ticket, 200, {"X-MBX-USED-WEIGHT-1M": str(gov.own_used())})
    assert gov.own_used() == 50
    with pytest.raises(ResourceExhausted) as refused:
        await gov.acquire(1, "GET /fapi/v1/time")
    assert 15 <= refused.value.retry_after <= 16   # until the next minute (plus a little spread)
    assert gov.stats.refused == 1
    clock.now += 15
    ticket = await gov.acquire(10, "GET /fapi/v3/account")   # a new minute: room again
    assert gov.own_used() == 10 and ticket.weight == 10


async def test_the_exchange_header_counts_other_processes_and_is_never_lowered() -> None:
    clock = Clock(1_800_000_000.0)
    gov = governor(clock, limit_1m=2400, share=0.8, ip_headroom=0.95)   # process 1920, IP 2280
    ticket = await gov.acquire(5, "GET /fapi/v3/account")
    gov.settle(ticket, 200, {"X-MBX-USED-WEIGHT-1M": "2270"})   # other replicas spent most of the minute
    assert gov.ip_used() == 2270
    assert gov.has_room(10) and not gov.has_room(11)
    ticket = await gov.acquire(5, "GET /fapi/v1/userTrades")
    gov.settle(ticket, 200, {"X-MBX-USED-WEIGHT-1M": "12"})    # a stale, lower report does not free anything
    assert gov.ip_used() == 2270


async def test_orders_weigh_nothing_on_the_ip_and_pass_when_other_processes_spent_the_minute() -> None:
    """A stop-loss, a take-profit or a close must not wait a minute for weight it does not use."""
    clock = Clock(1_800_000_000.0)
    gov = governor(clock, limit_1m=2400, share=0.8, ip_headroom=0.95, max_wait_s=0)
    ticket = await gov.acquire(5, "GET /fapi/v3/account")
    gov.settle(ticket, 200, {"X-MBX-USED-WEIGHT-1M": "2390"})   # other replicas are past our IP cap (2280)
    with pytest.raises(ResourceExhausted, match="budget spent"):
        await gov.acquire(1, "GET /fapi/v1/openAlgoOrders")   # reads still wait for the next minute
    for priority in Priority:
        order = await gov.acquire(0, "POST /fapi/v1/algoOrder", priority=priority)
        assert order.weight == 0
    assert gov.ip_used() == 2390


async def test_a_waiting_caller_is_served_in_the_next_minute_within_its_deadline() -> None:
    clock = Clock(1_800_000_000.0 + 58)   # 2 s to the next minute

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    gov = WeightGovernor(GovernorSettings(limit_1m=10, share=1.0, ip_headroom=1.0), clock=clock,
                         monotonic=clock, sleep=sleep)
    ticket = await gov.acquire(10, "GET /fapi/v1/klines")
    gov.settle(ticket, 200, {})
    with caller_deadline(clock.now + 5, margin_s=0):
        await gov.acquire(5, "GET /fapi/v1/klines")
    assert gov.stats.waited == 1 and gov.own_used() == 5
    assert clock.now >= 1_800_000_000.0 + 60


async def test_waits_are_bounded_by_the_callers_deadline() -> None:
    clock = Clock(1_800_000_000.0 + 1)   # 59 s to the next minute
    gov = governor(clock, limit_1m=10, share=1.0, ip_headroom=1.0, max_wait_s=120)
    ticket = await gov.acquire(10, "GET /fapi/v1/income")
    gov.settle(ticket, 200, {})
    with waiting_at_most(2.0), pytest.raises(ResourceExhausted, match="weight budget spent"):
        await gov.acquire(1, "GET /fapi/v1/order")


async def test_background_work_leaves_room_for_the_tick() -> None:
    clock = Clock(1_800_000_000.0)
    gov = governor(clock, limit_1m=100, share=1.0, ip_headroom=1.0, background_share=0.5, max_wait_s=0)
    ticket = await gov.acquire(50, "GET /fapi/v1/userTrades", priority=Priority.BACKGROUND)
    gov.settle(ticket, 200, {})
    with pytest.raises(ResourceExhausted):
        await gov.acquire(1, "GET /fapi/v1/userTrades", priority=Priority.BACKGROUND)
    await gov.acquire(50, "GET /fapi/v3/account")   # the tick still has its half


async def test_bringing_accounts_up_stops_first_so_entries_and_their_pnl_reads_find_room() -> None:
    clock = Clock(1_800_000_000.0)
    gov = governor(clock, limit_1m=100, share=1.0, ip_headroom=1.0, background_share=0.75, bring_up_share=0.6,
                   max_wait_s=0)
    with pytest.raises(ResourceExhausted):   # thousands of snapshots queued: they fill 60 of 100, no more
        for _ in range(100):
            gov.settle(await gov.acquire(5, "GET /fapi/v3/account", priority=Priority.BRING_UP), 200, {})
    assert gov.own_used() == 60
    token = priority_var.set(Priority.BACKGROUND)   # today's PnL for an entry: its own band above
    try:
        gov.settle(await gov.acquire(5, "GET /fapi/v1/userTrades"), 200, {})
    finally:
        priority_var.reset(token)
    gov.settle(await gov.acquire(1, "POST /fapi/v1/order"), 200, {})   # and the tick's orders above that
    assert gov.own_used() == 66


async def test_after_a_429_nothing_is_admitted_until_retry_after() -> None:
    clock = Clock(1_800_000_000.0)
    gov = governor(clock, max_wait_s=0)
    ticket = await gov.acquire(1, "GET /fapi/v1/order")
    gov.settle(ticket, 429, {"Retry-After": "30"}, "Too many requests")
    assert gov.stats.answered_429 == 1
    for seconds in (0, 10, 29.5):
        clock.now = 1_800_000_000.0 + seconds
        with pytest.raises(ResourceExhausted, match="429"):
            await gov.acquire(0, "POST /fapi/v1/order")   # even weightless orders wait
    clock.now = 1_800_000_000.0 + 31
    await gov.acquire(1, "GET /fapi/v1/order")


async def test_a_418_silences_the_host_until_the_ban_ends_and_raises_the_alarm() -> None:
    clock = Clock(1_800_000_000.0)
    alarms: list[tuple[str, float]] = []
    gov = WeightGovernor(GovernorSettings(max_wait_s=0), clock=clock, alarm=lambda text, s: alarms.append((text, s)))
    ticket = await gov.acquire(1, "GET /fapi/v1/time")
    until_ms = int((clock.now + 300) * 1000)
    gov.settle(ticket, 418, {}, f"Way too many requests; IP(1.2.3.4) banned until {until_ms}.")
    assert gov.stats.answered_418 == 1 and alarms and alarms[0][1] == pytest.approx(300)
    clock.now += 299
    with pytest.raises(ResourceExhausted, match=re.escape(IP_BAN_WORDS)):   # the gateway's CRITICAL EXCHANGE_BANNED
        await gov.acquire(0, "POST /fapi/v1/algoOrder")   # weightless orders wait for the ban's end too
    clock.now += 2
    await gov.acquire(1, "GET /fapi/v1/time")


async def test_concurrent_callers_never_overbook_the_minute() -> None:
    clock = Clock(1_800_000_000.0)
    gov = governor(clock, limit_1m=100, share=1.0, ip_headroom=1.0, max_wait_s=0)

    async def one() -> bool:
        try:
            ticket = await gov.acquire(7, "GET /fapi/v1/userTrades")
        except ResourceExhausted:
            return False
        await asyncio.sleep(0)
        gov.settle(ticket, 200, {})
        return True

    admitted = sum(await asyncio.gather(*(one() for _ in range(40))))
    assert admitted == 100 // 7 and gov.own_used() == admitted * 7
