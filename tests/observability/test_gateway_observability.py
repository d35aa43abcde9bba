"""A tick through the real gateway app leaves metrics, a ``ticks`` record and signed webhooks behind;
``/api/status`` serves the monitoring report behind its own token (never the cron secret)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from bson import ObjectId
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure

from services.devstack.seed import PRESET_BOTS, bot_document
from services.gateway.app import create_app
from services.gateway.repository import BotRepository

from services.notifications.egress import parse_networks
from services.notifications.registry import new_webhook_document
from services.notifications.signing import EVENT_HEADER
from tests.gateway.conftest import AUTH, STATUS_AUTH, STATUS_TOKEN, gateway_settings
from tests.notifications.receiver import Receiver, start_receiver
from tests.observability.scrape import moved, scrape, value
from tests.support.processes import free_port


async def test_a_tick_moves_the_tick_metrics_and_bot_result_counters(gateway, metrics_port):
    ok_bot, failing_bot = gateway.add_bots(2)
    gateway.fakes.executor.unavailable.add(str(failing_bot))
    before = await scrape(metrics_port)
    started = time.time()

    body = await gateway.tick()

    after = await scrape(metrics_port)
    assert body["summary"]["successful"] == 1 and body["summary"]["failed"] == 1
    assert moved(before, after, "tradebot_ticks_total", outcome="ok") == 1
    assert moved(before, after, "tradebot_bot_results_total", status="success") == 1
    assert moved(before, after, "tradebot_bot_results_total", status="failed") == 1
    assert moved(before, after, "tradebot_tick_duration_seconds_count") == 1
    assert value(after, "tradebot_last_tick_timestamp_seconds") >= started

    # The tick is recorded once, under the id every gRPC call carried.
    [tick_id] = gateway.fakes.tick_ids()
    [record] = list(gateway.db.ticks.find({"tickId": tick_id}))
    assert record["outcome"] == "ok"
    assert record["summary"] == body["summary"]
    assert record["finishedAt"] >= record["startedAt"]
    assert {"claimSeconds", "servicesSeconds", "writeSeconds", "tickSeconds", "botCycleP50Seconds",
            "botCycleP95Seconds", "botCycleP99Seconds"} <= set(record["timings"])


async def test_a_tick_without_active_bots_counts_as_no_bots(gateway, metrics_port):
    gateway.add_bots(1, status="PAUSED")
    before = await scrape(metrics_port)
    body = await gateway.tick()
    after = await scrape(metrics_port)
    assert body["message"] == "No active bots"
    assert moved(before, after, "tradebot_ticks_total", outcome="no_bots") == 1
    assert moved(before, after, "tradebot_bot_results_total", status="success") == 0
    assert gateway.db.ticks.find_one({"outcome": "no_bots"}, sort=[("finishedAt", -1)]) is not None


async def test_an_unreachable_database_counts_as_db_unavailable(gateway_factory, metrics_port):
    dead = f"mongodb://127.0.0.1:{free_port()}"
    async with gateway_factory(mongodb_uri=dead, mongodb_timeout_ms=300) as gateway:
        before = await scrape(metrics_port)
        response = await gateway.http.get("/api/cron/run-bots", headers=AUTH)
        after = await scrape(metrics_port)
    assert response.status_code == 503
    assert moved(before, after, "tradebot_ticks_total", outcome="db_unavailable") == 1
    assert value(after, "tradebot_last_tick_timestamp_seconds") > 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {STATUS_TOKEN}x"},
                                     AUTH])   # the cron secret, which Upstash holds, does not open it
async def test_status_refuses_a_caller_without_the_status_token(gateway, headers):
    response = await gateway.http.get("/api/status", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"success": False, "error": "Unauthorized"}


async def test_status_is_closed_when_no_status_token_is_set(gateway_factory):
    async with gateway_factory(status_token=None) as gateway:
        for headers in ({}, AUTH, STATUS_AUTH):
            assert (await gateway.http.get("/api/status", headers=headers)).status_code == 401


async def test_status_reports_bots_logs_and_the_last_tick(gateway):
    gateway.add_bots(2)
    gateway.add_bots(1, status="PAUSED")
    await gateway.tick()
    [tick_id] = gateway.fakes.tick_ids()

    response = await gateway.http.get("/api/status", headers=STATUS_AUTH)

    assert response.status_code == 200
    report = response.json()
    assert report["botsByStatus"] == {"ACTIVE": 2, "PAUSED": 1}
    assert len(report["openPositions"]) == 2               # the fake executor opened one per ACTIVE bot
    assert report["tradeLogsLast24h"]["ANALYSIS"] == 2
    last = report["lastTick"]
    assert last["tickId"] == tick_id and last["outcome"] == "ok" and last["source"] == "ticks"
    assert last["summary"]["totalBots"] == 2


def _tradelog_reads() -> float:
    labels = {"command": "find", "collection": "tradelogs"}
    return REGISTRY.get_sample_value("tradebot_mongo_commands_total", labels) or 0.0


async def test_webhook_receives_signed_trade_and_safety_events_after_the_tick(gateway_factory):
    receiver = Receiver()
    server, task = await start_receiver(receiver)
    loopback = parse_networks("127.0.0.0/8")   # the receiver runs here; webhooks reach loopback only if allowed
    try:
        async with gateway_factory(webhook_allowed_networks=loopback) as gateway:
            traded, tripped = gateway.add_bots(2)
            gateway.fakes.executor.safety_trips.add(str(tripped))
            hook = new_webhook_document(gateway.user_id, receiver.url("/hooks/me"), allowed_networks=loopback)
            receiver.secrets["/hooks/me"] = hook["secret"]
            gateway.db.webhooks.insert_one(hook)
            reads_before = _tradelog_reads()

            await gateway.tick()

            deliveries = await receiver.wait_for("/hooks/me", 2, timeout=5)
            stored = gateway.db.tradelogs.find_one({"logType": "SAFETY", "botInstanceId": tripped})
    finally:
        server.should_exit = True
        await task
    # Every write succeeded: the events come from the tick's own logs, none is read back.
    assert _tradelog_reads() == reads_before
    assert all(delivery.signature_valid for delivery in deliveries)
    by_event = {delivery.headers[EVENT_HEADER.lower()]: delivery for delivery in deliveries}
    assert set(by_event) == {"TRADE", "SAFETY"}
    safety = json.loads(by_event["SAFETY"].body)
    assert safety["botInstanceId"] == str(tripped) and safety["action"] == "EMERGENCY_STOP"
    assert safety["severity"] == "CRITICAL"
    assert stored is not None and str(stored["_id"]) == safety["tradeLogId"]   # sent after it was written
    trade = json.loads(by_event["TRADE"].body)
    assert trade["botInstanceId"] == str(traded) and trade["action"] == "OPEN_LONG"


class _UnwritableRepository(BotRepository):
    """A database that accepts the claim and then refuses the results."""

    async def write_results(self, tick_id, updates, logs):  # type: ignore[no-untyped-def]
        raise ConnectionFailure("connection reset while writing")


async def test_results_that_cannot_be_saved_count_as_persist_failed(
    mongo_uri, mongo_client, mongo_db_name, fakes, metrics_port
):
    settings = gateway_settings(mongo_uri, mongo_db_name, fakes)
    repository = _UnwritableRepository(AsyncMongoClient(mongo_uri, tz_aware=True), mongo_db_name)
    mongo_client[mongo_db_name].botinstances.insert_one(bot_document(ObjectId(), PRESET_BOTS[0]))
    app = create_app(settings, repository=repository)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                before = await scrape(metrics_port)
                response = await http.get("/api/cron/run-bots", headers=AUTH)
                after = await scrape(metrics_port)
    finally:
        await repository.close()
    assert response.status_code == 200 and response.json()["success"] is False
    assert moved(before, after, "tradebot_ticks_total", outcome="persist_failed") == 1
    assert moved(before, after, "tradebot_ticks_total", outcome="ok") == 0
    record = mongo_client[mongo_db_name].ticks.find_one({})
    assert record is not None and record["outcome"] == "persist_failed"
    assert record["error"].startswith("Results could not be saved")
