"""The gateway's side of the operator controls: a halted bot's result says why, the tick's candles feed the
flash-crash trigger, ``/api/status`` shows the controls, and halts and trips reach operators' webhooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tradebot.v1 import common_pb2, executor_pb2

from services.common.circuit_breaker import BreakerSettings
from services.common.trading_controls import (
    BREAKER_ID,
    COLLECTION,
    EVENTS_COLLECTION,
    TRADING_HALTED,
    breaker_document,
    control_records,
    halt_document,
)
from services.notifications.egress import parse_networks
from services.notifications.registry import (
    new_operator_webhook_document,
    new_webhook_document,
)
from tests.gateway.conftest import STATUS_AUTH
from tests.notifications.receiver import Receiver, start_receiver

HALTED = "halted: exchange maintenance"


async def test_a_flat_halted_bot_is_skipped_with_the_reason_and_still_analysed(gateway):
    [bot_id] = gateway.add_bots(1)
    gateway.fakes.executor.entries_stopped[str(bot_id)] = HALTED

    body = await gateway.tick()

    [result] = body["results"]
    assert result["status"] == "skipped" and result["error"] == HALTED
    assert result["orderPlaced"] is False and result["hasPosition"] is False
    assert body["summary"]["skipped"] == 1 and body["summary"]["successful"] == 0
    bot = gateway.bot(bot_id)
    assert bot["lastError"] is None and "lockOwner" not in bot and bot["lastAnalysis"]["signal"]
    [analysis] = gateway.logs(bot_id, logType="ANALYSIS")
    assert analysis["data"]["decision"].startswith(HALTED)


async def test_a_halted_bot_with_a_position_is_served_and_says_why(gateway):
    [bot_id] = gateway.add_bots(1)
    await gateway.tick()   # the fake executor opens a position
    gateway.fakes.reset()
    gateway.fakes.executor.entries_stopped[str(bot_id)] = HALTED

    body = await gateway.tick()

    [result] = body["results"]
    assert result["status"] == "success" and result["hasPosition"] is True and result["error"] == HALTED
    assert gateway.bot(bot_id)["currentPosition"]["side"] == "LONG"


async def test_a_halted_bot_whose_position_closed_this_cycle_is_served_not_skipped(gateway):
    [bot_id] = gateway.add_bots(1)
    gateway.fakes.executor.entries_stopped[str(bot_id)] = HALTED
    gateway.fakes.executor.closed_trades[str(bot_id)] = [executor_pb2.ClosedTrade(
        symbol="BTCUSDT", side=common_pb2.SIDE_LONG, realized_pnl="-3", reason="FLATTENED", close_time_ms=1)]

    [result] = (await gateway.tick())["results"]

    assert result["status"] == "success" and result["error"] == HALTED and result["hasPosition"] is False
    assert gateway.bot(bot_id)["statistics"]["totalTrades"] == 1


async def test_a_flash_crash_in_the_ticks_candles_opens_the_breaker(gateway_factory):
    # The fake market's candles range 4 % of their open; they are old, hence the long cool-down here.
    breaker = BreakerSettings(flash_move=0.03, cooldown_seconds=10**9, flash_max_interval="1h")
    async with gateway_factory(breaker=breaker) as gateway:
        gateway.add_bots(1)
        await gateway.tick()
        document = gateway.db[COLLECTION].find_one({"_id": BREAKER_ID})
        assert document is not None and document["cause"] == "flash_crash" and document["by"].startswith("gateway@")
        assert document["evidence"]["symbol"] == "BTCUSDT" and document["evidence"]["interval"] == "5m"
        assert "moved 4.0% of its open inside one 5m candle" in document["reason"]

        gateway.db[COLLECTION].delete_many({})   # tradebot resume: the same candles do not trip it again
        await gateway.tick()
        assert gateway.db[COLLECTION].find_one({"_id": BREAKER_ID}) is None


async def test_status_shows_the_halts_and_the_breaker(gateway):
    now = datetime.now(UTC)
    for document in (halt_document(user_id=None, reason="incident 42", by="alice", now=now, flatten=True),
                     halt_document(user_id=gateway.user_id, reason="review", by="bob", now=now, flatten=False),
                     breaker_document(cause="exchange_errors", reason="5 accounts failed", evidence={"n": 5},
                                      by="executor@x", now=now, cooldown_seconds=600)):
        gateway.db[COLLECTION].insert_one(document)

    report = (await gateway.http.get("/api/status", headers=STATUS_AUTH)).json()

    controls = report["tradingControls"]
    assert controls["halted"] is True
    assert controls["fleetHalt"]["reason"] == "incident 42" and controls["fleetHalt"]["flatten"] is True
    assert controls["fleetHalt"]["by"] == "alice"
    assert controls["userHalts"] == [{"userId": str(gateway.user_id), "reason": "review", "by": "bob",
                                      "since": controls["userHalts"][0]["since"], "flatten": False}]
    assert controls["circuitBreaker"]["open"] is True and controls["circuitBreaker"]["cause"] == "exchange_errors"
    until = datetime.fromisoformat(controls["circuitBreaker"]["until"].replace("Z", "+00:00"))
    assert abs(until - (now + timedelta(seconds=600))) < timedelta(seconds=1)


async def test_control_events_reach_operator_and_user_webhooks_once_after_a_tick(gateway_factory):
    receiver = Receiver()
    server, task = await start_receiver(receiver)
    loopback = parse_networks("127.0.0.0/8")
    try:
        async with gateway_factory(webhook_allowed_networks=loopback) as gateway:
            gateway.add_bots(1)
            operator = new_operator_webhook_document(receiver.url("/ops"), allowed_networks=loopback)
            user_hook = new_webhook_document(gateway.user_id, receiver.url("/user"), allowed_networks=loopback,
                                             events=["SAFETY"])
            receiver.secrets["/ops"], receiver.secrets["/user"] = operator["secret"], user_hook["secret"]
            gateway.db.webhooks.insert_many([operator, user_hook])
            now = datetime.now(UTC)
            for user in (None, gateway.user_id):   # a fleet halt, then a halt of this user (as the CLI writes them)
                event, trade_log = control_records(TRADING_HALTED, user_id=user, message="Trading halted",
                                                   data={"reason": "incident"}, now=now)
                gateway.db[EVENTS_COLLECTION].insert_one(event)
                gateway.db.tradelogs.insert_one(trade_log)

            await gateway.tick()
            to_operator = await receiver.wait_for("/ops", 2, timeout=5)
            to_user = await receiver.wait_for("/user", 1, timeout=5)
            await gateway.tick()   # each event goes out once
            pending = gateway.db[EVENTS_COLLECTION].count_documents({"notifiedAt": None})
    finally:
        server.should_exit = True
        await task
    assert all(delivery.signature_valid for delivery in to_operator + to_user)
    assert len(receiver.for_path("/ops")) == 2 and len(receiver.for_path("/user")) == 1
    payloads = [json.loads(delivery.body) for delivery in to_operator]
    assert {payload["action"] for payload in payloads} == {TRADING_HALTED}
    assert {payload["severity"] for payload in payloads} == {"CRITICAL"}
    assert {payload["userId"] for payload in payloads} == {None, str(gateway.user_id)}
    assert json.loads(to_user[0].body)["userId"] == str(gateway.user_id)
    assert pending == 0
