"""A local Binance USDⓈ-M Futures trading server speaking the real REST protocol and user-data streams.

Tests point the real python-binance client at it (through
``ConfiguredAsyncClient``'s futures root) instead of mocking the library.
It checks what Binance checks before an order is accepted: the API key
header, the HMAC-SHA256 signature over the raw query string and form body
(as sent, percent-encoding included), timestamp/recvWindow, symbol filters,
margin, one-way/hedge position mode, duplicate client ids, and it rejects
conditional types on ``/fapi/v1/order`` with -4120 like Binance does since
2025-12-09 (they live on ``/fapi/v1/algoOrder``). Every request is weighed
and admitted by an ``IpWeightPool`` first (429 / 418 past 2,400 a minute,
``X-MBX-USED-WEIGHT-1M`` on every answer); orders count per account (300 per
10 s, 1,200 per minute) on the fake clock.

The simulated exchange itself (fills, positions, conditional orders, the
events they push) is ``FuturesBook``; user-data streams (``/fapi/v1/listenKey``,
``/ws/<listenKey>``, ``/stream``) are ``UserStreams``. Tests move the mark
price (``set_mark_price``), which triggers crossed algo orders. Fault hooks
(``fail_next``, ``unknown_status_next``, ``clock_skew_ms``,
``order_count_bias``) make the awkward answers happen.

In process: ``async with FakeBinanceFutures(...) as fake: fake.url``.
Standalone: ``python -m tests.fakes.binance_futures --port N --api-key K
--api-secret S`` prints ``READY http://127.0.0.1:N``; ``POST /_fake/mark-price``
(JSON ``{"symbol", "price"}``) moves the mark price from another process,
``POST /_fake/advance-clock`` (``{"seconds"}``) the fake clock.

Options: ``clock`` (a ``FakeClock`` by default: ``fake.clock.advance``),
``pool`` (shared with other routes on the same IP), ``feed`` (mark prices
from a simulated feed instead of ``mark_prices``), ``latency_ms``, and
``record_requests=False`` for long runs (``requests`` then stays empty).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.binance_futures_book import CLIENT_ID_PATTERN, CONDITIONAL_TYPES, Answer, FuturesBook, MarkFeed
from tests.fakes.binance_futures_model import (
    DEFAULT_SYMBOLS,
    ORDER_LIMIT_1M,
    ORDER_LIMIT_10S,
    TAKER_FEE_RATE,
    UNKNOWN_STATUS_MESSAGE,
    Account,
    ApiError,
    Fault,
    Position,
    RecordedRequest,
    SymbolSpec,
    fmt,
    split_signature,
)
from tests.fakes.binance_limits import WEIGHT_HEADER, FakeClock, IpWeightPool, fake_weight
from tests.fakes.binance_user_stream import ListenKeyMissing, UserStreams
from tests.fakes.standalone import serve_until_stopped

__all__ = [
    "CLIENT_ID_PATTERN", "CONDITIONAL_TYPES", "DEFAULT_SYMBOLS", "ORDER_LIMIT_10S", "ORDER_LIMIT_1M",
    "TAKER_FEE_RATE", "UNKNOWN_STATUS_MESSAGE", "Account", "ApiError", "FakeBinanceFutures", "Fault", "Position",
    "RecordedRequest", "SymbolSpec",
]

Auth = Literal["none", "key", "signed"]
Handler = Callable[[Any, dict[str, str]], Answer]
MAX_REQUEST_LINE = 65_536   # a /stream URL naming 200 listenKeys is ~13 kB


class FakeBinanceFutures(FuturesBook):
    """The server plus the simulated accounts it serves (one per API key)."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        balance: Decimal = Decimal("10000"),
        symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS,
        mark_prices: dict[str, Decimal] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        pool: IpWeightPool | None = None,
        feed: MarkFeed | None = None,
        streams: UserStreams | None = None,
        latency_ms: float = 0.0,
        record_requests: bool = True,
    ) -> None:
        clock = clock or FakeClock()
        prices: dict[str, Decimal] = {} if feed else {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000")}
        prices.update(mark_prices or {})
        super().__init__(clock=clock, symbols=symbols, mark_prices=prices, feed=feed,
                         streams=streams or UserStreams(clock))
        self.pool = pool or IpWeightPool(clock=clock)
        self.add_account(api_key, api_secret, balance)
        self.default_account = self.accounts[api_key]
        self.requests: list[RecordedRequest] = []
        self.record_requests = record_requests
        self.faults: list[Fault] = []
        self.latency_seconds = latency_ms / 1000
        self.unknown_status_remaining = 0
        self.slow_answer_remaining = 0
        self.slow_answer_s = 0.0
        self.held_answers: dict[str, asyncio.Event] = {}
        self.used_weight_1m: int | None = None   # when set, every answer reports it as X-MBX-USED-WEIGHT-1M
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._route_table = self._routes()
        self.url = ""

    # ----------------------------------------------------------- test controls
    def fail_next(
        self,
        method: str,
        path: str,
        *,
        code: int,
        msg: str,
        status: int = 400,
        times: int = 1,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        """The next ``times`` requests to ``method path`` (carrying ``params``, when given) get this error
        instead of being executed."""
        self.faults.append(Fault(method.upper(), path, status, code, msg, headers or {}, times, params or {}))

    def partial_fill_next(self, fraction: Decimal | str, times: int = 1) -> None:
        """The next MARKET orders fill only ``fraction`` of their quantity (rounded down to the step) and end
        EXPIRED, as Binance's orders do when the book runs out within the price protection."""
        self.partial_fill_fraction, self.partial_fill_remaining = Decimal(str(fraction)), times

    def manual_algo_order(self, symbol: str, side: str, order_type: str, trigger: Decimal | str, *,
                          close_position: bool = True, quantity: str | None = None,
                          api_key: str | None = None) -> dict[str, Any]:
        """A conditional order placed outside the bot (Binance's app, or an entry whose answer was lost)."""
        account = self.accounts[api_key] if api_key else self.default_account
        params = {"symbol": symbol, "side": side, "type": order_type, "algoType": "CONDITIONAL",
                  "triggerPrice": str(trigger), "closePosition": "true" if close_position else "false",
                  "clientAlgoId": f"web{next(self._ids)}"}
        if quantity is not None:
            params |= {"quantity": quantity, "reduceOnly": "true"}
        order, _ = self._new_algo_order(account, params)
        return order   # the fake's own row: tests may edit it

    def cancel_algo_by_hand(self, algo: dict[str, Any], api_key: str | None = None) -> None:
        """A working conditional order cancelled in Binance's app: CANCELED, with its ALGO_UPDATE."""
        self._end_algo(self.accounts[api_key] if api_key else self.default_account, algo, "CANCELED")

    def set_leverage_by_hand(self, symbol: str, leverage: int, api_key: str | None = None) -> None:
        """The leverage changed in Binance's app: the account's ACCOUNT_CONFIG_UPDATE goes out like Binance's."""
        account = self.accounts[api_key] if api_key else self.default_account
        self._change_leverage(account, {"symbol": symbol, "leverage": str(leverage)})

    def unknown_status_next(self, times: int = 1) -> None:
        """The next order POSTs execute but answer HTTP 503 'Unknown error' (execution status unknown)."""
        self.unknown_status_remaining = times

    def slow_answer_next(self, seconds: float, times: int = 1) -> None:
        """The next order POSTs execute at once but their answer comes ``seconds`` later (client timeouts)."""
        self.slow_answer_remaining, self.slow_answer_s = times, seconds

    def hold_next_answer(self, path: str) -> asyncio.Event:
        """The next request to ``path`` is answered as of its arrival, but only once the event is set
        (a snapshot taken, its answer still in flight)."""
        release = self.held_answers[path] = asyncio.Event()
        return release

    def position(self, symbol: str, api_key: str | None = None) -> Position:
        account = self.accounts[api_key] if api_key else self.default_account
        return account.positions.get(symbol, Position())

    def orders_sent(self, path: str = "/fapi/v1/order", method: str = "POST") -> list[RecordedRequest]:
        """Requests that reached ``path`` (whatever the answer), in order."""
        return [r for r in self.requests if r.path == path and r.method == method]

    def reads(self, path: str, api_key: str | None = None) -> list[RecordedRequest]:
        """GET requests that reached ``path`` (whatever the answer), optionally for one API key, in order."""
        return [r for r in self.requests if r.path == path and r.method == "GET"
                and (api_key is None or r.api_key == api_key)]

    def manual_order(self, symbol: str, side: str, quantity: Decimal, api_key: str | None = None) -> dict[str, Any]:
        """A MARKET order placed outside the bot (Binance's app), filled at the mark price."""
        return super().manual_order(symbol, side, quantity, api_key or self.default_account.api_key)

    # ------------------------------------------------------------- lifecycle
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Mount the user-data streams and every REST route (a catch-all: register it last)."""
        self.streams.add_routes(router)
        router.add_route("*", "/{tail:.*}", self._dispatch)

    def start_background(self) -> None:
        """The periodic sweep (listenKey expiry, 24 h connections, triggers on a moving feed) on this loop."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop_background(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.streams.close_all()

    def sweep(self) -> None:
        """What the periodic task does, now: triggers on a moving feed, listenKey expiry, 24 h connections."""
        if self.feed is not None:
            self.check_triggers()
        self.streams.sweep()

    async def _sweep_forever(self, interval_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.sweep()

    async def start(self) -> str:
        app = web.Application()
        self.add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                                     max_line_size=MAX_REQUEST_LINE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.start_background()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self.stop_background()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinanceFutures:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        body = (await request.read()).decode()
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        recorded = RecordedRequest(method, path, params, request.headers.get("X-MBX-APIKEY"))
        if self.record_requests:
            self.requests.append(recorded)
        if path.startswith("/_fake/"):
            recorded.status = 200
            return await self._control(path, await request.json() if body else {})
        try:
            if self.latency_seconds:
                await asyncio.sleep(self.latency_seconds)
            admission = self.pool.admit(fake_weight(method, path, params), path)
            if not admission.admitted:
                assert admission.body is not None
                raise ApiError(admission.status, int(str(admission.body["code"])), str(admission.body["msg"]),
                               {"Retry-After": str(admission.retry_after)})
            result, headers = await self._handle(request, method, path, body, params)
            recorded.status = 200
            return web.json_response(result, headers={**headers, **self._weight_headers()})
        except ApiError as error:
            recorded.status = error.status
            return web.json_response({"code": error.code, "msg": error.msg}, status=error.status,
                                     headers={**error.headers, **self._weight_headers()})

    async def _handle(self, request: web.Request, method: str, path: str, body: str,
                      params: dict[str, str]) -> Answer:
        route = self._route_table.get((method, path))
        if route is None:
            raise ApiError(404, -1000, f"fake: no route {method} {path}")
        handler, auth = route
        account = None
        if auth == "signed":
            account = self._authenticate(request, body, params)
        elif auth == "key":
            account = self._api_key_account(request)
        if account is not None and self.feed is not None:
            self.check_account_triggers(account)   # the feed moved since: answer as Binance would now
        self._raise_fault(method, path, params)
        result, headers = handler(account, params)
        if headers and self.unknown_status_remaining > 0 and path in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
            # The order was executed; only the answer is lost, like Binance's 503.
            self.unknown_status_remaining -= 1
            raise ApiError(503, -1000, UNKNOWN_STATUS_MESSAGE)
        if headers and self.slow_answer_remaining > 0:
            self.slow_answer_remaining -= 1
            await asyncio.sleep(self.slow_answer_s)
        release = self.held_answers.pop(path, None)
        if release is not None:
            await release.wait()
        return result, headers

    def _weight_headers(self) -> dict[str, str]:
        used = self.pool.used_1m() if self.used_weight_1m is None else self.used_weight_1m
        return {WEIGHT_HEADER: str(used)}

    def _routes(self) -> dict[tuple[str, str], tuple[Handler, Auth]]:
        return {
            ("GET", "/fapi/v1/ping"): (lambda a, p: ({}, {}), "none"),
            ("GET", "/fapi/v1/time"): (lambda a, p: ({"serverTime": self.server_time_ms()}, {}), "none"),
            ("GET", "/fapi/v1/exchangeInfo"): (self._exchange_info, "none"),
            ("GET", "/fapi/v1/premiumIndex"): (self._premium_index, "none"),
            ("GET", "/fapi/v1/ticker/price"): (self._ticker_price, "none"),
            ("GET", "/fapi/v1/positionSide/dual"): (lambda a, p: ({"dualSidePosition": a.dual_side}, {}), "signed"),
            ("POST", "/fapi/v1/positionSide/dual"): (self._change_position_mode, "signed"),
            ("POST", "/fapi/v1/leverage"): (self._change_leverage, "signed"),
            ("POST", "/fapi/v1/marginType"): (self._change_margin_type, "signed"),
            ("GET", "/fapi/v3/positionRisk"): (self._position_risk, "signed"),
            ("GET", "/fapi/v2/balance"): (self._balance, "signed"),
            ("GET", "/fapi/v3/balance"): (self._balance, "signed"),
            ("GET", "/fapi/v2/account"): (self._account_info, "signed"),
            ("GET", "/fapi/v3/account"): (self._account_info_v3, "signed"),
            ("POST", "/fapi/v1/order"): (self._new_order, "signed"),
            ("GET", "/fapi/v1/order"): (self._query_order, "signed"),
            ("GET", "/fapi/v1/openOrders"): (lambda a, p: ([], {}), "signed"),
            ("GET", "/fapi/v1/allOrders"): (self._all_orders, "signed"),
            ("POST", "/fapi/v1/algoOrder"): (self._new_algo_order, "signed"),
            ("GET", "/fapi/v1/algoOrder"): (self._query_algo_order, "signed"),
            ("DELETE", "/fapi/v1/algoOrder"): (self._cancel_algo_order, "signed"),
            ("GET", "/fapi/v1/openAlgoOrders"): (self._open_algo_orders, "signed"),
            ("GET", "/fapi/v1/allAlgoOrders"): (self._all_algo_orders, "signed"),
            ("DELETE", "/fapi/v1/algoOpenOrders"): (self._cancel_all_algo_orders, "signed"),
            ("GET", "/fapi/v1/userTrades"): (self._user_trades, "signed"),
            ("GET", "/fapi/v1/income"): (self._income, "signed"),
            ("POST", "/fapi/v1/listenKey"): (self._listen_key_start, "key"),
            ("PUT", "/fapi/v1/listenKey"): (self._listen_key_keepalive, "key"),
            ("DELETE", "/fapi/v1/listenKey"): (self._listen_key_close, "key"),
        }

    async def _control(self, path: str, payload: dict[str, Any]) -> web.StreamResponse:
        if path == "/_fake/mark-price":
            self.set_mark_price(str(payload["symbol"]), str(payload["price"]))
            return web.json_response({"ok": True})
        if path == "/_fake/position-mode":
            self.default_account.dual_side = bool(payload["dualSidePosition"])
            return web.json_response({"ok": True})
        if path == "/_fake/advance-clock" and isinstance(self.clock, FakeClock):
            self.clock.advance(float(payload["seconds"]))
            return web.json_response({"ok": True, "now": self.clock.now()})
        return web.json_response({"code": -1000, "msg": f"fake: no control {path}"}, status=404)

    def _api_key_account(self, request: web.Request) -> Account:
        api_key = request.headers.get("X-MBX-APIKEY")
        if not api_key:
            raise ApiError(401, -2014, "API-key format invalid.")
        account = self.accounts.get(api_key)
        if account is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return account

    def _authenticate(self, request: web.Request, body: str, params: dict[str, str]) -> Account:
        account = self._api_key_account(request)
        # Binance signs totalParams = raw query string + raw body, each without its signature.
        query, query_signature = split_signature(request.query_string)
        form, body_signature = split_signature(body)
        signature = query_signature or body_signature
        if not signature:
            raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        expected = hmac.new(account.api_secret.encode(), (query + form).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        if "timestamp" not in params:
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        recv_window = int(params.get("recvWindow", "5000"))
        if recv_window > 60000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        timestamp, now = int(params["timestamp"]), self.server_time_ms()
        if timestamp >= now + 1000 or now - timestamp > recv_window:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return account

    def _raise_fault(self, method: str, path: str, params: dict[str, str]) -> None:
        for fault in self.faults:
            matches = all(params.get(key) == value for key, value in fault.params.items())
            if fault.method == method and fault.path == path and fault.remaining > 0 and matches:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                raise ApiError(fault.status, fault.code, fault.msg, fault.headers)

    # ------------------------------------------------------------ listenKeys
    def _listen_key_start(self, account: Account, params: dict[str, str]) -> Answer:
        return {"listenKey": self.streams.start_key(account.api_key)}, {}

    def _listen_key_keepalive(self, account: Account, params: dict[str, str]) -> Answer:
        try:
            self.streams.keepalive(account.api_key, params.get("listenKey"))
        except ListenKeyMissing:
            raise ApiError(400, -1125, "This listenKey does not exist.") from None
        return {"listenKey": self.streams.listen_key_of(account.api_key)}, {}

    def _listen_key_close(self, account: Account, params: dict[str, str]) -> Answer:
        try:
            self.streams.close_key(account.api_key, params.get("listenKey"))
        except ListenKeyMissing:
            raise ApiError(400, -1125, "This listenKey does not exist.") from None
        return {}, {}

    # ---------------------------------------------------------------- market
    def _exchange_info(self, account: Account | None, params: dict[str, str]) -> Answer:
        symbols = [
            {
                "symbol": spec.symbol, "pair": spec.symbol, "contractType": "PERPETUAL", "status": "TRADING",
                "baseAsset": spec.symbol[:-4], "quoteAsset": "USDT", "marginAsset": "USDT",
                "pricePrecision": spec.price_precision, "quantityPrecision": spec.quantity_precision,
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": fmt(spec.tick_size), "minPrice": "0.10", "maxPrice": "4529764"},
                    {"filterType": "LOT_SIZE", "stepSize": fmt(spec.step_size), "minQty": fmt(spec.min_qty), "maxQty": "1000"},
                    {"filterType": "MARKET_LOT_SIZE", "stepSize": fmt(spec.step_size), "minQty": fmt(spec.min_qty),
                     "maxQty": fmt(spec.max_qty)},
                    {"filterType": "MIN_NOTIONAL", "notional": fmt(spec.min_notional)},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
            }
            for spec in self.symbols.values()
        ]
        return {"timezone": "UTC", "serverTime": self.server_time_ms(), "rateLimits": [], "symbols": symbols}, {}

    def _premium_index(self, account: Account | None, params: dict[str, str]) -> Answer:
        def entry(symbol: str) -> dict[str, Any]:
            mark = fmt(self.mark(symbol))
            return {"symbol": symbol, "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark,
                    "lastFundingRate": "0.00010000", "interestRate": "0.00010000",
                    "nextFundingTime": self.server_time_ms() + 3_600_000, "time": self.server_time_ms()}

        if "symbol" in params:
            return entry(self._spec(params).symbol), {}
        return [entry(symbol) for symbol in (self.symbols if self.feed else self.mark_prices)], {}

    def _ticker_price(self, account: Account | None, params: dict[str, str]) -> Answer:
        def entry(symbol: str) -> dict[str, Any]:
            return {"symbol": symbol, "price": fmt(self.mark(symbol)), "time": self.server_time_ms()}

        if "symbol" in params:
            return entry(self._spec(params).symbol), {}
        return [entry(symbol) for symbol in (self.symbols if self.feed else self.mark_prices)], {}


async def _serve(port: int, api_key: str, api_secret: str, balance: Decimal) -> None:
    fake = FakeBinanceFutures(api_key=api_key, api_secret=api_secret, balance=balance, port=port)
    await serve_until_stopped(fake.start, fake.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description="Local fake Binance USDⓈ-M Futures trading server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--balance", default="10000")
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.port, args.api_key, args.api_secret, Decimal(args.balance)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
