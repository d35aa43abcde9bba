"""The IP weight pool: Binance's weights, 429 past 2,400 a minute, 418 bans, one pool for every route."""

from __future__ import annotations

import math
import re

import aiohttp
import pytest

from tests.exchange_fake.conftest import MINUTE_END, START, Client, client_for
from tests.fakes.binance_exchange import FakeBinanceExchange
from tests.fakes.binance_futures import FakeBinanceFutures
from tests.fakes.binance_limits import FakeClock, IpWeightPool
from tests.fakes.binance_market import FakeBinanceMarket

TOO_MANY = ("Too many requests; current limit of IP(127.0.0.1) is 2400 requests per minute. "
            "Please use the websocket for live updates to avoid polling the API.")
BANNED = re.compile(r"^Way too many requests; IP\(127\.0\.0\.1\) banned until (\d+)\. "
                    r"Please use the websocket for live updates to avoid bans\.$")

# (method, path, params, auth, weight) from each endpoint's "Request Weight" in Binance's USDⓈ-M docs.
WEIGHTS = [
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 99}, "none", 1),
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 100}, "none", 2),
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 499}, "none", 2),
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 500}, "none", 5),
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}, "none", 5),
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1001}, "none", 10),
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m"}, "none", 5),   # default limit 500
    ("GET", "/fapi/v1/exchangeInfo", {}, "none", 1),
    ("GET", "/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}, "none", 1),
    ("GET", "/fapi/v1/premiumIndex", {}, "none", 10),
    ("GET", "/fapi/v1/ticker/price", {"symbol": "BTCUSDT"}, "none", 1),
    ("GET", "/fapi/v1/ticker/price", {}, "none", 2),
    ("GET", "/fapi/v1/time", {}, "none", 1),
    ("GET", "/fapi/v1/ping", {}, "none", 1),
    ("GET", "/fapi/v1/positionSide/dual", {}, "signed", 30),
    ("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"}, "signed", 1),
    ("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 10}, "signed", 1),
    ("POST", "/fapi/v1/marginType", {"symbol": "BTCUSDT", "marginType": "ISOLATED"}, "signed", 1),
    ("GET", "/fapi/v2/positionRisk", {}, "signed", 5),
    ("GET", "/fapi/v3/positionRisk", {}, "signed", 5),
    ("GET", "/fapi/v2/balance", {}, "signed", 5),
    ("GET", "/fapi/v3/balance", {}, "signed", 5),
    ("GET", "/fapi/v2/account", {}, "signed", 5),
    ("GET", "/fapi/v3/account", {}, "signed", 5),
    ("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002",
                                "newClientOrderId": "w1"}, "signed", 0),
    ("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "w1"}, "signed", 1),
    ("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}, "signed", 1),
    ("GET", "/fapi/v1/openOrders", {}, "signed", 40),
    ("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT"}, "signed", 5),
    ("POST", "/fapi/v1/algoOrder", {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                                    "algoType": "CONDITIONAL", "triggerPrice": "1000", "closePosition": "true",
                                    "clientAlgoId": "w1-sl"}, "signed", 0),
    ("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "w1-sl"}, "signed", 1),
    ("GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"}, "signed", 1),
    ("GET", "/fapi/v1/openAlgoOrders", {}, "signed", 40),
    ("GET", "/fapi/v1/allAlgoOrders", {"symbol": "BTCUSDT"}, "signed", 5),
    ("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "w1-sl"}, "signed", 1),
    ("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": "BTCUSDT"}, "signed", 1),
    ("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"}, "signed", 5),
    ("GET", "/fapi/v1/income", {}, "signed", 30),
    ("POST", "/fapi/v1/listenKey", {}, "key", 1),
    ("PUT", "/fapi/v1/listenKey", {}, "key", 1),
    ("DELETE", "/fapi/v1/listenKey", {}, "key", 1),
    ("GET", "/fapi/v1/symbolConfig", {}, "signed", 5),
    ("GET", "/fapi/v1/accountConfig", {}, "signed", 5),
    ("GET", "/fapi/v1/somethingNew", {}, "none", 1),
]


class ManualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_every_endpoint_costs_its_documented_weight(exchange: FakeBinanceExchange, client: Client) -> None:
    for method, path, params, auth, weight in WEIGHTS:
        before = exchange.pool.used_1m()
        reply = await client.call(method, path, params, auth=auth)  # type: ignore[arg-type]
        assert reply.used_weight - before == weight, (method, path, params, reply.status, reply.body)
        assert reply.used_weight == exchange.pool.used_1m()
    assert exchange.pool.weight_by_path["/fapi/v1/klines"] == 1 + 2 + 2 + 5 + 5 + 10 + 5
    assert exchange.rest_requests == len(WEIGHTS)


