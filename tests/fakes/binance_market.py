"""A local HTTP server speaking Binance's USDⓈ-M futures market-data REST API.

Shapes follow https://developers.binance.com/docs/derivatives/usds-margined-futures:
``GET /fapi/v1/klines`` (12-element arrays, numbers as strings),
``/fapi/v1/exchangeInfo`` (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE,
MIN_NOTIONAL with ``notional``...), ``/fapi/v1/premiumIndex``,
``/fapi/v1/time``, ``/fapi/v1/ping``; every request is admitted by an
``IpWeightPool`` (weight per minute of the fake's clock: 429 past the
limit, 418 and a ban for a request sent during a 429) and every answer
carries ``X-MBX-USED-WEIGHT-1M``; errors are ``{"code": ..., "msg": ...}``
with Binance's codes (-1121 invalid symbol, -1120 invalid interval, -1003
too many requests with ``Retry-After``).

Prices come from the simulated feed (services.market.sources.simulated)
evaluated at the fake's clock, so tests can move time without sleeping.
``add_routes`` mounts the same routes on another app (``FakeBinanceExchange``
shares one pool, feed and mark price between them and its trading routes).

Tests program faults per path (``fail_next``) and read request counts per
path (``count``). In-process (it runs in its own thread and loop):
``with FakeBinanceMarket() as fake: fake.url`` or ``async with FakeBinanceMarket() as fake``.
As a process: ``python -m tests.fakes.binance_market --port N [--latency-ms 50]``
prints ``READY http://127.0.0.1:N``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from services.common.intervals import VALID_INTERVALS
from services.market.sources.universe import SIMULATED_UNIVERSE
from tests.fakes.binance_limits import WEIGHT_HEADER, IpWeightPool, fake_weight
from tests.fakes.binance_limits import klines_weight as klines_weight
from tests.fakes.simulated_feed import SimulatedFeed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """An answer to give instead of the real one: an HTTP error, a delay, or a dropped connection."""

    status: int = 500
    body: dict[str, Any] | None = None
    retry_after: float | None = None
    delay_seconds: float = 0.0
    disconnect: bool = False


def too_many_requests(retry_after: float = 30) -> Fault:
    return Fault(
        429,
        {
            "code": -1003,
            "msg": "Too many requests; current limit of IP(127.0.0.1) is 2400 requests per minute. "
            "Please use the websocket for live updates to avoid polling the API.",
        },
        retry_after,
    )


def ip_banned(ban_seconds: float, now: float | None = None) -> Fault:
    until_ms = int(((now if now is not None else time.time()) + ban_seconds) * 1000)
    return Fault(
        418,
        {
            "code": -1003,
            "msg": f"Way too many requests; IP(127.0.0.1) banned until {until_ms}. "
            "Please use the websocket for live updates to avoid bans.",
        },
        ban_seconds,
    )


def server_error(status: int = 503) -> Fault:
    return Fault(status, {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."})


def _exchange_symbol(symbol: str) -> dict[str, Any]:
    spec = SIMULATED_UNIVERSE[symbol]
    rules = spec.rules
    tick, step = rules.tick_size, rules.step_size
    base = symbol.removesuffix("USDT")
    price_precision = max(0, -tick.normalize().as_tuple().exponent)  # type: ignore[operator]
    quantity_precision = max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": price_precision,
        "quantityPrecision": quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": format(tick, "f"),
                "maxPrice": format(Decimal(spec.reference_price * 100).quantize(tick), "f"),
                "tickSize": format(tick, "f"),
            },
            {
                "filterType": "LOT_SIZE",
                "stepSize": format(step, "f"),
                "minQty": format(rules.min_qty, "f"),
                "maxQty": format(rules.max_qty, "f"),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "stepSize": format(rules.market_step_size, "f"),
                "minQty": format(rules.min_qty, "f"),
                "maxQty": format(rules.market_max_qty, "f"),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": format(rules.min_notional, "f")},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


class FakeBinanceMarket:
    """The fake server. Thread-safe to program and read from tests while it runs in its own thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        clock: Callable[[], float] = time.time,
        weight_limit_1m: int = 2400,
        pool: IpWeightPool | None = None,
        feed: SimulatedFeed | None = None,
        mark_price: Callable[[str], Decimal] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_seconds = latency_ms / 1000
        self.clock = clock
        self.weight_limit_1m = weight_limit_1m
        # Standalone, the pool and feed read ``self.clock`` at each use: tests may swap it.
        self.pool = pool or IpWeightPool(weight_limit_1m, lambda: self.clock())
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._faults: dict[str, deque[Fault]] = {}
        self._feed = feed or SimulatedFeed(lambda: self.clock(), resolution_ms=1)
        self._mark_price = mark_price or self._feed.mark_price
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # --- programming and observing ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The root to configure as BINANCE_FUTURES_URL (no /fapi suffix)."""
        return f"http://{self.host}:{self.port}"

    @property
    def other_clients_weight(self) -> int:
        """Weight other clients on the same IP spent this minute (counted in the pool)."""
        return self.pool.other_clients_weight

    @other_clients_weight.setter
    def other_clients_weight(self, weight: int) -> None:
        self.pool.other_clients_weight = weight

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    def total_requests(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def fail_next(self, path: str, fault: Fault, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``path`` with ``fault``."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend([fault] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeBinanceMarket:
        self._thread = threading.Thread(target=self._serve_in_thread, name="fake-binance", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("fake Binance server did not start")
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeBinanceMarket:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeBinanceMarket:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _serve_in_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as error:  # reported to start()
            self._startup_error = error
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Mount the market-data routes, each through the request pipeline (counts, faults, weight)."""
        for path, handler in (("/fapi/v1/klines", self._klines), ("/fapi/v1/exchangeInfo", self._exchange_info),
                              ("/fapi/v1/premiumIndex", self._premium_index), ("/fapi/v1/time", self._time),
                              ("/fapi/v1/ping", self._ping)):
            router.add_get(path, self._pipeline(handler))

    async def _startup(self) -> None:
        app = web.Application()
        self.add_routes(app.router)
        app.router.add_route("*", "/{tail:.*}", self._pipeline(self._no_route))   # weighed like any request
        # A short shutdown timeout: a test may stop the fake while a delayed answer is pending.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- request pipeline ---------------------------------------------------------------------

    def _pipeline(self, handler: Handler) -> Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            path = request.path
            with self._lock:
                self._counts[path] += 1
                queue = self._faults.get(path)
                fault = queue.popleft() if queue else None
            if self.latency_seconds:
                await asyncio.sleep(self.latency_seconds)
            if fault is not None:
                return await self._fault_response(request, fault)
            weight = self._weight_of(request)
            admission = self.pool.admit(weight, path)
            if not admission.admitted:
                return web.json_response(admission.body, status=admission.status, headers=admission.headers())
            self._spend_weight(weight)
            response = await handler(request)
            response.headers[WEIGHT_HEADER] = str(self.pool.used_1m())
            return response

        return serve

    async def _fault_response(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.disconnect:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        return self._error(fault, self.pool.used_1m())

    def _error(self, fault: Fault, used: int) -> web.Response:
        headers = {WEIGHT_HEADER: str(used)}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(int(round(fault.retry_after)))
        body = fault.body if fault.body is not None else {"code": -1000, "msg": "An unknown error occurred."}
        return web.json_response(body, status=fault.status, headers=headers)

    def _weight_of(self, request: web.Request) -> int:
        return fake_weight(request.method, request.path, request.query)

    def _spend_weight(self, weight: int) -> int:
        """Called with the weight of every admitted request (a hook for counting subclasses); the minute's use."""
        return self.pool.used_1m()

    @staticmethod
    def _bad_request(code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=400)

    # --- endpoints ----------------------------------------------------------------------------

    async def _klines(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        interval = request.query.get("interval", "")
        if not symbol:
            return self._bad_request(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if symbol not in SIMULATED_UNIVERSE:
            return self._bad_request(-1121, "Invalid symbol.")
        if interval not in VALID_INTERVALS:
            return self._bad_request(-1120, "Invalid interval.")
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            return self._bad_request(-1100, "Illegal characters found in parameter 'limit'.")
        if not 1 <= limit <= 1500:
            return self._bad_request(-1130, "Data sent for paramter 'limit' is not valid.")
        now_ms = self._feed.now_ms()
        end_time = request.query.get("endTime")
        at_ms = min(now_ms, int(end_time)) if end_time else now_ms
        bars = self._feed.source.bars(symbol, interval, limit, at_ms)
        rows = []
        for bar in bars:
            quote_volume = (bar.volume * bar.close).quantize(Decimal("0.0001"))
            rows.append(
                [
                    bar.open_time_ms,
                    format(bar.open, "f"),
                    format(bar.high, "f"),
                    format(bar.low, "f"),
                    format(bar.close, "f"),
                    format(bar.volume, "f"),
                    bar.close_time_ms,
                    format(quote_volume, "f"),
                    1000 + bar.open_time_ms // 60_000 % 5000,
                    format((bar.volume / 2).quantize(bar.volume), "f"),
                    format((quote_volume / 2).quantize(Decimal("0.0001")), "f"),
                    "0",
                ]
            )
        return web.json_response(rows)

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": int(self.clock() * 1000),
                "futuresType": "U_MARGINED",
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                     "limit": self.weight_limit_1m},
                    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
                ],
                "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
                "symbols": [_exchange_symbol(symbol) for symbol in SIMULATED_UNIVERSE],
            }
        )

    def _premium(self, symbol: str) -> dict[str, Any]:
        now_ms = int(self.clock() * 1000)
        mark = format(self._mark_price(symbol), "f")
        return {
            "symbol": symbol,
            "markPrice": mark,
            "indexPrice": mark,
            "estimatedSettlePrice": mark,
            "lastFundingRate": "0.00010000",
            "interestRate": "0.00010000",
            "nextFundingTime": (now_ms // 28_800_000 + 1) * 28_800_000,
            "time": now_ms,
        }

    async def _premium_index(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol")
        if symbol is None:
            return web.json_response([self._premium(name) for name in SIMULATED_UNIVERSE])
        if symbol not in SIMULATED_UNIVERSE:
            return self._bad_request(-1121, "Invalid symbol.")
        return web.json_response(self._premium(symbol))

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(self.clock() * 1000)})

    async def _no_route(self, request: web.Request) -> web.Response:
        return web.json_response({"code": -1000, "msg": f"fake: no route {request.method} {request.path}"},
                                 status=404)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Binance USDⓈ-M futures market-data server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeBinanceMarket(host=args.host, port=args.port, latency_ms=args.latency_ms).start()
    print(f"READY {fake.url}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    fake.stop()


if __name__ == "__main__":
    main()
