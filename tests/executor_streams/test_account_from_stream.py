"""The account kept from Binance's user-data stream: events to state, no REST per tick, gaps reconciled."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from pymongo.asynchronous.database import AsyncDatabase

from services.common.errors import ResourceExhausted
from services.executor.binance.bring_up import AccountStreams
from services.executor.binance.user_stream import UserStreamHub
from services.executor.brokers.base import AccountNotReady, EntryOrder
from services.executor.brokers.factory import BrokerFactory
from services.executor.connections import ExchangeConnection
from services.executor.credentials import CredentialVault
from services.executor.exchange_failures import exchange_failure
from services.executor.settings import ExecutorSettings
from tests.executor_streams.conftest import SETTLE_S, StreamedAccount, stream_broker, until
from tests.fakes.binance_futures import FakeBinanceFutures

ACCOUNT = "/fapi/v3/account"
ALGO_OPEN = "/fapi/v1/openAlgoOrders"
POSITION_RISK = "/fapi/v3/positionRisk"


def entry(client_id: str = "tb-s1-E", quantity: str = "0.010") -> EntryOrder:
    return EntryOrder("BTCUSDT", "LONG", Decimal(quantity), client_id, Decimal("50000"), first_attempt=True)


async def opened_and_protected(account: StreamedAccount) -> None:
    broker = account.broker
    await broker.open_position(entry())
    await broker.protect("BTCUSDT", "LONG", Decimal("48500.0"), Decimal("53000.0"), "tb-s1-SL", "tb-s1-TP")
    await until(lambda: account.state.position("BTCUSDT", 20) is not None
                and len(account.state.open_algo_orders("BTCUSDT")) == 2)
    await asyncio.sleep(SETTLE_S)   # the next tick: our orders are long reported


async def test_fills_and_protective_orders_reach_the_state_and_later_reads_cost_nothing(streamed) -> None:
    fake, broker = streamed.fake, streamed.broker
    assert streamed.state.live and len(fake.reads(ACCOUNT)) == 1   # the bring-up snapshot, once
    await opened_and_protected(streamed)
    # The symbol was flat at bring-up, so stops placed before the stream began could exist unseen: its
    # conditional orders are listed once (weight 1); from then on the stream keeps them.
    await broker.protective_orders((await broker.positions())["BTCUSDT"])
    assert len(fake.reads(ALGO_OPEN)) == 1
    fake.requests.clear()

    for _ in range(3):   # three ticks' reads
        snapshot = await broker.account()
        positions = await broker.positions()
    position = positions["BTCUSDT"]
    protection = await broker.protective_orders(position)

    assert fake.requests == []   # balances, positions and stops all from the stream
    assert position.quantity == Decimal("0.010") and position.entry_price == Decimal("50000")
    assert (protection.stop_loss_id, protection.stop_loss_price) == ("tb-s1-SL", Decimal("48500.0"))
    assert (protection.take_profit_id, protection.take_profit_price) == ("tb-s1-TP", Decimal("53000.0"))
    rest_wallet = fake.default_account.wallet_balance
    assert snapshot.wallet_balance == rest_wallet                      # the entry fee, from ACCOUNT_UPDATE
    assert snapshot.available_balance <= rest_wallet - Decimal("25")   # 500 notional at 20×: never overstated


async def test_a_stop_loss_fired_on_the_exchange_is_booked_from_its_events(streamed) -> None:
    fake, broker = streamed.fake, streamed.broker
    await opened_and_protected(streamed)
    fake.set_mark_price("BTCUSDT", "48400")   # Binance triggers the stop
    await until(lambda: streamed.state.position("BTCUSDT", 20) is None)
    fake.requests.clear()

    assert await broker.positions() == {}
    assert streamed.state.open_algo_orders("BTCUSDT") == []   # the stop finished, the target expired with it
    # Today's PnL from the fills' own events: entry fee 0.25, the stop's loss 16 and its fee 0.242.
    assert await broker.realized_pnl_since("BTCUSDT", streamed.state.fills_seen_since_ms) == Decimal("-16.492")
    assert fake.requests == []


async def test_a_fill_inside_the_streams_start_margin_is_counted_by_a_later_read(streamed) -> None:
    """Today's PnL before the stream's start comes from one userTrades read; the start lies a margin ahead. A
    fill after that read but before the start is in neither sum unless the read is taken again later."""
    fake, broker, state = streamed.fake, streamed.broker, streamed.state
    since = fake.server_time_ms() - 60_000
    state._fills_seen_since_ms = fake.server_time_ms() + 30_000   # as if the stream had just gone live
    assert await broker.realized_pnl_since("BTCUSDT", since) == 0   # read now: no fill yet
    await broker.open_position(entry())                              # filled before the stream's start
    assert await broker.realized_pnl_since("BTCUSDT", since) == Decimal("-0.25")   # its fee, not lost


async def test_a_disconnect_is_a_gap_then_that_account_alone_is_reconciled(streamed) -> None:
    fake, broker, state = streamed.fake, streamed.broker, streamed.state
    await opened_and_protected(streamed)
    reads_before = len(fake.reads(ACCOUNT))
    fake.streams.pause_events(streamed.api_key)        # the events of the next fill are lost...
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.005"))   # ...a trade by hand during the gap
    assert fake.streams.drop_stream_connections() >= 1
    fake.streams.resume_events(streamed.api_key)

    await until(lambda: state.live and len(fake.reads(ACCOUNT)) > reads_before, timeout=10)
    assert len(fake.reads(ACCOUNT)) == reads_before + 1   # reconnected, then reconciled once over REST
    assert (await broker.positions())["BTCUSDT"].quantity == Decimal("0.015")   # the hand trade is there


async def test_a_gap_during_a_reconcile_voids_its_snapshot(streamed) -> None:
    fake, broker, state = streamed.fake, streamed.broker, streamed.state
    await opened_and_protected(streamed)
    state.on_gap("test: events may have been lost")    # a gap: the next cycle reconciles
    release = fake.hold_next_answer(ACCOUNT)
    reconcile = asyncio.create_task(streamed.streams.ensure_reconciled(broker.shared))
    await until(lambda: len(fake.reads(ACCOUNT)) >= 1 and ACCOUNT not in fake.held_answers)   # snapshot taken

    hub, gaps = streamed.streams.hub, streamed.streams.hub.gaps
    fake.streams.pause_events(streamed.api_key)             # a second gap while that answer is in flight,
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.005"))   # whose hand trade the stream never reports
    assert fake.streams.drop_stream_connections() >= 1
    await until(lambda: hub.gaps > gaps and hub.is_live(broker.shared.account_id), timeout=10)   # back
    release.set()
    await reconcile

    await until(lambda: state.live, timeout=10)   # live again only on a snapshot read after the second gap
    assert state.position("BTCUSDT", 20).quantity == Decimal("0.015")


async def test_an_expired_listen_key_is_replaced_and_the_account_reconciled(streamed) -> None:
    fake, state = streamed.fake, streamed.state
    old_key = fake.streams.listen_key_of(streamed.api_key)
    creations = len(fake.orders_sent("/fapi/v1/listenKey"))
    fake.streams.expire_listen_key(streamed.api_key)
    await until(lambda: not state.live)
    await until(lambda: state.live, timeout=10)

    assert fake.streams.listen_key_of(streamed.api_key) not in (None, old_key)
    assert len(fake.orders_sent("/fapi/v1/listenKey")) == creations + 1
    await opened_and_protected(streamed)   # and events flow on the new key


async def test_a_state_that_lost_its_stream_is_never_trusted(streamed) -> None:
    fake, broker, state = streamed.fake, streamed.broker, streamed.state
    await opened_and_protected(streamed)
    fake.streams.pause_events(streamed.api_key)
    fake.manual_order("BTCUSDT", "SELL", Decimal("0.010"))   # flat by hand; the stream does not say so
    state.on_gap("test: events may have been lost")
    fake.requests.clear()

    assert await broker.positions() == {}                     # asked over REST, not the stale state
    assert len(fake.reads(ACCOUNT)) >= 1


async def test_a_forgotten_account_closes_its_stream_and_is_never_trusted_again(streamed) -> None:
    fake, state, streams = streamed.fake, streamed.state, streamed.streams
    account_id = streamed.broker.shared.account_id
    assert state.live

    await streams.forget(account_id)   # its broker expired: the bots of this account were stopped

    assert not state.live and not streams.hub.is_live(account_id)
    assert [r for r in fake.requests if r.path == "/fapi/v1/listenKey" and r.method == "DELETE"]
    await streams.forget(account_id)   # idempotent


class _Connections:
    """A broker factory with user-data streams against the fake, and connection ``c1`` with any keys."""

    def __init__(self, db: AsyncDatabase, fake: FakeBinanceFutures) -> None:
        self.vault = CredentialVault([Fernet.generate_key().decode()])
        settings = ExecutorSettings(
            grpc_host="127.0.0.1", grpc_port=0, mongodb_uri="", mongodb_db="", credentials_keys=(),
            binance_futures_url=fake.url, binance_futures_testnet_url=fake.url, binance_spot_url=fake.url,
            paper_initial_balance=Decimal(0), paper_taker_fee=Decimal(0),
            binance_futures_ws_url="ws" + fake.url.removeprefix("http"))
        self.factory = BrokerFactory(db, self.vault, settings)

    def connection(self, key: str, secret: str) -> ExchangeConnection:
        return ExchangeConnection("c1", "u1", "live", self.vault.fernet.encrypt(key.encode()).decode(),
                                  self.vault.fernet.encrypt(secret.encode()).decode())


async def test_a_connection_given_a_new_api_key_closes_the_old_accounts_stream(db) -> None:
    """The user replaced the API key of a connection: the old account's stream must not live on through the
    closed client (keepalives), and the new account comes up on its own stream."""
    old_key, new_key = f"old{uuid.uuid4().hex}", f"new{uuid.uuid4().hex}"
    async with FakeBinanceFutures(api_key=old_key, api_secret="old-secret") as fake:
        fake.add_account(new_key, "new-secret", Decimal("5000"))
        connections = _Connections(db, fake)
        factory, connection = connections.factory, connections.connection
        try:
            old = await factory.broker_for(connection(old_key, "old-secret"))
            hub = old.streams.hub
            await until(lambda: hub.is_live(old.shared.account_id))
            new = await factory.broker_for(connection(new_key, "new-secret"))
            assert new.shared.account_id != old.shared.account_id
            await until(lambda: hub.is_live(new.shared.account_id))
            assert not hub.is_live(old.shared.account_id)
            deleted = [r for r in fake.requests if r.path == "/fapi/v1/listenKey" and r.method == "DELETE"]
            assert len(deleted) == 1, "the old account's listenKey is closed, the new one's is not"
        finally:
            await factory.close()


async def test_a_connection_given_a_new_secret_keeps_its_accounts_stream_on_the_new_client(db) -> None:
    """The same API key with a new secret is the same account: its stream stays up (no new listenKey, none
    deleted) and its keepalives go through the new broker's client, not the closed one."""
    key = f"key{uuid.uuid4().hex}"
    async with FakeBinanceFutures(api_key=key, api_secret="old-secret") as fake:
        connections = _Connections(db, fake)
        factory = connections.factory
        try:
            old = await factory.broker_for(connections.connection(key, "old-secret"))
            hub, account_id = old.streams.hub, old.shared.account_id
            await until(lambda: hub.is_live(account_id))
            fake.accounts[key].api_secret = "new-secret"   # the user rotated the secret on Binance
            new = await factory.broker_for(connections.connection(key, "new-secret"))
            assert new is not old and new.shared.account_id == account_id and hub.is_live(account_id)
            stream = hub._accounts[account_id]   # what the keepalive loop will use
            await stream.keys.keepalive(stream.key)   # through the closed client this would raise
            listen_keys = [r.method for r in fake.requests if r.path == "/fapi/v1/listenKey"]
            assert listen_keys == ["POST", "PUT"]
        finally:
            await factory.close()


