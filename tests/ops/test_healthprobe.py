"""The container health probe against a real grpc.aio server.

Docker's HEALTHCHECK and compose run ``python -m services.common.healthprobe``
as a separate process, so the tests do the same: exit 0 only for SERVING.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from grpc_health.v1 import health_pb2

from services.common.grpc_server import GrpcService, start_server
from tests.support.processes import REPO_ROOT, free_port

SERVICE = "tradebot.v1.MarketData"


async def run_probe(*args: str) -> tuple[int, str]:
    # Async subprocess: the server under test runs on this same event loop.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.common.healthprobe",
        *args,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.fixture
async def server() -> AsyncIterator[GrpcService]:
    service = await start_server([], host="127.0.0.1", port=0)
    await service.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield service
    finally:
        await service.server.stop(None)


async def test_serving_server_and_service_exit_zero(server: GrpcService) -> None:
    code, output = await run_probe(f"127.0.0.1:{server.port}", "--timeout", "5")
    assert (code, output.strip()) == (0, f"127.0.0.1:{server.port} <server>: SERVING")

    code, output = await run_probe(f"127.0.0.1:{server.port}", SERVICE, "--timeout", "5")
    assert (code, output.strip()) == (0, f"127.0.0.1:{server.port} {SERVICE}: SERVING")


async def test_not_serving_service_exits_one(server: GrpcService) -> None:
    await server.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    code, output = await run_probe(f"127.0.0.1:{server.port}", SERVICE, "--timeout", "5")
    assert code == 1
    assert "NOT_SERVING" in output


async def test_draining_server_fails_the_probe(server: GrpcService) -> None:
    # What SIGTERM does first: health goes NOT_SERVING so traffic moves away.
    await server.health.enter_graceful_shutdown()
    code, output = await run_probe(f"127.0.0.1:{server.port}", "--timeout", "5")
    assert code == 1
    assert "NOT_SERVING" in output


async def test_unknown_service_exits_one(server: GrpcService) -> None:
    code, output = await run_probe(f"127.0.0.1:{server.port}", "tradebot.v1.NoSuchService", "--timeout", "5")
    assert code == 1
    assert "NOT_FOUND" in output


async def test_nothing_listening_exits_one_quickly() -> None:
    port = free_port()
    started = asyncio.get_running_loop().time()
    code, output = await run_probe(f"127.0.0.1:{port}", SERVICE, "--timeout", "2")
    assert code == 1
    assert "UNAVAILABLE" in output or "DEADLINE_EXCEEDED" in output
    assert asyncio.get_running_loop().time() - started < 15