async def test_429_comes_exactly_past_2400_then_a_request_during_it_is_banned_418(
        exchange: FakeBinanceExchange, client: Client, clock: FakeClock) -> None:
    for _ in range(80):   # 80 × 30 = 2,400: exactly the limit, all served
        reply = await client.call("GET", "/fapi/v1/positionSide/dual")
        assert reply.status == 200
    assert reply.used_weight == 2400 and exchange.pool.peak_used_1m == 2400

    before = clock.now()
    refused = await client.call("GET", "/fapi/v1/ping", auth="none")   # weight 1: would make 2,401
    after = clock.now()
    assert refused.status == 429 and refused.body == {"code": -1003, "msg": TOO_MANY}
    assert math.ceil(MINUTE_END - after) <= int(refused.headers["Retry-After"]) <= math.ceil(MINUTE_END - before)
    assert refused.used_weight == 2400 and exchange.pool.used_1m() == 2400   # a refused request spends nothing
    assert (exchange.pool.answered_429, exchange.pool.answered_418, exchange.pool.sent_after_429) == (1, 0, 0)

    banned = await client.call("GET", "/fapi/v1/ping", auth="none")   # sent while the 429 is in force
    assert banned.status == 418 and banned.headers["Retry-After"] == "120"
    until_ms = int(BANNED.match(banned.body["msg"]).group(1))  # type: ignore[union-attr]
    assert banned.body["code"] == -1003 and abs(until_ms - (clock.now() + 120) * 1000) < 1000
    again = await client.call("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 5},
                              auth="none")   # the ban covers the market routes too, and is not extended
    assert again.status == 418 and int(again.headers["Retry-After"]) <= 120
    assert (exchange.pool.answered_418, exchange.pool.sent_after_429) == (2, 2)

    clock.advance(121)   # the ban is over (and a new minute began)
    served = await client.call("GET", "/fapi/v1/ping", auth="none")
    assert served.status == 200 and served.used_weight == 1
    assert exchange.pool.history == [(int(MINUTE_END - 60), 2400)]
    assert exchange.rest_requests == 84


def test_each_new_ban_doubles_up_to_three_days() -> None:
    clock = ManualClock(START)
    pool = IpWeightPool(10, clock)
    bans = []
    for _ in range(14):
        assert pool.admit(10).admitted
        assert pool.admit(1).status == 429
        banned = pool.admit(1)
        assert banned.status == 418
        bans.append(banned.retry_after)
        clock.now = pool.banned_until + 60   # past the ban, into a fresh minute
    assert bans[:4] == [120, 240, 480, 960]
    assert bans[-2:] == [3 * 86_400, 3 * 86_400] and bans[-3] == 120 * 2**11
    assert pool.sent_after_429 == pool.answered_418 == 14 and pool.answered_429 == 14


def test_weight_is_counted_per_clock_minute_with_admitted_weight_only() -> None:
    clock = ManualClock(START)   # 5 s into a minute
    pool = IpWeightPool(100, clock)
    assert pool.admit(60, "/a").used == 60
    assert pool.admit(50, "/b").status == 429   # refused: not counted anywhere
    clock.now = MINUTE_END + 1
    assert pool.admit(30, "/b").used == 30      # reset on the minute, not 60 s after the first request
    assert pool.peak_used_1m == 60 and pool.used_1m() == 30
    assert pool.weight_by_path == {"/a": 60, "/b": 30}
    assert pool.history == [(int(MINUTE_END - 60), 60)]
    headers = pool.admit(1).headers()
    assert headers == {"X-MBX-USED-WEIGHT-1M": "31"}
    pool.reset_counters()
    assert (pool.requests, pool.peak_used_1m, pool.history, pool.weight_by_path) == (0, 0, [], {})


async def test_the_minute_rolls_over_on_the_fake_clock(exchange: FakeBinanceExchange, client: Client,
                                                        clock: FakeClock) -> None:
    for _ in range(10):
        await client.call("GET", "/fapi/v1/premiumIndex", auth="none")
    clock.advance(50)    # 55 s into the minute: same minute
    assert (await client.call("GET", "/fapi/v1/ping", auth="none")).used_weight == 101
    clock.advance(10)    # 65 s: the next minute
    assert (await client.call("GET", "/fapi/v1/ping", auth="none")).used_weight == 1
    assert exchange.pool.history == [(int(MINUTE_END - 60), 101)]


