"""Helpers of the reliability tests: extra processes wired to the shared stack, a hung upstream,
and the checks that feed the ledger (writes lost, duplicate orders)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from bson import ObjectId
from pymongo.database import Database

from services.devstack.processes import ChildProcess, free_port, grpc_serving, python_module, wait_until
from services.devstack.stack import StackConfig
from tests.reliability.ledger import LEDGER


def http_answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def spawn_gateway(config: StackConfig, name: str, env: Mapping[str, str]) -> tuple[ChildProcess, str]:
    """A second gateway on the same database and services, with its own settings (deadline, addresses)."""
    port = free_port()
    environment = {**config.environment("gateway"), "GATEWAY_PORT": str(port), **env}
    process = ChildProcess(name, python_module("services.gateway"), environment)
    base = f"http://{config.host}:{port}"
    wait_until(lambda: http_answers(base + "/healthz"), f"{name} /healthz", 60, process)
    return process, base + "/api/cron/run-bots"


def spawn_service(config: StackConfig, service: str, name: str, env: Mapping[str, str]) -> tuple[ChildProcess, str]:
    """A second instance of a gRPC service (e.g. a strategy with a tiny AI timeout)."""
    port = free_port()
    environment = {**config.environment(service), "GRPC_PORT": str(port), **env}
    process = ChildProcess(name, python_module(f"services.{service}"), environment)
    address = f"{config.host}:{port}"
    wait_until(lambda: grpc_serving(address), f"{name} on {address}", 60, process)
    return process, address


def call(url: str, secret: str, timeout: float = 60) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=timeout)
    return response, time.monotonic() - started


class HungListener:
    """Accepts TCP connections and never answers a byte: a service that is up but hung."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hung-listener", daemon=True)

    def __enter__(self) -> HungListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        for connection in self.accepted:
            connection.close()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(connection)  # held open, never read, never answered


def check_results_written(db: Database, body: dict[str, Any], since: datetime) -> None:
    """Every bot the response reports as run (success/failed) has its outcome stored and its lease released.

    A reported result without a stored ``lastRunAt`` at or after the tick start, or with the lease
    still held, is a lost write; counted in the ledger, and asserted here.
    """
    ran = [result for result in body["results"] if result["status"] in ("success", "failed")]
    lost = []
    for result in ran:
        bot = db.botinstances.find_one({"_id": ObjectId(result["botInstanceId"])})
        last_run = None if bot is None else bot.get("lastRunAt")
        if last_run is not None and last_run.tzinfo is None:
            last_run = last_run.replace(tzinfo=UTC)
        if bot is None or bot.get("lockOwner") or last_run is None or last_run < since.replace(microsecond=0):
            lost.append(result["botInstanceId"])
        elif result["status"] == "failed" and bot.get("lastError") != result["error"]:
            lost.append(result["botInstanceId"])
    LEDGER.writes(len(ran), len(lost))
    assert not lost, f"results reported but not stored: {lost}"


def paper_entries_per_connection(db: Database, connection_ids: Iterable[ObjectId]) -> Counter[str]:
    """How many position-opening fills each paper connection booked."""
    wanted = {str(connection_id) for connection_id in connection_ids}
    counts: Counter[str] = Counter({connection: 0 for connection in wanted})
    for fill in db.paperfills.find({}):
        connection = str(fill.get("connectionId", ""))
        if connection in wanted and fill.get("kind", "entry") in ("entry", "ENTRY", "open", "OPEN"):
            counts[connection] += 1
    return counts


def check_one_order_each(db: Database, connection_ids: list[ObjectId]) -> Counter[str]:
    """At most one entry per connection (each connection runs one bot on one symbol)."""
    counts = paper_entries_per_connection(db, connection_ids)
    duplicates = sum(max(0, count - 1) for count in counts.values())
    LEDGER.orders(len(connection_ids), duplicates)
    assert duplicates == 0, f"duplicate orders: {counts}"
    return counts


class FuturesInThread:
    """The fake Binance futures server on its own event loop thread, so tests program its faults directly."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        import asyncio

        from tests.fakes.binance_futures import FakeBinanceFutures

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-futures", daemon=True)
        self._thread.start()
        self.fake = FakeBinanceFutures(api_key=api_key, api_secret=api_secret)
        self.url = self.run(self.fake.start())

    def run(self, coroutine: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a test control on the server's loop (its state is not shared across threads otherwise)."""

        async def invoke() -> Any:
            return function(*args, **kwargs)

        return self.run(invoke())

    def stop(self) -> None:
        self.run(self.fake.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
