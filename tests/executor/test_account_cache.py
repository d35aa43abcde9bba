"""One account read per (connection, tick): single-flight, failures not cached, own entries reserved."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from services.common.errors import Unavailable
from services.executor.account_cache import AccountCache
from services.executor.brokers.base import AccountSnapshot

SNAPSHOT = AccountSnapshot(available_balance=D("1000"), wallet_balance=D("1200"))


async def test_bots_of_one_connection_share_one_read_per_tick():
    cache = AccountCache()
    reads = 0

    async def read() -> AccountSnapshot:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return SNAPSHOT

    results = await asyncio.gather(*(cache.get("conn", "tick-1", read) for _ in range(5)))
    assert results == [SNAPSHOT] * 5 and reads == 1
    await cache.get("conn", "tick-2", read)
    await cache.get("other", "tick-1", read)
    assert reads == 3


async def test_a_failed_read_is_not_cached():
    cache = AccountCache()
    attempts = 0

    async def flaky() -> AccountSnapshot:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Unavailable("HTTP 503")
        return SNAPSHOT

    with pytest.raises(Unavailable):
        await cache.get("conn", "tick", flaky)
    assert await cache.get("conn", "tick", flaky) == SNAPSHOT


async def test_margin_committed_by_one_bot_is_taken_out_for_the_next():
    cache = AccountCache()

    async def read() -> AccountSnapshot:
        return SNAPSHOT

    await cache.get("conn", "tick", read)
    cache.reserve("conn", "tick", D("105"))
    assert (await cache.get("conn", "tick", read)).available_balance == D("895")
