"""Webhook deliveries against a real local receiver that verifies every signature."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from services.common.metrics import WEBHOOK_DELIVERIES_TOTAL
from services.notifications.dispatcher import RetryPolicy, WebhookDispatcher
from services.notifications.egress import parse_networks
from services.notifications.registry import new_webhook_document
from tests.notifications.receiver import Receiver

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.2, request_timeout=1.0)
# The receivers here listen on loopback, which webhooks may only reach when the operator allows it.
LOOPBACK = parse_networks("127.0.0.0/8")




async def register(db: AsyncDatabase, receiver: Receiver, path: str, user_id: ObjectId, **options) -> dict:
    document = new_webhook_document(user_id, receiver.url(path), allowed_networks=LOOPBACK, **options)
    await db.webhooks.insert_one(document)
    receiver.secrets[path] = document["secret"]
    return document


def trade_log(user_id: ObjectId, bot_id: ObjectId, log_type: str, severity: str, action: str) -> dict:
    return {
        "_id": ObjectId(),
        "userId": user_id,
        "botInstanceId": bot_id,
        "logType": log_type,
        "severity": severity,
        "action": action,
        "message": f"{action} on BTCUSDT",
        "data": {"price": "64250.10", "quantity": "0.010"},
        "createdAt": datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    }


async def test_trade_safety_and_error_events_arrive_signed_and_routine_ones_do_not(db, receiver) -> None:
    user, bot, other_bot = ObjectId(), ObjectId(), ObjectId()
    await register(db, receiver, "/user", user)
    await register(db, receiver, "/bot", user, bot_instance_id=bot, events=["SAFETY"])
    dispatcher = WebhookDispatcher(db, allowed_networks=LOOPBACK, retry=FAST_RETRY)
    entries = [
        trade_log(user, bot, "ANALYSIS", "INFO", "HOLD"),
        trade_log(user, bot, "TRADE", "INFO", "OPEN_LONG"),
        trade_log(user, bot, "SAFETY", "CRITICAL", "EMERGENCY_STOP"),
        trade_log(user, other_bot, "ERROR", "ERROR", "ORDER_FAILED"),
        trade_log(ObjectId(), bot, "TRADE", "INFO", "OPEN_SHORT"),  # someone else's: no webhook
    ]
    try:
        assert dispatcher.enqueue(entries) == 4
        assert await dispatcher.drain(10)
    finally:
        await dispatcher.close()

    user_hook = receiver.for_path("/user")
    assert all(delivery.signature_valid for delivery in receiver.deliveries)
    assert sorted(json.loads(d.body)["event"] for d in user_hook) == ["ERROR", "SAFETY", "TRADE"]
    trade = next(json.loads(d.body) for d in user_hook if json.loads(d.body)["event"] == "TRADE")
    assert trade["action"] == "OPEN_LONG"
    assert trade["botInstanceId"] == str(bot)
    assert trade["data"] == {"price": "64250.10", "quantity": "0.010"}
    assert trade["createdAt"] == "2026-11-25T12:00:00+00:00"
    bot_hook = [json.loads(d.body) for d in receiver.for_path("/bot")]
    assert [payload["action"] for payload in bot_hook] == ["EMERGENCY_STOP"]


async def test_a_500_is_retried_until_the_receiver_accepts(db, receiver) -> None:
    user, bot = ObjectId(), ObjectId()
    await register(db, receiver, "/flaky", user)
    receiver.script["/flaky"] = [500, 503]
    dispatcher = WebhookDispatcher(db, allowed_networks=LOOPBACK, retry=FAST_RETRY)
    try:
        dispatcher.enqueue([trade_log(user, bot, "TRADE", "INFO", "OPEN_LONG")])
        deliveries = await receiver.wait_for("/flaky", 3)
        assert await dispatcher.drain(5)
    finally:
        await dispatcher.close()
    assert len(receiver.for_path("/flaky")) == 3
    assert all(delivery.signature_valid for delivery in deliveries)
    # One delivery id across the retries, so the receiver can de-duplicate.
    assert len({d.headers["x-tradebot-delivery"] for d in deliveries}) == 1


async def test_a_400_is_not_retried_and_the_log_names_no_secret(db, receiver, caplog) -> None:
    user, bot = ObjectId(), ObjectId()
    document = await register(db, receiver, "/refuses/token-in-path", user)
    receiver.script["/refuses/token-in-path"] = [400, 400, 400]
    dispatcher = WebhookDispatcher(db, allowed_networks=LOOPBACK, retry=FAST_RETRY)
    try:
        with caplog.at_level("INFO", logger="services.notifications"):
            dispatcher.enqueue([trade_log(user, bot, "ERROR", "ERROR", "ORDER_FAILED")])
            assert await dispatcher.drain(5)
            await asyncio.sleep(FAST_RETRY.initial_backoff * 3)  # long enough for a retry to have shown up
    finally:
        await dispatcher.close()
    assert len(receiver.for_path("/refuses/token-in-path")) == 1
    rejected = [record for record in caplog.records if record.getMessage() == "webhook rejected the event"]
    assert len(rejected) == 1 and rejected[0].status == 400
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    assert document["secret"] not in logged and "token-in-path" not in logged


async def test_enqueue_returns_at_once_while_the_receiver_hangs(db, receiver) -> None:
    user, bot = ObjectId(), ObjectId()
    await register(db, receiver, "/hangs", user)
    receiver.hang_paths.add("/hangs")
    dispatcher = WebhookDispatcher(db, allowed_networks=LOOPBACK, retry=FAST_RETRY, queue_size=2, workers=1)
    try:
        entries = [trade_log(user, bot, "TRADE", "INFO", f"OPEN_{index}") for index in range(5)]
        started = time.perf_counter()
        queued = dispatcher.enqueue(entries[:1])
        await receiver.wait_for("/hangs", 1)  # the single worker is now stuck on the receiver
        queued += dispatcher.enqueue(entries[1:])
        elapsed = time.perf_counter() - started
    finally:
        receiver.release.set()
        await dispatcher.close(timeout=0.1)
    # The tick side never waits on the receiver; past the bounded queue, events are dropped.
    assert elapsed < 1.0
    assert queued == 3


async def test_a_dead_receiver_gives_up_after_bounded_retries(db) -> None:
    user, bot = ObjectId(), ObjectId()
    document = new_webhook_document(user, "http://127.0.0.1:9/nothing-listens", allowed_networks=LOOPBACK)
    await db.webhooks.insert_one(document)
    dispatcher = WebhookDispatcher(db, allowed_networks=LOOPBACK, retry=FAST_RETRY)
    failed_before = WEBHOOK_DELIVERIES_TOTAL.labels(outcome="failed")._value.get()
    started = time.perf_counter()
    try:
        dispatcher.enqueue([trade_log(user, bot, "TRADE", "INFO", "OPEN_LONG")])
        assert await dispatcher.drain(5)
    finally:
        await dispatcher.close()
    assert time.perf_counter() - started < 3
    assert WEBHOOK_DELIVERIES_TOTAL.labels(outcome="failed")._value.get() == failed_before + 1
