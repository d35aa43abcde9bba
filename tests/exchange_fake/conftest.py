"""The combined fake exchange on a movable clock, and a small REST client that signs like Binance's clients."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tests.fakes.binance_exchange import FakeBinanceExchange
from tests.fakes.binance_limits import WEIGHT_HEADER, FakeClock

# 5 s into a minute: a test has the rest of the minute before the weight resets by itself.
START = datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC).timestamp()
MINUTE_END = START - 5 + 60


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any

    @property
    def used_weight(self) -> int:
        return int(self.headers[WEIGHT_HEADER])


class Client:
    """REST as an account's client sends it: API key header, HMAC-SHA256 over the query (GET/DELETE) or body."""

    def __init__(self, http: aiohttp.ClientSession, exchange: FakeBinanceExchange, api_key: str, api_secret: str):
        self.http = http
        self.exchange = exchange
        self.api_key = api_key
        self.api_secret = api_secret

    async def call(self, method: str, path: str, params: dict[str, Any] | None = None, *,
                   auth: Literal["none", "key", "signed"] = "signed") -> Reply:
        params = dict(params or {})
        headers = {} if auth == "none" else {"X-MBX-APIKEY": self.api_key}
        if auth == "signed":
            params["timestamp"] = self.exchange.clock.now_ms()
        payload = urlencode(params)
        if auth == "signed":
            signature = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            payload = f"{payload}&signature={signature}" if payload else f"signature={signature}"
        url = f"{self.exchange.url}{path}"
        if method in ("POST", "PUT"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            response = await self.http.request(method, url, data=payload, headers=headers)
        else:
            response = await self.http.request(method, f"{url}?{payload}" if payload else url, headers=headers)
        async with response:
            text = await response.text()
            return Reply(response.status, response.headers, json.loads(text) if text else None)

    async def listen_key(self) -> str:
        reply = await self.call("POST", "/fapi/v1/listenKey", auth="key")
        assert reply.status == 200, reply.body
        return str(reply.body["listenKey"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
async def exchange(clock: FakeClock) -> AsyncIterator[FakeBinanceExchange]:
    async with FakeBinanceExchange(clock=clock) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        yield session


@pytest.fixture
def client(exchange: FakeBinanceExchange, http: aiohttp.ClientSession) -> Client:
    exchange.add_account("alice-key", "alice-secret")
    return Client(http, exchange, "alice-key", "alice-secret")


def client_for(exchange: FakeBinanceExchange, http: aiohttp.ClientSession, name: str) -> Client:
    exchange.add_account(f"{name}-key", f"{name}-secret")
    return Client(http, exchange, f"{name}-key", f"{name}-secret")
