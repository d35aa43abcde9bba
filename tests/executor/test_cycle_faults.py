"""The cycle's reactions to broker failures, with a paper broker that fails on purpose.

The faults are injected behind the project's own Broker interface; the
bookkeeping underneath is the real paper broker on the real wire server.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pytest
from bson import ObjectId

from services.common.errors import FailedPrecondition, Unavailable
from services.common.jsonlog import JsonFormatter
from services.executor.account_cache import AccountCache
from services.executor.brokers.factory import BrokerFactory
from services.executor.brokers.paper import PaperBroker
from services.executor.connections import ConnectionRepository, ExchangeConnection
from services.executor.credentials import CredentialVault
from services.executor.cycle import CycleRunner
from tests.executor.builders import cycle_input

LOG_SECRET = "Qm7-distinctive-log-secret-31337"


class FaultyPaperBroker(PaperBroker):
    def __init__(self, *args: Any, fail: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail = fail

    async def protect(self, *args: Any, **kwargs: Any):
        if "protect" in self.fail:
            raise FailedPrecondition("Binance error -2021: Order would immediately trigger.")
        return await super().protect(*args, **kwargs)

    async def open_position(self, order):
        if "open" in self.fail:
            raise FailedPrecondition("Binance error -2019: Margin is insufficient.")
        if "open-unknown" in self.fail:   # the order went through but the answer was lost
            await super().open_position(order)
            raise Unavailable("Binance error -1007: Timeout waiting for response; execution status unknown")
        return await super().open_position(order)

    async def close_position(self, symbol, client_order_id, reason):
        if "close" in self.fail:
            raise Unavailable("Binance unavailable: HTTP 502")
        return await super().close_position(symbol, client_order_id, reason)

    async def account(self):
        if "account" in self.fail:
            raise Unavailable("Binance unavailable: HTTP 503")
        return await super().account()


class FaultyFactory(BrokerFactory):
    def __init__(self, db, vault, settings, fail: set[str]) -> None:
        super().__init__(db, vault, settings)
        self.fail = fail

    async def broker_for(self, connection: ExchangeConnection):
        await super().broker_for(connection)   # decrypts the credentials as the real path does
        return FaultyPaperBroker(self._db, connection.id, initial_balance=Decimal(10000),
                                 taker_fee=Decimal("0.0005"), fail=self.fail)


@pytest.fixture
def runner_with(db, executor_settings):
    def build(fail: set[str]) -> CycleRunner:
        vault = CredentialVault(executor_settings.credentials_keys)
        return CycleRunner(ConnectionRepository(db), FaultyFactory(db, vault, executor_settings, fail), AccountCache())
    return build


async def test_stop_loss_that_cannot_be_placed_closes_the_position_at_once(runner_with, paper_connection, db):
    user_id, _ = paper_connection
    reply = await runner_with({"protect"}).run(cycle_input(user_id=user_id))
    assert reply.order.placed and not reply.has_position
    [trade] = reply.closed_trades
    assert trade.reason == "STOP_LOSS_NOT_PLACED" and trade.realized_pnl == "-10"   # two 5 USDT fees
    critical = [e for e in reply.events if e.severity == "CRITICAL"]
    assert critical and "-2021" in critical[0].message and "closed at market" in critical[0].message
    assert await db.paperpositions.count_documents({}) == 0


async def test_rejected_entry_is_an_error_event_and_no_position(runner_with, paper_connection, db):
    user_id, _ = paper_connection
    reply = await runner_with({"open"}).run(cycle_input(user_id=user_id))
    assert not reply.order.placed and not reply.has_position
    [error] = [e for e in reply.events if e.log_type == "ERROR"]
    assert error.severity == "ERROR" and "-2019" in error.message and "Margin is insufficient" in error.message
    assert "retry next cycle" in reply.decision
    assert await db.paperpositions.count_documents({}) == 0


async def test_entry_with_unknown_outcome_is_found_and_protected(runner_with, paper_connection, db):
    user_id, _ = paper_connection
    reply = await runner_with({"open-unknown"}).run(cycle_input(user_id=user_id))
    assert reply.order.placed and reply.has_position and reply.position.stop_loss == "49000"
    assert not [e for e in reply.events if e.log_type == "ERROR"]
    assert (await db.paperpositions.find_one({}))["stopLoss"] == "49000"


async def test_failed_emergency_close_is_one_critical_safety_event_and_the_stop_stays(runner_with, paper_connection, db):
    from tests.executor.builders import config
    user_id, _ = paper_connection
    tight = config(max_daily_loss="100")
    opened = await runner_with(set()).run(cycle_input(user_id=user_id, tick_id="t1", bot_config=tight))
    reply = await runner_with({"close"}).run(cycle_input(user_id=user_id, tick_id="t2", price="49100", bot_config=tight,
                                                     stored_position=opened.position))
    assert reply.safety.tripped and reply.safety.pause_bot and not reply.safety.position_closed
    [safety] = [e for e in reply.events if e.log_type == "SAFETY"]
    assert safety.action == "EMERGENCY_STOP" and safety.severity == "CRITICAL"
    assert safety.data["rule"] == "DAILY_LOSS" and "502" in safety.data["closeError"]
    assert reply.has_position and reply.position.stop_loss == "49000"       # still protected
    assert (await db.paperpositions.find_one({}))["stopLoss"] == "49000"


async def test_unreadable_account_opens_nothing(runner_with, paper_connection, db):
    user_id, _ = paper_connection
    with pytest.raises(Unavailable):
        await runner_with({"account"}).run(cycle_input(user_id=user_id))
    assert await db.paperpositions.count_documents({}) == 0


async def test_no_log_line_carries_a_decrypted_secret(runner_with, db, fernet_key):
    from cryptography.fernet import Fernet

    from services.executor.admin import store_connection_async
    user_id = str(ObjectId())
    await store_connection_async(db, user_id, "paper", "log-api-key-9999", LOG_SECRET, Fernet(fernet_key.encode()))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        runner = runner_with({"protect"})            # a path full of CRITICAL logs
        await runner.run(cycle_input(user_id=user_id, tick_id="log-1"))
        await runner.run(cycle_input(user_id=user_id, tick_id="log-2", confidence=10))
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    assert records, "the cycle logs its decisions"
    formatter = JsonFormatter("executor")
    for record in records:
        raw = json.dumps({**record.__dict__, "message": record.getMessage()}, default=str)
        assert LOG_SECRET not in raw and fernet_key not in raw
        assert LOG_SECRET not in formatter.format(record)
