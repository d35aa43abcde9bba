"""One account read per (connection, tick): single-flight, failures not cached, own entries reserved."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from services.common.errors import Unavailable
from services.executor.account_cache import AccountCache
from services.executor.brokers.base import AccountSnapshot, ExchangePosition

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


def _long(symbol: str, quantity: str = "1") -> ExchangePosition:
    return ExchangePosition(symbol=symbol, side="LONG", quantity=D(quantity), entry_price=D("100"), mark_price=D("100"),
                            unrealized_pnl=D("0"), leverage=10, margin=D("10"))


async def test_positions_are_read_once_per_tick_and_a_changed_symbol_is_read_alone():
    cache = AccountCache()
    snapshot_reads: list[int] = []
    symbol_reads: list[str] = []

    async def read_all() -> dict[str, ExchangePosition]:
        snapshot_reads.append(1)
        await asyncio.sleep(0.01)
        return {"BTCUSDT": _long("BTCUSDT")}

    async def read_one(symbol: str) -> ExchangePosition | None:
        symbol_reads.append(symbol)
        return _long(symbol, "2")

    results = await asyncio.gather(*(cache.position("conn", "tick-1", s, read_all, read_one)
                                     for s in ("BTCUSDT", "ETHUSDT", "BTCUSDT")))
    assert results == [_long("BTCUSDT"), None, _long("BTCUSDT")] and len(snapshot_reads) == 1

    cache.mark_changed("conn", "tick-1", "ETHUSDT")   # e.g. a bot just sent an entry on ETHUSDT
    assert await cache.position("conn", "tick-1", "ETHUSDT", read_all, read_one) == _long("ETHUSDT", "2")
    assert await cache.position("conn", "tick-1", "BTCUSDT", read_all, read_one) == _long("BTCUSDT")
    assert symbol_reads == ["ETHUSDT"] and len(snapshot_reads) == 1
    await cache.position("conn", "tick-2", "ETHUSDT", read_all, read_one)   # the mark was for tick-1 only
    assert symbol_reads == ["ETHUSDT"] and len(snapshot_reads) == 2


async def test_a_failed_positions_read_raises_for_every_waiting_bot_and_is_not_kept():
    cache = AccountCache()
    attempts = 0

    async def read_all() -> dict[str, ExchangePosition]:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise Unavailable("positionRisk timed out")

    async def read_one(symbol: str) -> ExchangePosition | None:
        raise AssertionError("not expected")

    results = await asyncio.gather(*(cache.position("conn", "tick-1", "BTCUSDT", read_all, read_one) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results) and attempts == 1
    with pytest.raises(Unavailable):
        await cache.position("conn", "tick-1", "BTCUSDT", read_all, read_one)
    assert attempts == 2


async def test_cycles_of_one_symbol_take_turns_and_other_symbols_do_not_wait():
    cache = AccountCache()
    order: list[str] = []

    async def cycle(symbol: str, name: str) -> None:
        async with cache.symbol_lock("conn", symbol):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(cycle("BTCUSDT", "a"), cycle("BTCUSDT", "b"), cycle("ETHUSDT", "c"))
    assert order.index("a out") < order.index("b in")
    assert order.index("c in") < order.index("a out")


async def test_an_expired_entry_is_read_again_and_many_accounts_stay_cheap():
    cache = AccountCache(ttl_seconds=0.05)
    reads = 0

    async def read() -> AccountSnapshot:
        nonlocal reads
        reads += 1
        return SNAPSHOT

    await cache.get("conn", "tick", read)
    await cache.get("conn", "tick", read)
    assert reads == 1
    await asyncio.sleep(0.06)
    await cache.get("conn", "tick", read)   # expired: read again even before the periodic sweep
    assert reads == 2

    # A tick of 20,000 accounts: each lookup must not walk every other account's entry.
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index in range(20_000):
        await cache.get(f"account-{index}", "tick-big", read)
        cache.mark_changed(f"account-{index}", "tick-big", "BTCUSDT")
    assert loop.time() - started < 5.0   # sweeping on every call made this O(accounts²)
