"""Observability tests reuse the gateway's and the executor's fixtures (real app, real MongoDB, fake or real
gRPC servers) and scrape the process's real /metrics endpoint."""

from __future__ import annotations

import pytest

from services.common import metrics
from tests.executor.conftest import executor, executor_settings, fernet_key, paper_connection  # noqa: F401
from tests.gateway.conftest import fake_services, fakes, gateway, gateway_factory  # noqa: F401
from tests.support.processes import free_port


@pytest.fixture(scope="session")
def metrics_port() -> int:
    # One endpoint per process: if another test already started it, this returns that port.
    port = metrics.start_metrics_server(free_port())
    assert port is not None
    return port
