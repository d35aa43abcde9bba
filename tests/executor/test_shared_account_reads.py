"""Issue 7: one account read (balances + positions) per exchange account per tick, shared by its bots.

Live: the real cycle, live broker and python-binance against the fake Binance Futures server, through
the executor's gRPC server; the reads are counted on the fake. Paper: the same cycle on an in-memory
paper account whose reads are counted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from tradebot.v1 import common_pb2

from services.backtest.wiring import SinglePaperBroker, SinglePaperConnection
from services.common.errors import FailedPrecondition, Unavailable
from services.common.weight_governor import Priority, priority_var
from services.executor.account_cache import AccountCache
from services.executor.admin import store_connection_async
from services.executor.brokers.base import ExchangePosition
from services.executor.brokers.paper import PaperBroker
from services.executor.brokers.paper_store import MemoryPaperStore
from services.executor.connections import ExchangeConnection
from services.executor.cycle import CycleRunner
from tests.executor.builders import BotCycle, cycle_input, request
from tests.fakes.binance_futures import DEFAULT_SYMBOLS, FakeBinanceFutures, SymbolSpec

API_KEY = "shared-reads-key-0001"
API_SECRET = f"shared-reads-secret-{uuid.uuid4().hex}"
EXTRA = ("SOLUSDT", "BNBUSDT", "XRPUSDT")
SYMBOLS = ("BTCUSDT", "ETHUSDT", *EXTRA)
ACCOUNT = "/fapi/v3/account"
POSITION_RISK = "/fapi/v3/positionRisk"
BALANCE = "/fapi/v3/balance"
INCOME = "/fapi/v1/income"
USER_TRADES = "/fapi/v1/userTrades"


@pytest.fixture
def user_streams() -> bool:
    return False   # these tests pin down the REST path (an account whose stream is not live)


def _bot_id(index: int) -> str:
    return f"6650f0f0f0f0f0f0f0f0f0{index:02d}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceFutures]:
    extra = tuple(SymbolSpec(s, Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal("100000"),
                             Decimal("5"), 2, 3) for s in EXTRA)
    async with FakeBinanceFutures(api_key=API_KEY, api_secret=API_SECRET, symbols=DEFAULT_SYMBOLS + extra,
                                  mark_prices=dict.fromkeys(EXTRA, Decimal("100"))) as server:
        yield server


@pytest.fixture
async def live_user(db, fernet_key) -> str:
    user_id = str(ObjectId())
    await store_connection_async(db, user_id, "testnet", API_KEY, API_SECRET, Fernet(fernet_key.encode()))
    return user_id


def _hold(user_id: str, tick_id: str, index: int, symbol: str) -> BotCycle:
    # The market service's price is Binance's mark price (set on the fake below for ETH).
    price = "50000" if symbol == "BTCUSDT" else "3012.5" if symbol == "ETHUSDT" else "100"
    return request(user_id=user_id, tick_id=tick_id, bot_instance_id=_bot_id(index), symbol=symbol, price=price,
                   action=common_pb2.ACTION_HOLD)


async def test_five_live_bots_of_one_account_share_one_account_read_per_tick(live_stub, fake, live_user):
    fake.manual_order("ETHUSDT", "BUY", Decimal("1"))   # one bot's symbol already has a position
    fake.set_mark_price("ETHUSDT", "3012.5")
    fake.requests.clear()

    replies = await asyncio.gather(*(live_stub.run_cycle(_hold(live_user, "tick-1", i, s)) for i, s in enumerate(SYMBOLS)))

    assert len(fake.reads(ACCOUNT)) == 1   # balances and every position: one request (weight 5)
    assert fake.reads(BALANCE) == [] and [r for r in fake.reads(POSITION_RISK) if "symbol" not in r.params] == []
    assert fake.reads(INCOME) == []         # never the weight-30 income history
    # Today's PnL is read only where it decides something: the ETH bot's open position (one userTrades, weight 5).
    assert [r.params["symbol"] for r in fake.reads(USER_TRADES)] == ["ETHUSDT"]
    by_symbol = dict(zip(SYMBOLS, replies, strict=True))
    eth = by_symbol["ETHUSDT"]
    assert eth.has_position and eth.position.quantity == "1"
    assert Decimal(eth.position.entry_price) == Decimal("3000")   # derived from notional and unrealised PnL
    assert Decimal(eth.position.pnl) == Decimal("12.5") and Decimal(eth.position.mark_price) == Decimal("3012.5")
    assert not any(by_symbol[s].has_position for s in SYMBOLS if s != "ETHUSDT")

    await asyncio.gather(*(live_stub.run_cycle(_hold(live_user, "tick-2", i, s)) for i, s in enumerate(SYMBOLS)))
    assert len(fake.reads(ACCOUNT)) == 2   # a new tick reads again
    assert fake.reads(INCOME) == [] and len(fake.reads(USER_TRADES)) == 2   # HOLD bots flat: nothing to decide


async def test_a_failed_account_read_opens_nothing_for_any_bot(live_stub, fake, live_user):
    fake.fail_next("GET", ACCOUNT, status=503, code=-1001, msg="Internal error; unable to process your request.",
                   times=1000)
    buys = [request(user_id=live_user, tick_id="tick-1", bot_instance_id=_bot_id(i), symbol=s,
                    price="50000" if s == "BTCUSDT" else "3000") for i, s in enumerate(("BTCUSDT", "ETHUSDT"))]
    results = await asyncio.gather(*(live_stub.run_cycle(b) for b in buys), return_exceptions=True)

    assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.UNAVAILABLE for r in results)
    assert fake.orders_sent("/fapi/v1/order") == []
    assert fake.position("BTCUSDT").amount == 0 and fake.position("ETHUSDT").amount == 0


async def test_no_entry_when_todays_pnl_is_unreadable(live_stub, fake, live_user):
    fake.fail_next("GET", USER_TRADES, status=503, code=-1001, msg="Internal error", times=1000)

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await live_stub.run_cycle(request(user_id=live_user, tick_id="tick-2", bot_instance_id=_bot_id(0)))

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and "trade history of BTCUSDT" in failed.value.details()
    assert fake.orders_sent("/fapi/v1/order") == [] and fake.position("BTCUSDT").amount == 0


async def test_two_live_bots_on_the_same_symbol_enter_once(live_stub, fake, live_user):
    buys = [request(user_id=live_user, tick_id="tick-1", bot_instance_id=_bot_id(i)) for i in range(2)]
    first, second = await asyncio.gather(*(live_stub.run_cycle(b) for b in buys))

    placed = [r for r in (first, second) if r.order.placed]
    assert len(placed) == 1, (first.decision, second.decision)
    assert len(fake.orders_sent("/fapi/v1/order")) == 1
    assert fake.position("BTCUSDT").amount == Decimal(placed[0].order.quantity)   # no second entry on top
    other = second if placed[0] is first else first
    assert other.has_position and other.position.side == common_pb2.SIDE_LONG   # it saw the first bot's position


# -- paper -------------------------------------------------------------------
class CountingPaperBroker(PaperBroker):
    def __init__(self, store: MemoryPaperStore, *, fail_reads: bool = False) -> None:
        super().__init__(store, "paper-account", initial_balance=Decimal(10000), taker_fee=Decimal("0.0005"))
        self.snapshot_reads = 0
        self.symbol_reads = 0
        self.daily_snapshot_reads = 0
        self.daily_symbol_reads = 0
        self.fail_reads = fail_reads

    async def positions(self) -> dict[str, ExchangePosition]:
        self.snapshot_reads += 1
        if self.fail_reads:
            raise Unavailable("paper store unreachable")
        return await super().positions()

    async def position(self, symbol: str) -> ExchangePosition | None:
        self.symbol_reads += 1
        return await super().position(symbol)

    async def realized_pnl_by_symbol_since(self, since_ms: int) -> dict[str, Decimal]:
        self.daily_snapshot_reads += 1
        return await super().realized_pnl_by_symbol_since(since_ms)

    async def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        self.daily_symbol_reads += 1
        return await super().realized_pnl_since(symbol, since_ms)


class CountingConnections(SinglePaperConnection):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.refuse = False

    async def resolve(self, user_id: str, connection_id: str) -> ExchangeConnection:
        self.lookups += 1
        await asyncio.sleep(0)   # let the other bots of the tick arrive while this lookup is out
        if self.refuse:
            raise FailedPrecondition("exchange connection is not active")
        return await super().resolve(user_id, connection_id)


def _paper_runner(broker: PaperBroker, connections: SinglePaperConnection | None = None) -> CycleRunner:
    return CycleRunner(connections or SinglePaperConnection(), SinglePaperBroker(broker), AccountCache())


async def test_bots_of_one_account_look_their_connection_up_once_per_tick():
    connections = CountingConnections()
    runner = _paper_runner(CountingPaperBroker(MemoryPaperStore()), connections)
    user = str(ObjectId())
    await asyncio.gather(*(runner.run(_hold(user, "tick-1", i, s).input()) for i, s in enumerate(SYMBOLS)))
    assert connections.lookups == 1

    # Deactivated between ticks: the next tick's lookup sees it, and every bot of the account stops.
    connections.refuse = True
    outcomes = await asyncio.gather(*(runner.run(_hold(user, "tick-2", i, s).input()) for i, s in enumerate(SYMBOLS)),
                                    return_exceptions=True)
    assert all(isinstance(outcome, FailedPrecondition) for outcome in outcomes)
    # A failed lookup is not kept: re-activated, the same tick's next bot finds the connection again.
    connections.refuse = False
    assert (await runner.run(_hold(user, "tick-2", 0, "BTCUSDT").input())).decision


async def test_paper_bots_of_one_account_share_one_positions_read_per_tick():
    broker = CountingPaperBroker(MemoryPaperStore())
    runner = _paper_runner(broker)
    user = str(ObjectId())
    await asyncio.gather(*(runner.run(_hold(user, "tick-1", i, s).input()) for i, s in enumerate(SYMBOLS)))
    assert (broker.snapshot_reads, broker.symbol_reads) == (1, 0)
    # Flat and holding: today's PnL decides nothing, so it is not read (on Binance it costs weight).
    assert (broker.daily_snapshot_reads, broker.daily_symbol_reads) == (0, 0)
    replies = await asyncio.gather(*(runner.run(_hold(user, "tick-2", i, s).input()) for i, s in enumerate(SYMBOLS)))
    assert (broker.snapshot_reads, broker.symbol_reads) == (2, 0)
    assert (broker.daily_snapshot_reads, broker.daily_symbol_reads) == (0, 0)
    assert all(reply.daily_realized_pnl == "" for reply in replies)   # not read: reported as unknown, never 0

    # Bots about to enter share one read of today's PnL per tick.
    buys = [cycle_input(user_id=user, tick_id="tick-3", bot_instance_id=_bot_id(i), symbol=s, price="100")
            for i, s in enumerate(EXTRA)]
    await asyncio.gather(*(runner.run(buy) for buy in buys))
    assert (broker.daily_snapshot_reads, broker.daily_symbol_reads) == (1, 0)


async def test_paper_failed_positions_read_opens_nothing():
    store = MemoryPaperStore()
    broker = CountingPaperBroker(store, fail_reads=True)
    with pytest.raises(Unavailable):
        await _paper_runner(broker).run(cycle_input(user_id=str(ObjectId()), tick_id="tick-1"))
    assert await store.list_positions("paper-account") == []


async def test_paper_second_bot_on_the_same_symbol_sees_the_first_bots_position():
    store = MemoryPaperStore()
    broker = CountingPaperBroker(store)
    runner = _paper_runner(broker)
    user = str(ObjectId())
    replies = await asyncio.gather(*(runner.run(cycle_input(user_id=user, tick_id="tick-1", bot_instance_id=_bot_id(i)))
                                     for i in range(2)))
    assert sum(r.order.placed for r in replies) == 1
    assert all(r.has_position for r in replies)
    [position] = await store.list_positions("paper-account")
    assert position["quantity"] == "0.2"


async def test_paper_stop_filled_by_this_bots_observe_is_not_hidden_by_the_shared_snapshot():
    broker = CountingPaperBroker(MemoryPaperStore())
    runner = _paper_runner(broker)
    user = str(ObjectId())
    opened = await runner.run(cycle_input(user_id=user, tick_id="tick-1", bot_instance_id=_bot_id(0)))
    assert opened.order.placed and opened.order.stop_loss == "49000"

    # tick 2: another bot of the account takes the snapshot (BTC still open), then the BTC bot's
    # price falls through the stop: its own read must see the position gone and book the trade.
    await runner.run(_hold(user, "tick-2", 1, "ETHUSDT").input())
    later = await runner.run(cycle_input(user_id=user, tick_id="tick-2", bot_instance_id=_bot_id(0), price="48000",
                                     action=common_pb2.ACTION_HOLD, stored_position=opened.position))
    assert broker.snapshot_reads == 2
    assert not later.has_position
    [trade] = later.closed_trades
    assert trade.reason == "STOP_LOSS" and trade.exit_price == "49000"
    # The ETH bot (flat, holding) reads no daily PnL; the BTC bot reads its own, this loss included.
    assert broker.daily_snapshot_reads == 1 and broker.daily_symbol_reads == 1
    assert later.daily_realized_pnl == trade.realized_pnl


class PriorityRecordingBroker(PaperBroker):
    """A broker read symbol by symbol (as Binance's is), recording how urgent each PnL read was made."""

    def __init__(self, store: MemoryPaperStore) -> None:
        super().__init__(store, "paper-account", initial_balance=Decimal(10000), taker_fee=Decimal("0.0005"))
        self.pnl_read_priorities: list[Priority] = []

    async def realized_pnl_by_symbol_since(self, since_ms: int) -> dict[str, Decimal] | None:
        return None

    async def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        self.pnl_read_priorities.append(priority_var.get())
        return await super().realized_pnl_since(symbol, since_ms)


async def test_an_entrys_pnl_read_is_the_ticks_own_work_and_an_open_positions_is_background():
    # After a restart thousands of open positions need their first PnL read of the day: on the background
    # share, so they never take the room an entry's read needs (the entry would be deferred tick after tick).
    broker = PriorityRecordingBroker(MemoryPaperStore())
    runner = _paper_runner(broker)
    user = str(ObjectId())
    entered = await runner.run(cycle_input(user_id=user, tick_id="tick-1", bot_instance_id=_bot_id(1)))
    assert entered.order.placed
    assert broker.pnl_read_priorities == [Priority.TICK]
    await runner.run(_hold(user, "tick-2", 1, "BTCUSDT").input())   # holding its position
    assert broker.pnl_read_priorities == [Priority.TICK, Priority.BACKGROUND]
