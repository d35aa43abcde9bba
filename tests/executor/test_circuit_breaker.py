"""The fleet circuit breaker's exchange-error trigger: distinct failing accounts, shared in MongoDB, one seam.

It trips when many accounts fail inside the window and never on one account failing again and again; the trip
is one document every replica reads (with its event, its CRITICAL TradeLog and its metrics); it closes on its
own after the cool-down. The last tests drive real cycles against the fake Binance through the executor."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from tradebot.v1 import executor_pb2_grpc

from services.common import metrics
from services.common.circuit_breaker import BreakerSettings, BreakerTrips
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from services.common.grpc_server import start_server
from services.common.settings import SettingsError
from services.common.trading_controls import (
    BREAKER_ID,
    COLLECTION,
    EVENTS_COLLECTION,
    controls_for,
)
from services.executor.admin import store_connection_async
from services.executor.binance.errors import UnknownOutcome
from services.executor.brokers.base import AccountNotReady
from services.executor.exchange_failures import (
    ExchangeFailureEvidence,
    FailureReportingBroker,
    exchange_failure,
)
from services.executor.server import ExecutorApp
from services.executor.settings import ExecutorSettings
from tests.executor.builders import request
from tests.executor.conftest import CycleClient, FakeMarket
from tests.fakes.binance_futures import FakeBinanceFutures

SETTINGS = BreakerSettings(failing_accounts=3, window_seconds=60, cooldown_seconds=900)
BINANCE_503 = UnknownOutcome("Binance could not answer account read (HTTP 503, code -1001: Internal error)")


def test_only_exchange_side_failures_are_evidence() -> None:
    assert exchange_failure(BINANCE_503) == "no_answer"
    assert exchange_failure(Unavailable("Binance is unreachable for account read (connection failed)")) == "unreachable"
    banned = ResourceExhausted("Binance rate limit hit during x (code -1003: Way too many requests; IP(1.2.3.4) "
                               "banned until 1790000000000.)")
    assert exchange_failure(banned) == "ip_banned"
    assert exchange_failure(ResourceExhausted("Binance paused after an IP ban (418) on x: not sent")) == "ip_banned"
    # Ours, or the account's own: never evidence against the exchange.
    assert exchange_failure(ResourceExhausted("Binance weight budget spent (...): not sent")) is None
    assert exchange_failure(AccountNotReady("account being brought up")) is None
    assert exchange_failure(FailedPrecondition("margin is insufficient")) is None
    assert exchange_failure(InvalidArgument("Binance rejected the order")) is None


def test_settings_come_from_the_environment_and_one_account_can_never_trip_it() -> None:
    assert BreakerSettings.from_env({}) == BreakerSettings()
    custom = BreakerSettings.from_env({"BREAKER_FAILING_ACCOUNTS": "8", "BREAKER_WINDOW_SECONDS": "30",
                                       "BREAKER_COOLDOWN_SECONDS": "120", "BREAKER_FLASH_MOVE": "0.2",
                                       "BREAKER_FLASH_MAX_INTERVAL": "15m"})
    assert custom == BreakerSettings(8, 30.0, 120.0, 0.2, "15m")
    with pytest.raises(SettingsError, match="BREAKER_FAILING_ACCOUNTS"):
        BreakerSettings.from_env({"BREAKER_FAILING_ACCOUNTS": "1"})
    with pytest.raises(SettingsError, match="BREAKER_FLASH_MAX_INTERVAL"):
        BreakerSettings.from_env({"BREAKER_FLASH_MAX_INTERVAL": "1M"})


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _evidence(db, clock: _Clock, breaker_open: bool = False) -> ExchangeFailureEvidence:
    trips = BreakerTrips(db, SETTINGS, "executor@test", clock=clock)
    return ExchangeFailureEvidence(db, trips, lambda: breaker_open, clock=clock)


async def test_one_account_failing_again_and_again_never_trips_it(db) -> None:
    evidence = _evidence(db, _Clock())
    for _ in range(20):
        evidence.report("connection-a", BINANCE_503)
    await evidence.settled()
    assert await db[COLLECTION].find_one({"_id": BREAKER_ID}) is None
    assert await db.breakerevidence.count_documents({}) == 1


async def test_distinct_accounts_failing_inside_the_window_trip_it_once(db, caplog) -> None:
    clock = _Clock()
    evidence = _evidence(db, clock)
    trips_before = metrics.CIRCUIT_BREAKER_TRIPS_TOTAL.labels(cause="exchange_errors")._value.get()
    evidence.report("connection-a", BINANCE_503)
    evidence.report("connection-b", BINANCE_503)
    await evidence.settled()
    assert await db[COLLECTION].find_one({"_id": BREAKER_ID}) is None   # two of three

    evidence.report("connection-c", Unavailable("Binance is unreachable for account read (connection failed)"))
    await evidence.settled()

    breaker = await db[COLLECTION].find_one({"_id": BREAKER_ID})
    assert breaker["cause"] == "exchange_errors" and breaker["by"] == "executor@test"
    assert breaker["until"] == clock.now + timedelta(seconds=900)
    assert breaker["evidence"]["failingAccounts"] == 3 and breaker["evidence"]["threshold"] == 3
    assert {sample["account"] for sample in breaker["evidence"]["samples"]} == {"connection-a", "connection-b",
                                                                                "connection-c"}
    assert "failed for 3 accounts within 60 s" in breaker["reason"]
    assert metrics.CIRCUIT_BREAKER_TRIPS_TOTAL.labels(cause="exchange_errors")._value.get() == trips_before + 1
    assert metrics.CIRCUIT_BREAKER_OPEN._value.get() == 1
    [event] = await db[EVENTS_COLLECTION].find({}).to_list()
    [trade_log] = await db.tradelogs.find({}).to_list()
    assert event["_id"] == trade_log["_id"] and event["notifiedAt"] is None
    assert (trade_log["logType"], trade_log["severity"], trade_log["action"]) == ("SAFETY", "CRITICAL",
                                                                                 "CIRCUIT_BREAKER_TRIPPED")
    assert trade_log["userId"] is None and trade_log["botInstanceId"] is None
    critical = [record for record in caplog.records if record.levelname == "CRITICAL"]
    assert critical and critical[0].evidence["failingAccounts"] == 3
    assert await db.breakerevidence.count_documents({}) == 0   # the next window starts afresh

    # More failures while it is open trip nothing more: one record, one event.
    for account in ("connection-d", "connection-e", "connection-f"):
        evidence.report(account, BINANCE_503)
    await evidence.settled()
    assert await db[EVENTS_COLLECTION].count_documents({}) == 1


async def test_failures_older_than_the_window_do_not_count(db) -> None:
    clock = _Clock()
    evidence = _evidence(db, clock)
    evidence.report("connection-a", BINANCE_503)
    evidence.report("connection-b", BINANCE_503)
    await evidence.settled()
    clock.now += timedelta(seconds=61)
    evidence.report("connection-c", BINANCE_503)
    await evidence.settled()
    assert await db[COLLECTION].find_one({"_id": BREAKER_ID}) is None


async def test_a_second_process_finding_it_open_records_no_second_trip(db) -> None:
    clock = _Clock()
    first = BreakerTrips(db, SETTINGS, "executor-1", clock=clock)
    second = BreakerTrips(db, SETTINGS, "executor-2", clock=clock)
    assert await first.trip("exchange_errors", "many accounts failed", {"failingAccounts": 3})
    assert not await second.trip("flash_crash", "BTCUSDT moved 12%", {})
    assert (await db[COLLECTION].find_one({"_id": BREAKER_ID}))["by"] == "executor-1"
    assert await db[EVENTS_COLLECTION].count_documents({}) == 1

    clock.now += timedelta(seconds=901)   # the cool-down is over: it may trip again
    assert await second.trip("flash_crash", "BTCUSDT moved 12%", {})
    assert await db[EVENTS_COLLECTION].count_documents({}) == 2


async def test_the_cool_down_ends_on_its_own(db) -> None:
    clock = _Clock()
    await BreakerTrips(db, SETTINGS, "executor@test", clock=clock).trip("exchange_errors", "many failed", {})
    documents = await db[COLLECTION].find({}).to_list()
    assert controls_for(documents, "user", clock.now + timedelta(seconds=899)).entries_stopped.startswith(
        "circuit breaker open: many failed")
    assert controls_for(documents, "user", clock.now + timedelta(seconds=900)).entries_stopped == ""


async def test_the_broker_seam_reports_the_account_and_raises_as_before(db) -> None:
    class FailingBroker:
        async def account(self):
            raise BINANCE_503

        async def position(self, symbol):
            raise FailedPrecondition("margin is insufficient")

    evidence = _evidence(db, _Clock())
    broker = FailureReportingBroker(FailingBroker(), "connection-a", evidence)  # type: ignore[arg-type]
    with pytest.raises(UnknownOutcome):
        await broker.account()
    with pytest.raises(FailedPrecondition):
        await broker.position("BTCUSDT")
    await evidence.settled()
    [row] = await db.breakerevidence.find({}).to_list()
    assert row["_id"] == "connection-a" and row["failure"] == "no_answer"


# --- through the executor: live accounts on the fake Binance -------------------------------------------------

LIVE_SECRET = f"live-secret-{uuid.uuid4().hex}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(api_key="live-key-0000", api_secret=LIVE_SECRET) as server:
        yield server


class _ExecutorOnFake(CycleClient):
    def __init__(self, stub, db, market: FakeMarket, app: ExecutorApp) -> None:
        super().__init__(stub, db, market)
        self.app = app


@pytest.fixture
async def executor_on_fake(fake, mongo_uri, mongo_db_name, fernet_key, db) -> AsyncIterator[_ExecutorOnFake]:
    """One account read per cycle (no user-data streams), so an exchange failure reaches each account's cycle."""
    settings = ExecutorSettings.from_env({
        "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name, "CREDENTIALS_KEYS": fernet_key,
        "BINANCE_FUTURES_TESTNET_URL": fake.url, "BINANCE_FUTURES_URL": "http://127.0.0.1:9",
        "BINANCE_SPOT_URL": fake.url, "BINANCE_USER_STREAMS": "false",
    })
    market = FakeMarket()
    app = ExecutorApp(replace(settings, breaker=SETTINGS), market=market)
    service = await start_server([app.binding()], port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield _ExecutorOnFake(executor_pb2_grpc.ExecutorStub(channel), db, market, app)
    finally:
        await channel.close()
        await service.stop(0)
        await app.close()


async def _live_users(fake, db, fernet_key: str, count: int) -> list[str]:
    users = []
    for index in range(count):
        key = f"live-key-{index:04d}"
        if key not in fake.accounts:
            fake.add_account(key, LIVE_SECRET)
        user_id = str(ObjectId())
        await store_connection_async(db, user_id, "testnet", key, LIVE_SECRET, Fernet(fernet_key.encode()))
        users.append(user_id)
    return users


async def _cycle(client, user_id: str, tick: str):
    try:
        return await client.run_cycle(request(user_id=user_id, tick_id=tick, bot_instance_id=str(ObjectId())))
    except grpc.aio.AioRpcError as error:
        return error


async def test_the_exchange_failing_for_many_accounts_pauses_everyones_entries(executor_on_fake, fake, db,
                                                                               fernet_key) -> None:
    failing = await _live_users(fake, db, fernet_key, 3)
    fake.fail_next("GET", "/fapi/v3/account", status=503, code=-1001, times=1000,
                   msg="Internal error; unable to process your request. Please try again.")
    answers = await asyncio.gather(*(_cycle(executor_on_fake, user, "t1") for user in failing))
    assert all(isinstance(answer, grpc.aio.AioRpcError) and answer.code() == grpc.StatusCode.UNAVAILABLE
               for answer in answers)
    await executor_on_fake.app.exchange_failures.settled()
    breaker = await db[COLLECTION].find_one({"_id": BREAKER_ID})
    assert breaker is not None and breaker["evidence"]["failingAccounts"] == 3

    fake.faults.clear()   # the exchange answers again; the breaker still holds entries for its cool-down
    [healthy] = await _live_users(fake, db, fernet_key, 1)
    reply = await _cycle(executor_on_fake, healthy, "t2")
    assert not reply.order.placed and reply.entries_stopped.startswith("circuit breaker open: the exchange failed")


async def test_one_bad_account_does_not_trip_it(executor_on_fake, fake, db, fernet_key) -> None:
    [bad] = await _live_users(fake, db, fernet_key, 1)
    fake.fail_next("GET", "/fapi/v3/account", status=503, code=-1001, times=1000, msg="Internal error")
    for tick in range(5):
        answer = await _cycle(executor_on_fake, bad, f"t{tick}")
        assert isinstance(answer, grpc.aio.AioRpcError)
    await executor_on_fake.app.exchange_failures.settled()
    assert await db[COLLECTION].find_one({"_id": BREAKER_ID}) is None

    fake.faults.clear()
    reply = await _cycle(executor_on_fake, bad, "t9")
    assert reply.order.placed and reply.entries_stopped == ""
