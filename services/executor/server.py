"""The tradebot.v1.Executor gRPC servicer and the objects it is built from."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError
from tradebot.v1 import executor_pb2, executor_pb2_grpc

from services.common.circuit_breaker import BreakerTrips, process_name
from services.common.errors import Unavailable
from services.common.grpc_client import make_channel
from services.common.caller_policy import GATEWAY, OPERATOR
from services.common.grpc_server import ServiceBinding
from services.common.mongo_metrics import COMMAND_LISTENER
from services.executor.account_cache import AccountCache
from services.executor.brokers.factory import BrokerFactory
from services.executor.connections import ConnectionRepository
from services.executor.credentials import CredentialVault
from services.executor.cycle import CycleRunner
from services.executor.cycle_requests import CycleRequests, deadline_from
from services.executor.market_inputs import MarketReader, MarketServiceReader
from services.executor.metrics_hooks import cycle_mode, note_connection_mode, record_cycle
from services.executor.settings import ExecutorSettings
from services.executor.late_results import LateResults
from services.executor.stored_bots import StoredBotReader
from services.common.weight_governor import caller_deadline
from services.executor.entry_intents import MongoEntryIntents
from services.executor.symbol_leases import MongoSymbolLeases
from services.executor.exchange_failures import ExchangeFailureEvidence, FailureWatchedBrokers
from services.executor.trading_controls_reader import TradingControlsReader

SERVICE_NAME = "tradebot.v1.Executor"
DRAIN_PROTECTED_ENTRIES_SECONDS = 30.0

log = logging.getLogger(__name__)


class ExecutorServicer(executor_pb2_grpc.ExecutorServicer):
    def __init__(self, requests: CycleRequests, runner: CycleRunner) -> None:
        self._requests = requests
        self._runner = runner

    async def RunCycle(  # noqa: N802 (gRPC method name)
        self, request: executor_pb2.RunCycleRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.RunCycleResponse:
        deadline = deadline_from(context.time_remaining())
        with _database_errors_as_unavailable(), cycle_mode() as mode, caller_deadline(deadline):
            cycle_input = await self._requests.resolve(request, deadline)
            response = await self._runner.run(cycle_input)
            record_cycle(response, mode.mode)
            return response

    async def GetPosition(  # noqa: N802
        self, request: executor_pb2.GetPositionRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.GetPositionResponse:
        with _database_errors_as_unavailable():
            stored = (await self._requests.stored_bot(request.bot)).bot
            connection_id = "" if stored.exchange_connection_id is None else str(stored.exchange_connection_id)
            return await self._runner.get_position(str(stored.user_id), connection_id, stored.symbol)


@contextmanager
def _database_errors_as_unavailable() -> Iterator[None]:
    """MongoDB (connections, the paper store) unreachable: a retryable UNAVAILABLE, not INTERNAL."""
    try:
        yield
    except (ConnectionFailure, ServerSelectionTimeoutError, NetworkTimeout) as error:
        log.warning("database unavailable", extra={"error": type(error).__name__})
        raise Unavailable("database unavailable") from None


class ExecutorApp:
    """Everything the service owns, built from settings; ``close()`` releases it."""

    def __init__(self, settings: ExecutorSettings, *, mongo_timeout_ms: int = 5000,
                 market: MarketReader | None = None) -> None:
        self.settings = settings
        # A short server-selection timeout: a tick has minutes, not pymongo's default 30 s per call.
        self.mongo: AsyncMongoClient = AsyncMongoClient(
            settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=mongo_timeout_ms,
            event_listeners=[COMMAND_LISTENER],
        )
        db = self.mongo[settings.mongodb_db]
        self.vault = CredentialVault(settings.credentials_keys)
        self.brokers = BrokerFactory(db, self.vault, settings)
        self.leases = MongoSymbolLeases(db)
        # Operator controls: every cycle reads the halts and the breaker; live accounts' exchange failures
        # are the breaker's evidence (the brokers the cycle gets are watched).
        self.controls = TradingControlsReader(db)
        self.exchange_failures = ExchangeFailureEvidence(
            db, BreakerTrips(db, settings.breaker, process_name("executor")),
            lambda: self.controls.breaker_open,
        )
        self.runner = CycleRunner(ConnectionRepository(db), FailureWatchedBrokers(self.brokers, self.exchange_failures),
                                  AccountCache(),
                                  on_connection=note_connection_mode, leases=self.leases,
                                  late_results=LateResults(db), intents=MongoEntryIntents(db))
        # The market service is the executor's source of prices and filters (tests may hand in their own).
        self._market_channel = None if market is not None else make_channel(settings.market_addr)
        if market is None:
            assert self._market_channel is not None
            market = MarketServiceReader(self._market_channel)
        self.requests = CycleRequests(StoredBotReader(db), market, controls=self.controls)
        self.servicer = ExecutorServicer(self.requests, self.runner)
        self._closed = False

    def binding(self) -> ServiceBinding:
        # Only the gateway's certificate drives trades; an operator may read a position.
        callers = {"RunCycle": frozenset({GATEWAY}), "GetPosition": frozenset({GATEWAY, OPERATOR})}
        return ServiceBinding(SERVICE_NAME, self.servicer, executor_pb2_grpc.add_ExecutorServicer_to_server, callers)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # A protected entry that outlived its caller finishes (stop placed, result stored) before the
        # connections it needs are closed.
        await self.runner.drain(DRAIN_PROTECTED_ENTRIES_SECONDS)
        await self.exchange_failures.settled()
        if self._market_channel is not None:
            await self._market_channel.close()
        await self.brokers.close()
        await self.mongo.close()
