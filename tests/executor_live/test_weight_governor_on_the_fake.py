"""The weight governor against the enforcing fake: a 429 silences this process until its Retry-After, a 418
until the ban ends, and an order refused with either is a refusal (never looked up)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from services.common.errors import ResourceExhausted
from services.common.server_clock import server_clock
from services.common.weight_governor import GovernorSettings, WeightGovernor, caller_deadline, governor_for
from services.executor.binance.broker import BinanceFuturesBroker, create_binance_broker
from services.executor.brokers.base import EntryOrder
from tests.fakes.binance_futures import FakeBinanceFutures
from tests.fakes.binance_limits import FakeClock

START = datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC).timestamp()   # 5 s into a minute


class Setup:
    def __init__(self, fake: FakeBinanceFutures, broker: BinanceFuturesBroker, governor: WeightGovernor,
                 clock: FakeClock, alarms: list[str]) -> None:
        self.fake, self.broker, self.governor, self.clock, self.alarms = fake, broker, governor, clock, alarms

    def advance(self, seconds: float) -> None:
        """Time passes on the exchange; the process follows it through its measured clock offset (as a
        resync would measure it, without spending a request on it here)."""
        self.clock.advance(seconds)
        server_clock(urlsplit(self.fake.url).netloc).offset_ms = int((self.clock.now() - time.time()) * 1000)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    clock = FakeClock(start=START)
    api_key, api_secret = f"key{uuid.uuid4().hex}", f"secret{uuid.uuid4().hex}"
    async with FakeBinanceFutures(api_key=api_key, api_secret=api_secret, clock=clock) as fake:
        governor = governor_for(urlsplit(fake.url).netloc, settings=GovernorSettings(max_wait_s=0))
        alarms: list[str] = []
        governor.alarm = lambda text, seconds: alarms.append(text)
        broker = await create_binance_broker(api_key=api_key, api_secret=api_secret, futures_url=fake.url,
                                             spot_url=fake.url)
        ready = Setup(fake, broker, governor, clock, alarms)
        ready.advance(0)
        try:
            yield ready
        finally:
            await broker.close()


def entry(client_id: str = "tb-gov-E", *, first_attempt: bool = False) -> EntryOrder:
    return EntryOrder("BTCUSDT", "LONG", Decimal("0.010"), client_id, Decimal("50000"), first_attempt=first_attempt)


async def test_the_exchanges_header_is_seen_and_nothing_is_sent_past_the_limit(setup: Setup) -> None:
    fake, broker = setup.fake, setup.broker
    await broker.account()
    fake.pool.other_clients_weight = 2270   # other processes on the IP spent most of the minute
    await broker.position("BTCUSDT")        # its answer's header tells the governor (5 + 2270 + ...)
    sent = fake.pool.requests
    with pytest.raises(ResourceExhausted, match="weight budget spent"):
        await broker.position("BTCUSDT")    # another 5 would pass 95 % of 2,400: not sent
    assert fake.pool.requests == sent and fake.pool.answered_429 == 0


async def test_an_entry_and_its_stop_go_out_at_once_when_other_processes_spent_the_ips_minute(setup: Setup) -> None:
    """Orders weigh 0 on the IP: with the minute spent by other processes, an entry, its stop-loss and its
    take-profit go out at once. The reads that only inform them (the fill's fee, the stops already working)
    are skipped rather than waited for: a stop must not wait up to a minute for the next one."""
    fake, broker, governor = setup.fake, setup.broker, setup.governor
    await broker.account()
    fake.pool.other_clients_weight = 2300   # past our plan for the IP (95 % of 2,400), short of Binance's limit
    await broker.position("BTCUSDT")        # its answer's header tells the governor
    assert not governor.has_room(1) and governor.has_room(0)

    async def no_waiting(seconds: float) -> None:
        raise AssertionError(f"a request waited {seconds:.0f} s for weight before the stop-loss")

    governor._sleep = no_waiting   # a wait would fail the test rather than pass the minute
    with caller_deadline(time.monotonic() + 60, margin_s=0):   # a protected entry's deadline: waits would fit
        fill = await broker.open_position(entry(first_attempt=True))
        protection = await broker.protect("BTCUSDT", "LONG", Decimal("49000"), Decimal("52000"),
                                          "tb-gov-SL", "tb-gov-TP")
    assert fill.quantity == Decimal("0.010") and fake.position("BTCUSDT").amount == Decimal("0.010")
    assert (protection.stop_loss_id, protection.take_profit_id) == ("tb-gov-SL", "tb-gov-TP")
    assert fake.pool.answered_429 == 0


async def test_after_a_429_nothing_reaches_binance_until_its_retry_after(setup: Setup) -> None:
    fake, broker, clock = setup.fake, setup.broker, setup.clock
    await broker.account()
    fake.pool.other_clients_weight = 2398   # spent by another replica after our last answer
    with pytest.raises(ResourceExhausted, match="rate limit"):
        await broker.position("BTCUSDT")    # the one request that learns it: 429, Retry-After to the minute end
    assert fake.pool.answered_429 == 1 and setup.governor.stats.answered_429 == 1
    sent = fake.pool.requests

    for moment in (1, 20, 50):               # until the minute ends, every call is refused at home
        setup.advance(moment - (clock.now() - START))
        for call in (broker.account, lambda: broker.position("BTCUSDT"), lambda: broker.open_position(entry())):
            with pytest.raises(ResourceExhausted):
                await call()
    assert fake.pool.requests == sent       # zero requests between the 429 and its Retry-After
    assert fake.pool.sent_after_429 == 0 and fake.pool.answered_418 == 0
    assert fake.orders_sent() == []

    setup.advance(60 - (clock.now() - START) + 5 + 1)   # past Retry-After, a new minute
    fake.pool.other_clients_weight = 0
    assert (await broker.account()).wallet_balance == Decimal("10000")
    assert fake.pool.answered_418 == 0


async def test_a_418_silences_the_host_until_the_ban_ends_and_raises_the_alarm(setup: Setup) -> None:
    fake, broker, clock = setup.fake, setup.broker, setup.clock
    banned_until = int((clock.now() + 300) * 1000)
    fake.fail_next("GET", "/fapi/v3/account", status=418, code=-1003,
                   msg=f"Way too many requests; IP(127.0.0.1) banned until {banned_until}.")
    with pytest.raises(ResourceExhausted, match=r"IP ban \(418\)"):   # the gateway's CRITICAL EXCHANGE_BANNED
        await broker.account()
    assert setup.alarms and "banned" in setup.alarms[0]
    sent = fake.pool.requests
    setup.advance(299)
    with pytest.raises(ResourceExhausted, match="418"):
        await broker.position("BTCUSDT")
    assert fake.pool.requests == sent
    setup.advance(2)
    await broker.position("BTCUSDT")
    assert fake.pool.requests > sent


@pytest.mark.parametrize("status", [429, 418])
async def test_an_order_refused_with_a_rate_limit_is_not_looked_up(setup: Setup, status: int) -> None:
    fake, broker = setup.fake, setup.broker
    fake.fail_next("POST", "/fapi/v1/order", status=status, code=-1003, msg="Too many requests",
                   headers={"Retry-After": "30"})
    with pytest.raises(ResourceExhausted):
        await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.010"), "tb-gov-E", Decimal("50000"),
                                              first_attempt=True))
    assert [r.status for r in fake.orders_sent()] == [status]
    assert fake.reads("/fapi/v1/order") == []   # Binance did not execute it: nothing to resolve
    assert fake.position("BTCUSDT").amount == 0
