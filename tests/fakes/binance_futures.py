"""A local Binance USDⓈ-M Futures trading server speaking the real REST protocol.

Tests point the real python-binance client at it (through
``ConfiguredAsyncClient``'s futures root) instead of mocking the library.
It checks what Binance checks before an order is accepted: the API key
header, the HMAC-SHA256 signature over the raw query string and form body
(as sent, percent-encoding included), timestamp/recvWindow, symbol filters,
margin, one-way/hedge position mode, duplicate client ids, and it rejects
conditional types on ``/fapi/v1/order`` with -4120 like Binance does since
2025-12-09 (they live on ``/fapi/v1/algoOrder``).

The simulated account fills MARKET orders at the mark price with a taker
fee, keeps one position per symbol, books userTrades and income records,
and triggers algo orders when a test moves the mark price
(``set_mark_price``). Fault hooks (``fail_next``, ``unknown_status_next``,
``clock_skew_ms``, ``order_count_bias``) make the awkward answers happen.

In process: ``async with FakeBinanceFutures(...) as fake: fake.url``.
Standalone: ``python -m tests.fakes.binance_futures --port N --api-key K
--api-secret S`` prints ``READY http://127.0.0.1:N``; ``POST /_fake/mark-price``
(JSON ``{"symbol", "price"}``) moves the mark price from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import re
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.standalone import serve_until_stopped

TAKER_FEE_RATE = Decimal("0.0005")
ORDER_LIMIT_10S = 300
ORDER_LIMIT_1M = 1200
CLIENT_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CONDITIONAL_TYPES = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
UNKNOWN_STATUS_MESSAGE = "Unknown error, please check your request or try again later."


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    price_precision: int
    quantity_precision: int


DEFAULT_SYMBOLS = (
    SymbolSpec("BTCUSDT", Decimal("0.10"), Decimal("0.001"), Decimal("0.001"), Decimal("120"), Decimal("100"), 2, 3),
    SymbolSpec("ETHUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal("2000"), Decimal("20"), 2, 3),
)


class ApiError(Exception):
    """A Binance error answer: HTTP status plus ``{"code", "msg"}``."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}


@dataclass
class Fault:
    method: str
    path: str
    status: int
    code: int
    msg: str
    headers: dict[str, str]
    remaining: int
    params: dict[str, str] = field(default_factory=dict)   # only requests carrying these parameters


@dataclass
class Position:
    amount: Decimal = Decimal(0)      # signed: > 0 long, < 0 short
    entry_price: Decimal = Decimal(0)


@dataclass
class Account:
    api_key: str
    api_secret: str
    wallet_balance: Decimal
    dual_side: bool = False
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    algo_orders: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    income: list[dict[str, Any]] = field(default_factory=list)
    order_times: deque[float] = field(default_factory=deque)


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    api_key: str | None
    status: int = 0   # 0 while the answer is still being prepared


def _fmt(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -int(exponent))


