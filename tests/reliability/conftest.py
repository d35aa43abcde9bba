"""One real stack for the reliability tests, shared by all of them (it is reset between tests).

Like tests/e2e, but every outside system is a local fake the tests can break: the market
service reads the fake Binance market-data server (in this process, faults programmable per
path), the executor's testnet connections reach the fake Binance futures server, the strategy
reaches the fake OpenAI server, and the secrets are distinctive so a grep finds any leak.
Faults that need other settings (a tiny deadline, a hung address, a killable database) start an
extra gateway or service next to this stack (tests/reliability/support.py).
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Iterator

import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo import MongoClient

from services.devstack.processes import ChildProcess, python_module
from services.devstack.stack import Stack, StackConfig, StackPorts
from services.executor.admin import connection_document
from tests.e2e.conftest import E2EStack
from tests.fakes.binance_market import FakeBinanceMarket
from tests.reliability.ledger import LEDGER
from tests.reliability.support import FuturesInThread


@dataclasses.dataclass
class ReliabilityStack(E2EStack):
    market_fake: FakeBinanceMarket = dataclasses.field(default=None)  # type: ignore[assignment]
    futures: FuturesInThread = dataclasses.field(default=None)  # type: ignore[assignment]
    testnet_key: str = ""
    testnet_secret: str = ""
    # Every process any reliability test started: the secret grep reads them all.
    extra_processes: list[ChildProcess] = dataclasses.field(default_factory=list)

    def add_testnet_user(self) -> tuple[ObjectId, ObjectId]:
        user_id, _ = self.add_user(with_paper_connection=False)
        document = connection_document(user_id, "testnet", self.testnet_key, self.testnet_secret, self.fernet)
        return user_id, self.db.exchangeconnections.insert_one(document).inserted_id

    def all_output(self) -> str:
        parts = [self.stack.output(), self.openai.output()]
        parts += [f"[{process.name}] " + process.output() for process in self.extra_processes]
        return "\n".join(parts)


@pytest.fixture(scope="package")  # torn down after this folder: no idle processes for the rest of the run
def reliability(mongo_uri: str) -> Iterator[ReliabilityStack]:
    cron_secret = "RELIABILITY-CRON-" + secrets.token_urlsafe(32)
    openai_key = "sk-RELIABILITY-OPENAI-" + secrets.token_urlsafe(24)
    testnet_key = "RELIABILITYAPIKEY" + secrets.token_hex(16)
    testnet_secret = "RELIABILITYAPISECRET" + secrets.token_hex(16)
    fernet_key = Fernet.generate_key().decode()
    market_fake = FakeBinanceMarket().start()
    openai = ChildProcess("openai", python_module("tests.fakes.openai_server", "--mode", "success"), {})
    futures = FuturesInThread(testnet_key, testnet_secret)
    openai_url = openai.wait_for_line(r"READY (\S+)", timeout=30).group(1)
    futures_url = futures.url
    database = f"reliability_{uuid.uuid4().hex[:10]}"
    config = StackConfig(
        mongodb_uri=mongo_uri,
        cron_secret=cron_secret,
        credentials_keys=fernet_key,
        mongodb_db=database,
        ports=StackPorts.free(),
        env={
            "market": {
                "MARKET_DATA_SOURCE": "binance",
                "BINANCE_FUTURES_URL": market_fake.url,
                "BINANCE_SPOT_URL": market_fake.url,
                # No cache: every tick reaches the (faulty) exchange.
                "MARKET_CACHE_TTL_SECONDS": "0",
                "MARKET_PRICE_TTL_SECONDS": "0",
                "MARKET_FILTERS_TTL_SECONDS": "1",
                "MARKET_UPSTREAM_TIMEOUT_SECONDS": "2",
                "MARKET_RETRY_INITIAL_BACKOFF_SECONDS": "0.05",
                "MARKET_RETRY_MAX_BACKOFF_SECONDS": "0.2",
                "MARKET_RETRY_MAX_TOTAL_SECONDS": "3",
            },
            "strategy": {"OPENAI_API_KEY": openai_key, "OPENAI_BASE_URL": openai_url, "OPENAI_MODEL": "gpt-4o"},
            "executor": {"BINANCE_FUTURES_TESTNET_URL": futures_url},
            "gateway": {"TICK_USE_AI": "true", "TICK_DEADLINE_SECONDS": "30", "TICK_CONCURRENCY": "2"},
        },
    )
    stack = Stack(config)
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    try:
        stack.start()
        yield ReliabilityStack(stack, openai, client[database], cron_secret, Fernet(fernet_key.encode()), openai_key,
                               market_fake=market_fake, futures=futures, testnet_key=testnet_key,
                               testnet_secret=testnet_secret)  # fmt: skip
    finally:
        stack.stop()
        openai.stop()
        futures.stop()
        market_fake.stop()
        client.close()


@pytest.fixture
def rstack(reliability: ReliabilityStack) -> Iterator[ReliabilityStack]:
    reliability.reset()
    reliability.market_fake.clear_faults()
    reliability.futures.call(reliability.futures.fake.faults.clear)
    yield reliability
    reliability.market_fake.clear_faults()
    for name in reliability.stack.dead():  # a test that killed a service and failed before restarting it
        reliability.stack.restart(name)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if LEDGER.faults_injected or LEDGER.writes_checked or LEDGER.orders_checked:
        terminalreporter.write_sep("-", "reliability ledger")
        for fault in LEDGER.faults:
            terminalreporter.write_line(f"  fault: {fault}")
        terminalreporter.write_line(LEDGER.summary())
