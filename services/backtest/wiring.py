"""The executor's own CycleRunner, wired to one in-memory paper account.

Only the two outside systems are swapped: the exchange-connection lookup
(there is no database: one paper connection) and the broker factory (always
the same ``PaperBroker`` on a ``MemoryPaperStore``, with the simulated clock
and the backtest's fee). Everything between them, the cycle, sizing,
filters, safety rules and protective orders, is the live code.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from services.executor.account_cache import AccountCache
from services.executor.brokers.base import Broker
from services.executor.brokers.factory import BrokerFactory
from services.executor.brokers.paper import PaperBroker
from services.executor.brokers.paper_store import MemoryPaperStore
from services.executor.connections import ConnectionRepository, ExchangeConnection
from services.executor.cycle import CycleRunner

BACKTEST_USER_ID = "000000000000000000000000"
BACKTEST_CONNECTION_ID = "backtest-paper"
BACKTEST_BOT_INSTANCE_ID = "backtest-bot"


class SinglePaperConnection(ConnectionRepository):
    def __init__(self) -> None:  # no database: the one connection is known
        self._connection = ExchangeConnection(id=BACKTEST_CONNECTION_ID, user_id=BACKTEST_USER_ID, mode="paper")

    async def resolve(self, user_id: str, connection_id: str) -> ExchangeConnection:
        return self._connection


class SinglePaperBroker(BrokerFactory):
    def __init__(self, broker: PaperBroker) -> None:  # no vault, no live brokers
        self._broker = broker

    async def broker_for(self, connection: ExchangeConnection) -> Broker:
        return self._broker

    async def close(self) -> None:
        return None


class SimulatedClock:
    """The backtest's 'now', moved forward one step at a time."""

    def __init__(self, start_ms: int = 0) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms


def build_runner(*, initial_balance: Decimal, taker_fee: Decimal,
                 clock: Callable[[], int]) -> tuple[CycleRunner, PaperBroker, MemoryPaperStore]:
    store = MemoryPaperStore()
    broker = PaperBroker(store, BACKTEST_CONNECTION_ID, initial_balance=initial_balance, taker_fee=taker_fee,
                         clock=clock)
    # Each step is its own tick: the account snapshot must not outlive it (a wall-clock TTL
    # would keep ~10^5 entries alive and make every lookup scan them).
    runner = CycleRunner(SinglePaperConnection(), SinglePaperBroker(broker), AccountCache(ttl_seconds=0.0),
                         clock=clock)
    return runner, broker, store