async def test_an_ip_ban_met_while_the_account_is_brought_up_is_reported_as_a_ban() -> None:
    """A 418 blinds every account behind the IP: a cycle whose account is still being brought up fails with the
    ban (the gateway logs it CRITICAL EXCHANGE_BANNED, the breaker counts it), from the 418 itself on, rather
    than reporting a WARNING wait for its bring-up."""
    api_key, api_secret = f"key{uuid.uuid4().hex}", f"secret{uuid.uuid4().hex}"
    async with FakeBinanceFutures(api_key=api_key, api_secret=api_secret) as fake:
        banned_until = fake.server_time_ms() + 300_000
        fake.fail_next("GET", ACCOUNT, status=418, code=-1003,
                       msg=f"Way too many requests; IP(127.0.0.1) banned until {banned_until}.")
        hub = UserStreamHub("ws" + fake.url.removeprefix("http"))
        streams = AccountStreams(hub)
        broker = await stream_broker(fake, api_key, api_secret, hub, streams)
        try:
            await until(lambda: hub.is_live(broker.shared.account_id))   # its snapshot is all it still needs
            for _ in range(2):   # the 418 (met by this cycle or the bring-up worker), then the governor's refusal
                with pytest.raises(ResourceExhausted) as refused:
                    await broker.account()
                assert not isinstance(refused.value, AccountNotReady)
                assert "IP ban (418)" in refused.value.message
                assert exchange_failure(refused.value) == "ip_banned"
            assert len(fake.reads(ACCOUNT)) == 1   # nothing sent during the ban
        finally:
            await streams.close()
            await broker.close()