class FakeBinanceFutures:
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
    ) -> None:
        self.symbols = {spec.symbol: spec for spec in symbols}
        self.mark_prices: dict[str, Decimal] = {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000")}
        self.mark_prices.update(mark_prices or {})
        self.accounts: dict[str, Account] = {}
        self.add_account(api_key, api_secret, balance)
        self.default_account = self.accounts[api_key]
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.unknown_status_remaining = 0
        self.slow_answer_remaining = 0
        self.slow_answer_s = 0.0
        self.partial_fill_remaining = 0
        self.partial_fill_fraction = Decimal(1)
        self.clock_skew_ms = 0
        self.order_count_bias = 0
        self.used_weight_1m: int | None = None   # when set, every answer reports it as X-MBX-USED-WEIGHT-1M
        self._host = host
        self._port = port
        self._ids = itertools.count(1_000_001)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ----------------------------------------------------------- test controls
    def add_account(self, api_key: str, api_secret: str, balance: Decimal = Decimal("10000")) -> Account:
        account = Account(api_key=api_key, api_secret=api_secret, wallet_balance=balance)
        self.accounts[api_key] = account
        return account

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
        return order

    def unknown_status_next(self, times: int = 1) -> None:
        """The next order POSTs execute but answer HTTP 503 'Unknown error' (execution status unknown)."""
        self.unknown_status_remaining = times

    def slow_answer_next(self, seconds: float, times: int = 1) -> None:
        """The next order POSTs execute at once but their answer comes ``seconds`` later (client timeouts)."""
        self.slow_answer_remaining, self.slow_answer_s = times, seconds

    def server_time_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_skew_ms

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
        account = self.accounts[api_key] if api_key else self.default_account
        return self._execute(account, symbol, side, quantity, f"web_{next(self._ids)}", False, order_type="MARKET")

    def set_mark_price(self, symbol: str, price: Decimal | str) -> None:
        """Move the mark price and trigger every conditional order it crosses."""
        self.mark_prices[symbol] = Decimal(str(price))
        for account in self.accounts.values():
            self._trigger_algo_orders(account, symbol)

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinanceFutures:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return web.json_response({"code": error.code, "msg": error.msg}, status=error.status, headers=error.headers)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        body = (await request.read()).decode()
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        recorded = RecordedRequest(method, path, params, request.headers.get("X-MBX-APIKEY"))
        self.requests.append(recorded)
        try:
            if path.startswith("/_fake/"):
                recorded.status = 200
                return await self._control(path, await request.json() if body else {})
            route = self._routes().get((method, path))
            if route is None:
                raise ApiError(404, -1000, f"fake: no route {method} {path}")
            handler, signed = route
            account = self._authenticate(request, body, params) if signed else None
            self._raise_fault(method, path, params)
            result, headers = handler(account, params)
            if headers and self.unknown_status_remaining > 0 and path in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
                # The order was executed; only the answer is lost, like Binance's 503.
                self.unknown_status_remaining -= 1
                raise ApiError(503, -1000, UNKNOWN_STATUS_MESSAGE)
            if headers and self.slow_answer_remaining > 0:
                self.slow_answer_remaining -= 1
                await asyncio.sleep(self.slow_answer_s)
            recorded.status = 200
            return web.json_response(result, headers={**headers, **self._weight_headers()})
        except ApiError as error:
            recorded.status = error.status
            error.headers = {**error.headers, **self._weight_headers()}
            raise

    def _weight_headers(self) -> dict[str, str]:
        return {} if self.used_weight_1m is None else {"X-MBX-USED-WEIGHT-1M": str(self.used_weight_1m)}

    def _routes(self) -> dict[tuple[str, str], tuple[Any, bool]]:
        return {
            ("GET", "/fapi/v1/ping"): (lambda a, p: ({}, {}), False),
            ("GET", "/fapi/v1/time"): (lambda a, p: ({"serverTime": self.server_time_ms()}, {}), False),
            ("GET", "/fapi/v1/exchangeInfo"): (self._exchange_info, False),
            ("GET", "/fapi/v1/premiumIndex"): (self._premium_index, False),
            ("GET", "/fapi/v1/ticker/price"): (self._ticker_price, False),
            ("GET", "/fapi/v1/positionSide/dual"): (lambda a, p: ({"dualSidePosition": a.dual_side}, {}), True),
            ("POST", "/fapi/v1/positionSide/dual"): (self._change_position_mode, True),
            ("POST", "/fapi/v1/leverage"): (self._change_leverage, True),
            ("POST", "/fapi/v1/marginType"): (self._change_margin_type, True),
            ("GET", "/fapi/v3/positionRisk"): (self._position_risk, True),
            ("GET", "/fapi/v2/balance"): (self._balance, True),
            ("GET", "/fapi/v3/balance"): (self._balance, True),
            ("GET", "/fapi/v2/account"): (self._account_info, True),
            ("GET", "/fapi/v3/account"): (self._account_info_v3, True),
            ("POST", "/fapi/v1/order"): (self._new_order, True),
            ("GET", "/fapi/v1/order"): (self._query_order, True),
            ("GET", "/fapi/v1/openOrders"): (lambda a, p: ([], {}), True),
            ("GET", "/fapi/v1/allOrders"): (self._all_orders, True),
            ("POST", "/fapi/v1/algoOrder"): (self._new_algo_order, True),
            ("GET", "/fapi/v1/algoOrder"): (self._query_algo_order, True),
            ("DELETE", "/fapi/v1/algoOrder"): (self._cancel_algo_order, True),
            ("GET", "/fapi/v1/openAlgoOrders"): (self._open_algo_orders, True),
            ("GET", "/fapi/v1/allAlgoOrders"): (self._all_algo_orders, True),
            ("DELETE", "/fapi/v1/algoOpenOrders"): (self._cancel_all_algo_orders, True),
            ("GET", "/fapi/v1/userTrades"): (self._user_trades, True),
            ("GET", "/fapi/v1/income"): (self._income, True),
        }

    async def _control(self, path: str, payload: dict[str, Any]) -> web.StreamResponse:
        if path == "/_fake/mark-price":
            self.set_mark_price(str(payload["symbol"]), str(payload["price"]))
            return web.json_response({"ok": True})
        if path == "/_fake/position-mode":
            self.default_account.dual_side = bool(payload["dualSidePosition"])
            return web.json_response({"ok": True})
        raise ApiError(404, -1000, f"fake: no control {path}")

    def _authenticate(self, request: web.Request, body: str, params: dict[str, str]) -> Account:
        api_key = request.headers.get("X-MBX-APIKEY")
        if not api_key:
            raise ApiError(401, -2014, "API-key format invalid.")
        account = self.accounts.get(api_key)
        if account is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        # Binance signs totalParams = raw query string + raw body, each without its signature.
        query, query_signature = _split_signature(request.query_string)
        form, body_signature = _split_signature(body)
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

    # ---------------------------------------------------------------- market
    def _spec(self, params: dict[str, str]) -> SymbolSpec:
        symbol = params.get("symbol")
        if not symbol:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        spec = self.symbols.get(symbol)
        if spec is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return spec

    def _exchange_info(self, account: Account | None, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        symbols = [
            {
                "symbol": spec.symbol, "pair": spec.symbol, "contractType": "PERPETUAL", "status": "TRADING",
                "baseAsset": spec.symbol[:-4], "quoteAsset": "USDT", "marginAsset": "USDT",
                "pricePrecision": spec.price_precision, "quantityPrecision": spec.quantity_precision,
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": _fmt(spec.tick_size), "minPrice": "0.10", "maxPrice": "4529764"},
                    {"filterType": "LOT_SIZE", "stepSize": _fmt(spec.step_size), "minQty": _fmt(spec.min_qty), "maxQty": "1000"},
                    {"filterType": "MARKET_LOT_SIZE", "stepSize": _fmt(spec.step_size), "minQty": _fmt(spec.min_qty),
                     "maxQty": _fmt(spec.max_qty)},
                    {"filterType": "MIN_NOTIONAL", "notional": _fmt(spec.min_notional)},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
            }
            for spec in self.symbols.values()
        ]
        return {"timezone": "UTC", "serverTime": self.server_time_ms(), "rateLimits": [], "symbols": symbols}, {}

    def _premium_index(self, account: Account | None, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        def entry(symbol: str) -> dict[str, Any]:
            mark = _fmt(self.mark_prices[symbol])
            return {"symbol": symbol, "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark,
                    "lastFundingRate": "0.00010000", "interestRate": "0.00010000",
                    "nextFundingTime": self.server_time_ms() + 3_600_000, "time": self.server_time_ms()}

        if "symbol" in params:
            return entry(self._spec(params).symbol), {}
        return [entry(symbol) for symbol in self.mark_prices], {}

    def _ticker_price(self, account: Account | None, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        symbol = self._spec(params).symbol
        return {"symbol": symbol, "price": _fmt(self.mark_prices[symbol]), "time": self.server_time_ms()}, {}

    # ------------------------------------------------------- account settings
    def _change_position_mode(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        dual = params.get("dualSidePosition", "").lower() == "true"
        if dual == account.dual_side:
            raise ApiError(400, -4059, "No need to change position side.")
        if any(p.amount != 0 for p in account.positions.values()):
            raise ApiError(400, -4068, "Position side cannot be changed if there exists position.")
        account.dual_side = dual
        return {"code": 200, "msg": "success"}, {}

    def _change_leverage(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        leverage = int(params.get("leverage", "0"))
        if not 1 <= leverage <= 125:
            raise ApiError(400, -4028, f"Leverage {leverage} is not valid")
        account.leverage[spec.symbol] = leverage
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": spec.symbol}, {}

    def _change_margin_type(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        margin_type = params.get("marginType", "").upper()
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -4044, "The margin type is not valid.")
        if account.margin_type.get(spec.symbol, "CROSSED") == margin_type:
            raise ApiError(400, -4046, "No need to change margin type.")
        if account.positions.get(spec.symbol, Position()).amount != 0:
            raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
        account.margin_type[spec.symbol] = margin_type
        return {"code": 200, "msg": "success"}, {}

    # ------------------------------------------------------ account reading
    def _leverage(self, account: Account, symbol: str) -> int:
        return account.leverage.get(symbol, 20)

    def _position_margin(self, account: Account, symbol: str, position: Position) -> Decimal:
        return abs(position.amount) * position.entry_price / self._leverage(account, symbol)

    def _unrealized(self, symbol: str, position: Position) -> Decimal:
        return (self.mark_prices[symbol] - position.entry_price) * position.amount

    def _available(self, account: Account) -> Decimal:
        used = sum((self._position_margin(account, s, p) for s, p in account.positions.items()), Decimal(0))
        losses = sum((min(Decimal(0), self._unrealized(s, p)) for s, p in account.positions.items()), Decimal(0))
        return account.wallet_balance - used + losses

    def _position_risk(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        wanted = self._spec(params).symbol if "symbol" in params else None
        rows = []
        for symbol, position in account.positions.items():
            if position.amount == 0 or (wanted and symbol != wanted):
                continue
            mark = self.mark_prices[symbol]
            notional = position.amount * mark
            initial = abs(notional) / self._leverage(account, symbol)
            isolated = account.margin_type.get(symbol, "CROSSED") == "ISOLATED"
            isolated_wallet = self._position_margin(account, symbol, position) if isolated else Decimal(0)
            unrealized = self._unrealized(symbol, position)
            rows.append({
                "symbol": symbol, "positionSide": "BOTH", "positionAmt": _fmt(position.amount),
                "entryPrice": _fmt(position.entry_price), "breakEvenPrice": _fmt(position.entry_price),
                "markPrice": _fmt(mark), "unRealizedProfit": _fmt(unrealized), "liquidationPrice": "0",
                "isolatedMargin": _fmt(isolated_wallet + unrealized if isolated else Decimal(0)),
                "notional": _fmt(notional), "marginAsset": "USDT", "isolatedWallet": _fmt(isolated_wallet),
                "initialMargin": _fmt(initial), "maintMargin": _fmt(initial / 10),
                "positionInitialMargin": _fmt(initial), "openOrderInitialMargin": "0", "adl": 1,
                "bidNotional": "0", "askNotional": "0", "updateTime": self.server_time_ms(),
            })
        return rows, {}

    def _balance(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        unrealized = sum((self._unrealized(s, p) for s, p in account.positions.items()), Decimal(0))
        available = self._available(account)
        return [{
            "accountAlias": "SgsR", "asset": "USDT", "balance": _fmt(account.wallet_balance),
            "crossWalletBalance": _fmt(account.wallet_balance), "crossUnPnl": _fmt(unrealized),
            "availableBalance": _fmt(available), "maxWithdrawAmount": _fmt(max(available, Decimal(0))),
            "marginAvailable": True, "updateTime": self.server_time_ms(),
        }], {}

    def _account_info(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        balance = self._balance(account, params)[0][0]
        return {
            "totalWalletBalance": balance["balance"], "availableBalance": balance["availableBalance"],
            "totalUnrealizedProfit": balance["crossUnPnl"], "assets": [
                {"asset": "USDT", "walletBalance": balance["balance"], "availableBalance": balance["availableBalance"],
                 "unrealizedProfit": balance["crossUnPnl"]}],
            "positions": self._position_risk(account, {})[0],
        }, {}

    def _account_info_v3(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        """GET /fapi/v3/account as Binance shapes it: USDT asset row; position rows without entry or mark price."""
        balance = self._balance(account, params)[0][0]
        risk = self._position_risk(account, {})[0]
        initial = sum((Decimal(r["initialMargin"]) for r in risk), Decimal(0))
        maint = sum((Decimal(r["maintMargin"]) for r in risk), Decimal(0))
        margin_balance = _fmt(account.wallet_balance + Decimal(balance["crossUnPnl"]))
        asset = {
            "asset": "USDT", "walletBalance": balance["balance"], "unrealizedProfit": balance["crossUnPnl"],
            "marginBalance": margin_balance, "maintMargin": _fmt(maint), "initialMargin": _fmt(initial),
            "positionInitialMargin": _fmt(initial), "openOrderInitialMargin": "0",
            "crossWalletBalance": balance["balance"], "crossUnPnl": balance["crossUnPnl"],
            "availableBalance": balance["availableBalance"], "maxWithdrawAmount": balance["maxWithdrawAmount"],
            "updateTime": self.server_time_ms(),
        }
        positions = [{
            "symbol": r["symbol"], "positionSide": r["positionSide"], "positionAmt": r["positionAmt"],
            "unrealizedProfit": r["unRealizedProfit"], "isolatedMargin": r["isolatedMargin"],
            "notional": r["notional"], "isolatedWallet": r["isolatedWallet"], "initialMargin": r["initialMargin"],
            "maintMargin": r["maintMargin"], "updateTime": r["updateTime"],
        } for r in risk]
        return {
            "totalInitialMargin": _fmt(initial), "totalMaintMargin": _fmt(maint),
            "totalWalletBalance": balance["balance"], "totalUnrealizedProfit": balance["crossUnPnl"],
            "totalMarginBalance": margin_balance, "totalPositionInitialMargin": _fmt(initial),
            "totalOpenOrderInitialMargin": "0", "totalCrossWalletBalance": balance["balance"],
            "totalCrossUnPnl": balance["crossUnPnl"], "availableBalance": balance["availableBalance"],
            "maxWithdrawAmount": balance["maxWithdrawAmount"], "assets": [asset], "positions": positions,
        }, {}

    # ---------------------------------------------------------------- orders
    def _order_count_headers(self, account: Account) -> dict[str, str]:
        now = time.monotonic()
        account.order_times.append(now)
        while account.order_times and now - account.order_times[0] > 60:
            account.order_times.popleft()
        last_10s = sum(1 for t in account.order_times if now - t <= 10) + self.order_count_bias
        last_1m = len(account.order_times) + self.order_count_bias
        headers = {"X-MBX-ORDER-COUNT-10S": str(last_10s), "X-MBX-ORDER-COUNT-1M": str(last_1m)}
        if last_10s > ORDER_LIMIT_10S or last_1m > ORDER_LIMIT_1M:
            raise ApiError(429, -1015, f"Too many new orders; current limit is {ORDER_LIMIT_10S} orders per TEN_SECONDS.",
                           {**headers, "Retry-After": "10"})
        return headers

    def _check_position_side(self, account: Account, params: dict[str, str]) -> None:
        position_side = params.get("positionSide", "BOTH").upper()
        if account.dual_side != (position_side in ("LONG", "SHORT")):
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")

    def _check_client_id(self, client_id: str, existing: list[dict[str, Any]], key: str) -> None:
        if not CLIENT_ID_PATTERN.match(client_id):
            raise ApiError(400, -4015, "Client order id is not valid.")
        if any(order[key] == client_id for order in existing):
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")

    def _check_step(self, value: Decimal, step: Decimal, precision: int, code: int, what: str) -> None:
        if _decimals(value) > precision:
            raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
        if value % step != 0:
            raise ApiError(400, code, f"{what} not increased by {'tick' if code == -4014 else 'step'} size.")

    def _new_order(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        order_type = params.get("type", "").upper()
        if order_type in CONDITIONAL_TYPES:
            raise ApiError(400, -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.")
        if order_type != "MARKET":
            raise ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        self._check_position_side(account, params)
        client_id = params.get("newClientOrderId") or f"fake{next(self._ids)}"
        self._check_client_id(client_id, account.orders, "clientOrderId")
        try:
            quantity = Decimal(params["quantity"])
        except (KeyError, ArithmeticError):
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.") from None
        if quantity <= 0:
            raise ApiError(400, -4003, "Quantity less than or equal to zero.")
        self._check_step(quantity, spec.step_size, spec.quantity_precision, -4023, "Qty")
        if quantity < spec.min_qty or quantity > spec.max_qty:
            raise ApiError(400, -1013, "Filter failure: MARKET_LOT_SIZE")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        mark = self.mark_prices[spec.symbol]
        position = account.positions.get(spec.symbol, Position())
        signed = quantity if side == "BUY" else -quantity
        if reduce_only:
            if position.amount == 0 or (position.amount > 0) == (signed > 0):
                raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
            quantity = min(quantity, abs(position.amount))
        elif quantity * mark < spec.min_notional:
            raise ApiError(400, -4164, f"Order's notional must be no smaller than {_fmt(spec.min_notional)} (unless you choose reduce only).")
        opening = quantity if position.amount == 0 or (position.amount > 0) == (signed > 0) else max(Decimal(0), quantity - abs(position.amount))
        required = opening * mark / self._leverage(account, spec.symbol) + quantity * mark * TAKER_FEE_RATE
        if opening > 0 and required > self._available(account):
            raise ApiError(400, -2019, "Margin is insufficient.")
        headers = self._order_count_headers(account)
        ordered = quantity
        if self.partial_fill_remaining > 0:
            self.partial_fill_remaining -= 1
            quantity = (quantity * self.partial_fill_fraction // spec.step_size) * spec.step_size
        order = self._execute(account, spec.symbol, side, quantity, client_id, reduce_only, order_type="MARKET")
        if quantity < ordered:
            order.update(status="EXPIRED", origQty=_fmt(ordered))
        if params.get("newOrderRespType", "ACK").upper() == "ACK":
            return {**order, "status": "NEW", "executedQty": "0", "cumQuote": "0", "avgPrice": "0.00"}, headers
        return order, headers

    def _execute(self, account: Account, symbol: str, side: str, quantity: Decimal, client_id: str,
                 reduce_only: bool, order_type: str, close_position: bool = False) -> dict[str, Any]:
        """Fill at the mark price: position, wallet, trade and income records."""
        price = self.mark_prices[symbol]
        now = self.server_time_ms()
        order_id = next(self._ids)
        position = account.positions.setdefault(symbol, Position())
        signed = quantity if side == "BUY" else -quantity
        realized = Decimal(0)
        if position.amount != 0 and (position.amount > 0) != (signed > 0):
            closing = min(quantity, abs(position.amount))
            direction = 1 if position.amount > 0 else -1
            realized = (price - position.entry_price) * closing * direction
            remainder = position.amount + signed
            if remainder == 0 or (remainder > 0) == (position.amount > 0):
                position.amount = remainder
            else:
                position.amount, position.entry_price = remainder, price
        else:
            new_amount = position.amount + signed
            position.entry_price = (abs(position.amount) * position.entry_price + quantity * price) / abs(new_amount)
            position.amount = new_amount
        if position.amount == 0:
            position.entry_price = Decimal(0)
        fee = quantity * price * TAKER_FEE_RATE
        account.wallet_balance += realized - fee
        trade_id = next(self._ids)
        account.trades.append({
            "buyer": side == "BUY", "commission": _fmt(fee), "commissionAsset": "USDT", "id": trade_id,
            "maker": False, "orderId": order_id, "price": _fmt(price), "qty": _fmt(quantity),
            "quoteQty": _fmt(quantity * price), "realizedPnl": _fmt(realized), "side": side,
            "positionSide": "BOTH", "symbol": symbol, "time": now,
        })
        if realized != 0:
            self._add_income(account, symbol, "REALIZED_PNL", realized, now, trade_id)
        self._add_income(account, symbol, "COMMISSION", -fee, now, trade_id)
        order = {
            "orderId": order_id, "symbol": symbol, "status": "FILLED", "clientOrderId": client_id, "price": "0",
            "avgPrice": _fmt(price), "origQty": _fmt(quantity), "executedQty": _fmt(quantity),
            "cumQty": _fmt(quantity), "cumQuote": _fmt(quantity * price), "timeInForce": "GTC", "type": order_type,
            "reduceOnly": reduce_only, "closePosition": close_position, "side": side, "positionSide": "BOTH",
            "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": order_type,
            "priceMatch": "NONE", "selfTradePreventionMode": "NONE", "goodTillDate": 0, "time": now, "updateTime": now,
        }
        account.orders.append(order)
        return order

    def _add_income(self, account: Account, symbol: str, kind: str, amount: Decimal, now: int, trade_id: int) -> None:
        account.income.append({"symbol": symbol, "incomeType": kind, "income": _fmt(amount), "asset": "USDT",
                               "info": "", "time": now, "tranId": next(self._ids), "tradeId": str(trade_id)})

    def _query_order(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        for order in account.orders:
            if order["symbol"] == spec.symbol and (
                str(order["orderId"]) == params.get("orderId") or order["clientOrderId"] == params.get("origClientOrderId")
            ):
                return order, {}
        raise ApiError(400, -2013, "Order does not exist.")

    def _all_orders(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        return [o for o in account.orders if o["symbol"] == spec.symbol], {}

    # ------------------------------------------------------------ algo orders
    def _new_algo_order(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        if params.get("algoType") != "CONDITIONAL":
            raise ApiError(400, -1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        order_type = params.get("type", "").upper()
        if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        self._check_position_side(account, params)
        client_id = params.get("clientAlgoId") or f"fakealgo{next(self._ids)}"
        self._check_client_id(client_id, account.algo_orders, "clientAlgoId")
        close_position = params.get("closePosition", "false").lower() == "true"
        if close_position and "quantity" in params:
            raise ApiError(400, -1106, "Parameter 'quantity' sent when not required.")
        if not close_position and "quantity" not in params:
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        try:
            trigger = Decimal(params["triggerPrice"])
        except (KeyError, ArithmeticError):
            raise ApiError(400, -1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.") from None
        self._check_step(trigger, spec.tick_size, spec.price_precision, -4014, "Price")
        working_type = params.get("workingType", "CONTRACT_PRICE").upper()
        if self._crossed(order_type, side, trigger, self.mark_prices[spec.symbol]):
            raise ApiError(400, -2021, "Order would immediately trigger.")
        headers = self._order_count_headers(account)
        now = self.server_time_ms()
        algo = {
            "algoId": next(self._ids), "clientAlgoId": client_id, "algoType": "CONDITIONAL", "orderType": order_type,
            "symbol": spec.symbol, "side": side, "positionSide": "BOTH", "timeInForce": "GTC",
            "quantity": params.get("quantity", "0"), "algoStatus": "NEW", "triggerPrice": _fmt(trigger),
            "price": "0", "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": working_type, "priceMatch": "NONE", "closePosition": close_position,
            "priceProtect": params.get("priceProtect", "false").lower() == "true",
            "reduceOnly": params.get("reduceOnly", "false").lower() == "true", "activatePrice": "",
            "callbackRate": "", "createTime": now, "updateTime": now, "triggerTime": 0, "goodTillDate": 0,
            "actualOrderId": "", "actualPrice": "0",
        }
        account.algo_orders.append(algo)
        return algo, headers

    @staticmethod
    def _crossed(order_type: str, side: str, trigger: Decimal, mark: Decimal) -> bool:
        """Whether a conditional order's trigger is reached at ``mark``."""
        falling = (order_type == "STOP_MARKET") == (side == "SELL")   # SELL stops and BUY take-profits fire on the way down
        return mark <= trigger if falling else mark >= trigger

    def _trigger_algo_orders(self, account: Account, symbol: str) -> None:
        mark = self.mark_prices[symbol]
        for algo in account.algo_orders:
            if algo["symbol"] != symbol or algo["algoStatus"] != "NEW":
                continue
            if not self._crossed(algo["orderType"], algo["side"], Decimal(algo["triggerPrice"]), mark):
                continue
            position = account.positions.get(symbol, Position())
            closes = position.amount != 0 and (position.amount > 0) == (algo["side"] == "SELL")
            now = self.server_time_ms()
            algo.update(triggerTime=now, updateTime=now)
            if algo["closePosition"] and not closes:
                algo["algoStatus"] = "EXPIRED"
                continue
            quantity = abs(position.amount) if algo["closePosition"] else Decimal(algo["quantity"])
            order = self._execute(account, symbol, algo["side"], quantity, algo["clientAlgoId"], True,
                                  order_type=algo["orderType"], close_position=algo["closePosition"])
            algo.update(algoStatus="FINISHED", actualOrderId=str(order["orderId"]), actualPrice=order["avgPrice"])

    def _find_algo(self, account: Account, params: dict[str, str]) -> dict[str, Any]:
        for algo in account.algo_orders:
            if str(algo["algoId"]) == params.get("algoId") or algo["clientAlgoId"] == params.get("clientAlgoId"):
                return algo
        raise ApiError(400, -2013, "Order does not exist.")

    def _query_algo_order(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        return self._find_algo(account, params), {}

    def _cancel_algo_order(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        try:
            algo = self._find_algo(account, params)
        except ApiError:
            raise ApiError(400, -2011, "Unknown order sent.") from None
        if algo["algoStatus"] != "NEW":
            raise ApiError(400, -2011, "Unknown order sent.")
        algo.update(algoStatus="CANCELED", updateTime=self.server_time_ms())
        return {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"], "code": "200", "msg": "success"}, {}

    def _open_algo_orders(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        symbol = self._spec(params).symbol if "symbol" in params else None
        return [a for a in account.algo_orders if a["algoStatus"] == "NEW" and symbol in (None, a["symbol"])], {}

    def _all_algo_orders(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        start = int(params.get("startTime", "0"))
        return [a for a in account.algo_orders if a["symbol"] == spec.symbol and a["createTime"] >= start], {}

    def _cancel_all_algo_orders(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        for algo in account.algo_orders:
            if algo["symbol"] == spec.symbol and algo["algoStatus"] == "NEW":
                algo.update(algoStatus="CANCELED", updateTime=self.server_time_ms())
        return {"code": 200, "msg": "The operation of cancel all open order is done."}, {}

    # --------------------------------------------------------------- history
    def _user_trades(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        spec = self._spec(params)
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        limit = min(int(params.get("limit", "500")), 1000)
        rows = [
            t for t in account.trades
            if t["symbol"] == spec.symbol and start <= t["time"] <= end
            and ("orderId" not in params or str(t["orderId"]) == params["orderId"])
            and ("fromId" not in params or t["id"] >= int(params["fromId"]))
        ]
        return rows[:limit], {}

    def _income(self, account: Account, params: dict[str, str]) -> tuple[Any, dict[str, str]]:
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        limit = min(int(params.get("limit", "100")), 1000)
        rows = [
            i for i in account.income
            if start <= i["time"] <= end
            and ("symbol" not in params or i["symbol"] == params["symbol"])
            and ("incomeType" not in params or i["incomeType"] == params["incomeType"])
        ]
        return rows[:limit], {}


def _split_signature(raw: str) -> tuple[str, str | None]:
    """``a=1&b=2&signature=ff`` -> (``a=1&b=2``, ``ff``), keeping the rest byte for byte."""
    parts = raw.split("&") if raw else []
    kept = [part for part in parts if not part.startswith("signature=")]
    signature = next((part.split("=", 1)[1] for part in parts if part.startswith("signature=")), None)
    return "&".join(kept), signature


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
