"""The tradebot.v1.Executor gRPC servicer and the objects it is built from."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError
from tradebot.v1 import executor_pb2, executor_pb2_grpc

from services.common.errors import Unavailable
from services.common.grpc_server import ServiceBinding
from services.common.mongo_metrics import COMMAND_LISTENER
from services.executor.account_cache import AccountCache
from services.executor.brokers.factory import BrokerFactory
from services.executor.connections import ConnectionRepository
from services.executor.credentials import CredentialVault
from services.executor.cycle import CycleRunner
from services.executor.metrics_hooks import cycle_mode, note_connection_mode, record_cycle
from services.executor.settings import ExecutorSettings

SERVICE_NAME = "tradebot.v1.Executor"

log = logging.getLogger(__name__)


class ExecutorServicer(executor_pb2_grpc.ExecutorServicer):
    def __init__(self, runner: CycleRunner) -> None:
        self._runner = runner

    async def RunCycle(  # noqa: N802 (gRPC method name)
        self, request: executor_pb2.RunCycleRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.RunCycleResponse:
        with _database_errors_as_unavailable(), cycle_mode() as mode:
            response = await self._runner.run(request)
            record_cycle(response, mode.mode)
            return response

    async def GetPosition(  # noqa: N802
        self, request: executor_pb2.GetPositionRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.GetPositionResponse:
        with _database_errors_as_unavailable():
            return await self._runner.get_position(request)


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

    def __init__(self, settings: ExecutorSettings, *, mongo_timeout_ms: int = 5000) -> None:
        self.settings = settings
        # A short server-selection timeout: a tick has minutes, not pymongo's default 30 s per call.
        self.mongo: AsyncMongoClient = AsyncMongoClient(
            settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=mongo_timeout_ms,
            event_listeners=[COMMAND_LISTENER],
        )
        db = self.mongo[settings.mongodb_db]
        self.vault = CredentialVault(settings.credentials_keys)
        self.brokers = BrokerFactory(db, self.vault, settings)
        self.runner = CycleRunner(ConnectionRepository(db), self.brokers, AccountCache(),
                                  on_connection=note_connection_mode)
        self.servicer = ExecutorServicer(self.runner)
        self._closed = False

    def binding(self) -> ServiceBinding:
        return ServiceBinding(SERVICE_NAME, self.servicer, executor_pb2_grpc.add_ExecutorServicer_to_server)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.brokers.close()
        await self.mongo.close()
