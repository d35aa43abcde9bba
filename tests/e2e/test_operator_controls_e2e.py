"""The kill switch and the fleet circuit breaker through the real processes: the ``tradebot`` command, the
gateway, the executor (paper accounts, and testnet accounts on the fake Binance futures server), MongoDB.

- ``tradebot halt`` then a tick: no new entry anywhere, the open position still audited (its missing stop is
  put back); ``tradebot resume`` then a tick: entries come back.
- The exchange failing for several accounts at once trips the breaker (entries paused for everyone, the paper
  accounts included, until ``tradebot resume``); one account failing tick after tick does not.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo import MongoClient

from services.common.trading_controls import BREAKER_ID, COLLECTION
from services.devstack.stack import Stack, StackConfig, StackPorts
from services.executor.admin import connection_document
from tests.cli.conftest import TRADEBOT
from tests.e2e.conftest import E2EStack
from tests.reliability.support import FuturesInThread
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.e2e

API_SECRET = "E2EBREAKERSECRET" + secrets.token_hex(16)
FAILING_ACCOUNTS = 3
BINANCE_INTERNAL_ERROR = "Internal error; unable to process your request. Please try again."


class ControlsStack(E2EStack):
    futures: FuturesInThread

    def cli(self, *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if key not in ("MONGODB_URI", "MONGODB_DB")}
        env.update({"MONGODB_URI": self.stack.config.mongodb_uri, "MONGODB_DB": self.stack.config.mongodb_db,
                    "TRADEBOT_OPERATOR": "e2e-operator"})
        done = subprocess.run([*TRADEBOT, *args], cwd=REPO_ROOT, env=env, input=input, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    def results(self) -> dict[str, dict[str, Any]]:
        response = self.tick()
        assert response.status_code == 200, response.text
        return {result["botInstanceId"]: result for result in response.json()["results"]}

    def add_testnet_user(self) -> ObjectId:
        api_key = "E2EKEY" + uuid.uuid4().hex
        self.futures.call(self.futures.fake.add_account, api_key, API_SECRET)
        user_id, _ = self.add_user(with_paper_connection=False)
        self.db.exchangeconnections.insert_one(connection_document(user_id, "testnet", api_key, API_SECRET,
                                                                   self.fernet))
        return user_id

    def exchange_fails_account_reads(self) -> None:
        self.futures.call(self.futures.fake.fail_next, "GET", "/fapi/v3/account", status=503, code=-1001,
                          msg=BINANCE_INTERNAL_ERROR, times=10_000)

    def exchange_recovers(self) -> None:
        self.futures.call(self.futures.fake.faults.clear)

    def breaker(self, wait_seconds: float = 0.0) -> dict[str, Any] | None:
        """The breaker document, waiting up to ``wait_seconds`` for it (trips are recorded beside the cycles)."""
        return eventually(lambda: self.db[COLLECTION].find_one({"_id": BREAKER_ID}), wait_seconds)


def eventually(probe: Callable[[], Any], wait_seconds: float = 5.0) -> Any:
    """``probe()`` once it is truthy, or its last answer after ``wait_seconds``."""
    ends = time.monotonic() + wait_seconds
    while True:
        answer = probe()
        if answer or time.monotonic() >= ends:
            return answer
        time.sleep(0.1)


@pytest.fixture(scope="module")
def controls_stack(mongo_uri: str) -> Iterator[ControlsStack]:
    cron_secret = "e2e-cron-" + secrets.token_urlsafe(32)
    fernet_key = Fernet.generate_key().decode()
    futures = FuturesInThread("E2EKEY-default", API_SECRET)
    database = f"e2e_controls_{uuid.uuid4().hex[:10]}"
    config = StackConfig(
        mongodb_uri=mongo_uri, cron_secret=cron_secret, credentials_keys=fernet_key, mongodb_db=database,
        ports=StackPorts.free(),
        env={
            # One account read per cycle (no user-data streams): an exchange failure reaches every account's cycle.
            "executor": {"BINANCE_FUTURES_TESTNET_URL": futures.url, "BINANCE_USER_STREAMS": "false",
                         "BREAKER_FAILING_ACCOUNTS": str(FAILING_ACCOUNTS), "BREAKER_WINDOW_SECONDS": "60",
                         "BREAKER_COOLDOWN_SECONDS": "900"},
            "gateway": {"TICK_USE_AI": "false", "TICK_DEADLINE_SECONDS": "60"},
        },
    )
    stack = Stack(config)
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    try:
        stack.start()
        controls = ControlsStack(stack, None, client[database], cron_secret, Fernet(fernet_key.encode()), "")  # type: ignore[arg-type]
        controls.futures = futures
        yield controls
    finally:
        stack.stop()
        futures.stop()
        client.close()


@pytest.fixture
def fresh(controls_stack: ControlsStack) -> Iterator[ControlsStack]:
    controls_stack.reset()
    for name in (COLLECTION, "tradingcontrolevents", "breakerevidence"):
        controls_stack.db[name].delete_many({})
    controls_stack.exchange_recovers()
    yield controls_stack
    controls_stack.exchange_recovers()


def test_halt_stops_every_entry_keeps_positions_audited_and_resume_brings_entries_back(fresh):
    strategy, symbol, interval, _ = fresh.find_tradeable()
    config = {"interval": interval, "confidenceThreshold": 1}
    holder_user, holder_connection = fresh.add_user()
    holder = fresh.add_bot(holder_user, strategy, symbol=symbol, config=config)
    opened = fresh.results()[str(holder)]
    assert opened["orderPlaced"] is True, opened

    fresh.cli("halt", "--reason", "e2e maintenance")
    newcomer_user, _ = fresh.add_user()
    newcomer = fresh.add_bot(newcomer_user, strategy, symbol=symbol, config=config)
    # The holder's stop vanished from its (paper) exchange: the audit must put it back while trading is halted.
    fresh.db.paperpositions.update_one({"connectionId": str(holder_connection)}, {"$unset": {"stopLossId": ""}})

    halted = fresh.results()

    assert halted[str(newcomer)]["status"] == "skipped" and halted[str(newcomer)]["orderPlaced"] is False
    assert halted[str(newcomer)]["error"] == "halted: e2e maintenance"
    assert halted[str(holder)]["status"] == "success" and halted[str(holder)]["hasPosition"] is True
    holder_error = halted[str(holder)]["error"]   # what the audit did, then why no entry could be made
    assert "was missing; re-placed" in holder_error and holder_error.endswith("; halted: e2e maintenance")
    assert fresh.db.paperpositions.count_documents({}) == 1   # no new position anywhere
    assert fresh.db.paperpositions.find_one({"connectionId": str(holder_connection)})["stopLossId"]
    assert fresh.logs(holder, action="STOP_LOSS_RESTORED")
    assert fresh.logs(newcomer, action="ENTRY_HALTED")
    assert fresh.db.tradelogs.find_one({"action": "TRADING_HALTED", "severity": "CRITICAL"})["data"]["by"] == \
        "e2e-operator"

    fresh.cli("resume")
    resumed = fresh.results()

    assert resumed[str(newcomer)]["status"] == "success" and resumed[str(newcomer)]["orderPlaced"] is True
    assert fresh.db.paperpositions.count_documents({}) == 2


def test_exchange_failing_for_many_accounts_pauses_entries_for_everyone_until_resumed(fresh):
    live_bots = [fresh.add_bot(fresh.add_testnet_user(), 1, symbol="BTCUSDT") for _ in range(FAILING_ACCOUNTS)]
    fresh.exchange_fails_account_reads()

    failing = fresh.results()

    for bot in live_bots:
        assert failing[str(bot)]["status"] == "failed" and "UNAVAILABLE" in failing[str(bot)]["error"], failing[str(bot)]
    breaker = fresh.breaker(wait_seconds=5)
    assert breaker is not None and breaker["cause"] == "exchange_errors", breaker
    assert breaker["evidence"]["failingAccounts"] == FAILING_ACCOUNTS
    # Its record and the CRITICAL log line with the evidence follow the document by a moment.
    assert eventually(lambda: fresh.db.tradelogs.find_one({"action": "CIRCUIT_BREAKER_TRIPPED", "severity": "CRITICAL"}))
    assert eventually(lambda: "circuit breaker tripped" in fresh.stack.output())

    fresh.exchange_recovers()
    strategy, symbol, interval, _ = fresh.find_tradeable()
    witness_user, _ = fresh.add_user()   # a paper account, which the exchange never failed
    witness = fresh.add_bot(witness_user, strategy, symbol=symbol,
                            config={"interval": interval, "confidenceThreshold": 1})
    paused = fresh.results()

    assert paused[str(witness)]["status"] == "skipped" and paused[str(witness)]["orderPlaced"] is False
    assert paused[str(witness)]["error"].startswith("circuit breaker open: the exchange failed for 3 accounts")

    fresh.cli("resume")
    resumed = fresh.results()

    assert resumed[str(witness)]["orderPlaced"] is True, resumed[str(witness)]
    assert fresh.breaker() is None


def test_one_account_failing_tick_after_tick_does_not_trip_it(fresh):
    strategy, symbol, interval, _ = fresh.find_tradeable()
    witness_user, _ = fresh.add_user()
    witness = fresh.add_bot(witness_user, strategy, symbol=symbol,
                            config={"interval": interval, "confidenceThreshold": 1})
    bad = fresh.add_bot(fresh.add_testnet_user(), 1, symbol=symbol)
    fresh.exchange_fails_account_reads()

    for tick in range(FAILING_ACCOUNTS + 1):
        results = fresh.results()
        assert results[str(bad)]["status"] == "failed", results[str(bad)]
        if tick == 0:
            assert results[str(witness)]["orderPlaced"] is True, results[str(witness)]

    assert fresh.breaker(wait_seconds=1) is None
    assert fresh.db.breakerevidence.count_documents({}) == 1
