"""The real processes: one tick id followed through the gateway's and the executor's JSON logs, and both
processes' /metrics endpoints scraped after the tick."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from services.devstack.stack import Stack, StackConfig, StackPorts
from tests.e2e.conftest import E2EStack
from tests.observability.scrape import Samples, value
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e


class MeteredStack(E2EStack):
    """The e2e stack's helpers, on a stack whose gateway and executor serve /metrics (AI off: no OpenAI)."""

    gateway_metrics: int
    executor_metrics: int

    def scrape(self, port: int) -> Samples:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def json_lines(self, name: str) -> list[dict[str, object]]:
        lines = []
        for line in self.stack.processes[name].lines:
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


@pytest.fixture(scope="module")
def metered(mongo_uri: str) -> Iterator[MeteredStack]:
    cron_secret = "obs-cron-" + secrets.token_urlsafe(32)
    fernet_key = Fernet.generate_key().decode()
    gateway_metrics, executor_metrics = free_port(), free_port()
    database = f"obs_{uuid.uuid4().hex[:10]}"
    config = StackConfig(
        mongodb_uri=mongo_uri, cron_secret=cron_secret, credentials_keys=fernet_key, mongodb_db=database,
        ports=StackPorts.free(),
        env={"gateway": {"TICK_USE_AI": "false", "METRICS_PORT": str(gateway_metrics)},
             "executor": {"METRICS_PORT": str(executor_metrics)}},
    )  # fmt: skip
    stack = Stack(config)
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    try:
        stack.start()
        metered = MeteredStack(stack, None, client[database], cron_secret, Fernet(fernet_key.encode()), "")  # type: ignore[arg-type]
        metered.gateway_metrics, metered.executor_metrics = gateway_metrics, executor_metrics
        yield metered
    finally:
        stack.stop()
        client.close()


def test_one_tick_id_runs_through_both_services_logs_and_metrics(metered: MeteredStack):
    strategy, symbol, interval, _ = metered.find_tradeable()
    user_id, _ = metered.add_user()
    bot_id = metered.add_bot(user_id, strategy, symbol=symbol, config={"interval": interval, "confidenceThreshold": 1})

    response = metered.tick()

    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["orderPlaced"] is True, result
    record = _wait_for_tick_record(metered)
    tick_id = record["tickId"]
    gateway_lines = [line for line in metered.json_lines("gateway") if line.get("tickId") == tick_id]
    executor_lines = [line for line in metered.json_lines("executor") if line.get("tickId") == tick_id]
    assert any(line["message"] == "tick finished" for line in gateway_lines), metered.stack.output()
    assert executor_lines, metered.stack.output()
    assert all(line["service"] == "executor" for line in executor_lines)
    assert {line.get("botInstanceId") for line in executor_lines} == {str(bot_id)}

    gateway = metered.scrape(metered.gateway_metrics)
    assert value(gateway, "tradebot_ticks_total", outcome="ok") == 1
    assert value(gateway, "tradebot_bot_results_total", status="success") == 1
    executor = metered.scrape(metered.executor_metrics)
    side = "LONG" if result["action"] == "BUY" else "SHORT"
    assert value(executor, "tradebot_orders_placed_total", mode="paper", side=side) == 1
    assert value(executor, "tradebot_grpc_server_handling_seconds_count",
                 method="/tradebot.v1.Executor/RunCycle") == 1  # fmt: skip


def _wait_for_tick_record(metered: MeteredStack) -> dict[str, object]:
    # Written just after the response went out.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = metered.db.ticks.find_one({"outcome": "ok"})
        if record is not None:
            return record
        time.sleep(0.05)
    pytest.fail("no ticks document after the tick")
