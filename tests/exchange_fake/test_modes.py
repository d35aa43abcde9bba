"""The exchange from synchronous code (its own thread) and as its own process; prices agree across routes."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.exchange_fake.conftest import START
from tests.fakes.binance_exchange import FakeBinanceExchange
from tests.fakes.binance_limits import FakeClock
from tests.support.processes import ManagedProcess, free_port, python_module


def signed_post(http: httpx.Client, clock: FakeClock, key: str, secret: str, path: str,
                params: dict[str, Any]) -> httpx.Response:
    body = urlencode({**params, "timestamp": clock.now_ms()})
    body += "&signature=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return http.post(path, content=body, headers={"X-MBX-APIKEY": key,
                                                  "Content-Type": "application/x-www-form-urlencoded"})


def test_from_synchronous_code_fills_premium_index_and_klines_agree_and_hooks_reach_the_loop() -> None:
    clock = FakeClock(start=START)
    with FakeBinanceExchange(clock=clock).in_thread() as exchange, httpx.Client(base_url=exchange.url) as http:
        exchange.add_account("sync-key", "sync-secret", "5000")
        for attempt in range(5):   # the three reads must fall in one second of the mark price
            premium = http.get("/fapi/v1/premiumIndex", params={"symbol": "ETHUSDT"}).json()
            fill = signed_post(http, clock, "sync-key", "sync-secret", "/fapi/v1/order", {
                "symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01",
                "newClientOrderId": f"sync-{attempt}", "newOrderRespType": "RESULT"}).json()
            kline = http.get("/fapi/v1/klines", params={"symbol": "ETHUSDT", "interval": "1m", "limit": 1}).json()
            if premium["time"] // 1000 == fill["updateTime"] // 1000 == clock.now_ms() // 1000:
                break
        assert Decimal(premium["markPrice"]) == Decimal(fill["avgPrice"]) == Decimal(kline[-1][4])

        seeded = exchange.seed_position("sync-key", "BTCUSDT", "SHORT", "0.01", "60000", 10, "CROSSED",
                                        stop_loss="70000", take_profit="1000", stop_loss_client_id="s-sl")
        assert [(s["side"], s["orderType"], s["clientAlgoId"]) for s in seeded] == [
            ("BUY", "STOP_MARKET", "s-sl"), ("BUY", "TAKE_PROFIT_MARKET", seeded[1]["clientAlgoId"])]
        exchange.set_mark_price("BTCUSDT", "70000.1")   # from this thread, run on the server's loop
        assert exchange.position("sync-key", "BTCUSDT").amount == 0
        for path, field in (("/fapi/v1/ticker/price", "price"), ("/fapi/v1/premiumIndex", "markPrice")):
            assert Decimal(http.get(path, params={"symbol": "BTCUSDT"}).json()[field]) == Decimal("70000.1")
        assert exchange.rest_requests == 3 * (attempt + 1) + 2
        assert exchange.stats()["accounts"] == 2   # the default account and ours
        used = exchange.pool.used_1m()
        exchange.reset_counters()   # counters restart; the minute's weight (Binance's state) does not
        stats = exchange.stats()
        assert (stats["rest_requests"], stats["peak_used_1m"], stats["weight_by_path"]) == (0, 0, {})
        assert stats["used_1m"] == used > 0


def test_standalone_process_prints_ready_and_is_driven_over_http() -> None:
    port = free_port()
    process = ManagedProcess("fake-exchange", python_module("tests.fakes.binance_exchange", "--port", str(port)), {})
    try:
        url = process.wait_for_line(r"READY (\S+)", timeout=30).group(1)
        assert url == f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url) as http:
            added = http.post("/_fake/accounts", json=[{"api_key": f"p{i}", "api_secret": f"s{i}"} for i in range(3)])
            assert added.json() == {"ok": True, "accounts": 4}
            key = http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": "p1"})
            assert key.status_code == 200 and len(key.json()["listenKey"]) == 64
            assert key.headers["X-MBX-USED-WEIGHT-1M"] == "1"
            klines = http.get("/fapi/v1/klines", params={"symbol": "SOLUSDT", "interval": "5m", "limit": 100})
            assert klines.status_code == 200 and klines.headers["X-MBX-USED-WEIGHT-1M"] == "3"
            stats = http.get("/_fake/stats").json()
            assert (stats["rest_requests"], stats["used_1m"], stats["weight_by_path"]) == (
                2, 3, {"/fapi/v1/listenKey": 1, "/fapi/v1/klines": 2})
    finally:
        process.stop()
