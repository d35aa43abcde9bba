"""The (account, symbol) lease: one holder at a time, kept while its holder works, freed soon after it dies."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.errors import Aborted
from services.executor.symbol_leases import MongoSymbolLeases


async def test_a_renewed_lease_stays_held_and_a_dead_holders_lease_is_taken_over_soon(db):
    leases = MongoSymbolLeases(db, ttl_seconds=0.6, renew_seconds=0.1)
    first = await leases.acquire("conn", "BTCUSDT", "tick-1:bot-a", wait_seconds=0)
    # Three lease lifetimes later it is still held: its holder renews it while it works.
    with pytest.raises(Aborted, match="another cycle is sending orders on BTCUSDT"):
        await leases.acquire("conn", "BTCUSDT", "tick-1:bot-b", wait_seconds=1.8)
    again = await leases.acquire("conn", "BTCUSDT", "tick-1:bot-a", wait_seconds=0)   # re-entrant for its holder
    await again.release()

    other = await leases.acquire("conn", "BTCUSDT", "tick-1:bot-c", wait_seconds=1)   # released: free at once
    other._renewing.cancel()   # noqa: SLF001 - the holder's process is killed: nobody renews or releases
    started = time.monotonic()
    taken = await leases.acquire("conn", "BTCUSDT", "tick-2:bot-a", wait_seconds=3)
    assert time.monotonic() - started < 1.5   # within about one lifetime, not minutes
    await taken.release()
    await first.release()   # a release by a holder that lost the lease takes nothing from the new one
    await asyncio.sleep(0)