async def test_every_answer_carries_the_used_weight(exchange: FakeBinanceExchange, client: Client) -> None:
    stranger = Client(client.http, exchange, "nobody", "nothing")
    answers = [
        (await client.call("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 3},
                           auth="none"), 200),
        (await client.call("GET", "/fapi/v1/klines", {"symbol": "NOPEUSDT", "interval": "1m"}, auth="none"), 400),
        (await client.call("GET", "/fapi/v3/account"), 200),
        (await client.call("POST", "/fapi/v1/leverage", {"symbol": "NOPEUSDT", "leverage": 5}), 400),
        (await stranger.call("GET", "/fapi/v3/account"), 401),
        (await client.call("GET", "/fapi/v9/nothing", auth="none"), 404),
    ]
    exchange.pool.other_clients_weight = 2400   # other clients on this IP used the whole minute
    answers.append((await client.call("GET", "/fapi/v1/time", auth="none"), 429))
    answers.append((await client.call("GET", "/fapi/v3/account"), 418))
    for reply, status in answers:
        assert reply.status == status, reply.body
        assert "X-MBX-USED-WEIGHT-1M" in reply.headers, status
    # klines 1, klines (default limit 500) 5, account 5, leverage 1, account 5, unknown route 1
    assert answers[-1][0].used_weight == 2400 + 1 + 5 + 5 + 1 + 5 + 1


async def test_market_and_trading_routes_spend_one_pool(exchange: FakeBinanceExchange, client: Client) -> None:
    await client.call("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}, auth="none")
    reply = await client.call("GET", "/fapi/v3/positionRisk")
    assert reply.used_weight == 10   # 5 (klines) + 5 (positionRisk) on one counter
    for _ in range(79):
        await client.call("GET", "/fapi/v1/positionSide/dual")
    for _ in range(2):
        reply = await client.call("GET", "/fapi/v1/premiumIndex", auth="none")
    assert reply.used_weight == 2400
    market = await client.call("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 50},
                               auth="none")
    assert market.status == 429   # the trading routes spent the market data's minute
    trading = await client.call("GET", "/fapi/v3/balance")
    assert trading.status == 418
    assert exchange.pool.weight_by_path["/fapi/v1/positionSide/dual"] == 79 * 30


async def test_order_counts_per_account_follow_the_fake_clock(exchange: FakeBinanceExchange, client: Client,
                                                             clock: FakeClock) -> None:
    other = client_for(exchange, client.http, "bob")

    async def buy(who: Client, client_id: str) -> tuple[str, str]:
        reply = await who.call("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                          "quantity": "0.002", "newClientOrderId": client_id})
        assert reply.status == 200, reply.body
        return reply.headers["X-MBX-ORDER-COUNT-10S"], reply.headers["X-MBX-ORDER-COUNT-1M"]

    assert await buy(client, "a1") == ("1", "1")
    assert await buy(client, "a2") == ("2", "2")
    assert await buy(other, "b1") == ("1", "1")   # per account, not per IP
    clock.advance(11)
    assert await buy(client, "a3") == ("1", "3")
    clock.advance(55)
    assert await buy(client, "a4") == ("1", "2")   # a1 and a2 are more than a minute old
    assert exchange.pool.weight_by_path["/fapi/v1/order"] == 0   # orders weigh nothing on the IP


def test_fake_clock_is_wall_time_plus_what_was_advanced() -> None:
    clock = FakeClock(start=START)
    assert abs(clock.now() - START) < 1 and clock() == pytest.approx(clock.now(), abs=0.1)
    clock.advance(3600)
    assert abs(clock.now() - START - 3600) < 1 and abs(clock.now_ms() / 1000 - clock.now()) < 0.1


async def test_each_fake_alone_keeps_a_pool_of_its_own_that_bans_too(http: aiohttp.ClientSession) -> None:
    clock = FakeClock(start=START)
    async with FakeBinanceMarket(clock=clock) as market, \
            FakeBinanceFutures(api_key="solo-key", api_secret="solo-secret", clock=clock) as futures:
        market.other_clients_weight = 2400
        statuses = []
        for _ in range(2):
            async with http.get(f"{market.url}/fapi/v1/ping") as reply:
                statuses.append((reply.status, reply.headers["X-MBX-USED-WEIGHT-1M"]))
        assert statuses == [(429, "2400"), (418, "2400")]
        async with http.get(f"{futures.url}/fapi/v1/ping") as reply:   # another pool: untouched
            assert (reply.status, reply.headers["X-MBX-USED-WEIGHT-1M"]) == (200, "1")
        assert (market.pool.answered_418, futures.pool.requests) == (1, 1)
