"""One real stack for the e2e tests of a module: mongoeco, market (simulated), strategy
(AI through the local OpenAI-compatible server), executor (paper broker), gateway.

Started with the same launcher as ``make run`` (services.devstack.stack); tests seed
documents through pymongo and call the gateway over HTTP.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo import MongoClient
from pymongo.database import Database
from tradebot.v1 import common_pb2, market_pb2, market_pb2_grpc, strategy_pb2, strategy_pb2_grpc

from services.devstack.processes import ChildProcess, python_module
from services.devstack.seed import PRESET_BOTS, bot_document, user_document
from services.devstack.stack import Stack, StackConfig, StackPorts
from services.executor.admin import connection_document

PAPER_COLLECTIONS = ("paperaccounts", "paperpositions", "paperfills", "papertrades")


@dataclasses.dataclass
class E2EStack:
    stack: Stack
    openai: ChildProcess
    db: Database
    cron_secret: str
    fernet: Fernet
    openai_key: str

    @property
    def url(self) -> str:
        return self.stack.config.gateway_url + "/api/cron/run-bots"

    def tick(self, secret: str | None = None, method: str = "GET") -> httpx.Response:
        token = self.cron_secret if secret is None else secret
        return httpx.request(method, self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def reset(self) -> None:
        for name in ("botinstances", "tradelogs", "exchangeconnections", "users", *PAPER_COLLECTIONS):
            self.db[name].delete_many({})

    def add_user(self, *, with_paper_connection: bool = True) -> tuple[ObjectId, ObjectId | None]:
        user = user_document(email=f"{uuid.uuid4().hex[:8]}@example.test")
        self.db.users.insert_one(user)
        if not with_paper_connection:
            return user["_id"], None
        connection = connection_document(user["_id"], "paper", "", "", self.fernet)
        return user["_id"], self.db.exchangeconnections.insert_one(connection).inserted_id

    def add_bot(self, user_id: ObjectId, preset: int = 1, **fields: Any) -> ObjectId:
        document = bot_document(user_id, PRESET_BOTS[preset - 1], **fields)
        self.db.botinstances.insert_one(document)
        return document["_id"]

    def bot(self, bot_id: ObjectId) -> dict[str, Any]:
        document = self.db.botinstances.find_one({"_id": bot_id})
        assert document is not None
        return document

    def logs(self, bot_id: ObjectId, **query: Any) -> list[dict[str, Any]]:
        return list(self.db.tradelogs.find({"botInstanceId": bot_id, **query}))

    def find_tradeable(self, intervals: tuple[str, ...] = ("1h", "4h", "1d")) -> tuple[int, str, str, float]:
        """A (strategy, symbol, interval) whose last closed candle gives a BUY or SELL right now.

        The simulated feed is a function of wall-clock time; long intervals keep
        the signal stable for the length of a test.
        """
        config = self.stack.config
        symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT",
                   "LINKUSDT", "DOTUSDT", "LTCUSDT", "TRXUSDT")  # fmt: skip
        with grpc.insecure_channel(config.address("market")) as market_channel, grpc.insecure_channel(
            config.address("strategy")
        ) as strategy_channel:
            market = market_pb2_grpc.MarketDataStub(market_channel)
            strategy = strategy_pb2_grpc.StrategyStub(strategy_channel)
            for interval in intervals:
                for symbol in symbols:
                    candles = market.GetCandles(
                        market_pb2.GetCandlesRequest(symbol=symbol, interval=interval, limit=300), timeout=10
                    ).candles
                    for bot_id in (1, 2, 3, 4):
                        signal = strategy.Analyze(
                            strategy_pb2.AnalyzeRequest(bot_id=bot_id, symbol=symbol, interval=interval,
                                                        candles=candles, use_ai=False),
                            timeout=10,
                        ).signal  # fmt: skip
                        if signal.action in (common_pb2.ACTION_BUY, common_pb2.ACTION_SELL):
                            return bot_id, symbol, interval, signal.confidence
        pytest.fail("no strategy gives a BUY or SELL on the simulated feed right now")

    def all_output(self) -> str:
        return self.stack.output() + "\n" + self.openai.output()


@pytest.fixture(scope="session")
def e2e(mongo_uri: str) -> Iterator[E2EStack]:
    cron_secret = "e2e-cron-" + secrets.token_urlsafe(32)
    openai_key = "sk-e2e-" + secrets.token_urlsafe(24)
    fernet_key = Fernet.generate_key().decode()
    openai = ChildProcess("openai", python_module("tests.fakes.openai_server", "--mode", "success"), {})
    openai_url = openai.wait_for_line(r"READY (\S+)", timeout=30).group(1)
    database = f"e2e_{uuid.uuid4().hex[:10]}"
    config = StackConfig(
        mongodb_uri=mongo_uri,
        cron_secret=cron_secret,
        credentials_keys=fernet_key,
        mongodb_db=database,
        ports=StackPorts.free(),
        env={
            "strategy": {"OPENAI_API_KEY": openai_key, "OPENAI_BASE_URL": openai_url, "OPENAI_MODEL": "gpt-4o"},
            "gateway": {"TICK_USE_AI": "true", "TICK_DEADLINE_SECONDS": "60"},
        },
    )
    stack = Stack(config)
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    try:
        stack.start()
        yield E2EStack(stack, openai, client[database], cron_secret, Fernet(fernet_key.encode()), openai_key)
    finally:
        stack.stop()
        openai.stop()
        client.close()


@pytest.fixture
def stack(e2e: E2EStack) -> E2EStack:
    e2e.reset()
    return e2e
