"""Binance USDⓈ-M Futures as one server: market data, trading and user-data streams behind one IP.

One aiohttp app on one port: the market-data routes of ``FakeBinanceMarket``
(klines, exchangeInfo, premiumIndex, time, ping), the trading and listenKey
routes of ``FakeBinanceFutures`` and its WebSockets (``/ws/<listenKey>``,
``/stream``), all admitted by one ``IpWeightPool`` (2,400 a minute, 429 then
418 bans). Symbols, filters and mark prices come from the simulated feed at
the fake clock, so fills, premiumIndex and klines agree; ``set_mark_price``
pins a symbol's mark (premiumIndex, ticker and fills follow it, klines keep
the feed) and fires the conditional orders it crosses. With the feed moving,
crossed orders fire before the account's next request and on the periodic
sweep (every 0.5 s, or ``sweep()`` / ``advance()`` now).

Built for 2,000 accounts and ~50 symbols: accounts are found by API key in a
dict, open conditional orders by symbol; nothing scans every account per request.

In the caller's loop: ``async with FakeBinanceExchange() as ex``. From
synchronous code (the benchmark): ``with FakeBinanceExchange().in_thread() as ex``;
the hooks below then run on the server's loop. As a process:
``python -m tests.fakes.binance_exchange --port N`` prints ``READY http://127.0.0.1:N``;
``POST /_fake/accounts``, ``/_fake/positions``, ``/_fake/mark-price``,
``/_fake/advance-clock`` and ``GET /_fake/stats`` drive it from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

from aiohttp import web

from tests.fakes.binance_events import Event
from tests.fakes.binance_futures import MAX_REQUEST_LINE, FakeBinanceFutures
from tests.fakes.binance_futures_model import Position
from tests.fakes.binance_limits import FakeClock, IpWeightPool
from tests.fakes.binance_market import FakeBinanceMarket
from tests.fakes.binance_user_stream import UserStreams
from tests.fakes.simulated_feed import SimulatedFeed
from tests.fakes.standalone import serve_until_stopped

T = TypeVar("T")
DEFAULT_API_KEY = "fake-exchange-default-key"
DEFAULT_API_SECRET = "fake-exchange-default-secret"


class FakeBinanceExchange:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, clock: FakeClock | None = None,
                 weight_limit_1m: int = 2400, latency_ms: float = 0.0, api_key: str = DEFAULT_API_KEY,
                 api_secret: str = DEFAULT_API_SECRET, balance: Decimal = Decimal("10000"),
                 record_requests: bool = True) -> None:
        self.clock = clock or FakeClock()
        self.pool = IpWeightPool(weight_limit_1m, self.clock)
        self.feed = SimulatedFeed(self.clock)
        self.streams = UserStreams(self.clock)
        self.futures = FakeBinanceFutures(
            api_key=api_key, api_secret=api_secret, balance=balance, symbols=self.feed.specs(), clock=self.clock,
            pool=self.pool, feed=self.feed, streams=self.streams, latency_ms=latency_ms,
            record_requests=record_requests)
        self.market = FakeBinanceMarket(clock=self.clock, weight_limit_1m=weight_limit_1m, pool=self.pool,
                                        feed=self.feed, mark_price=self.futures.mark, latency_ms=latency_ms)
        self.host = host
        self.port = port
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None   # set in thread mode only
        self._thread: threading.Thread | None = None

    @property
    def ws_url(self) -> str:
        """The stream root (``/ws/<listenKey>``, ``/stream?streams=``)."""
        return "ws" + self.url.removeprefix("http")

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/_fake/stats", self._stats_route)
        app.router.add_post("/_fake/accounts", self._accounts_route)
        app.router.add_post("/_fake/positions", self._positions_route)
        self.market.add_routes(app.router)
        self.futures.add_routes(app.router)   # streams, then the trading catch-all
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                                     max_line_size=MAX_REQUEST_LINE)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = self.futures.url = f"http://{self.host}:{self.port}"
        self.market.port = self.port
        self.futures.start_background()
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self.futures.stop_background()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinanceExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextmanager
    def in_thread(self) -> Iterator[FakeBinanceExchange]:
        """Serve from a thread of its own (for synchronous callers); hooks hop onto its loop."""
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="fake-binance-exchange", daemon=True)
        self._thread.start()
        self._loop = loop
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            loop.close()
            self._loop = self._thread = None

    def _on_loop(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a hook where the server's state lives: here, or on the server thread's loop."""
        if self._loop is None or threading.current_thread() is self._thread:
            return function(*args, **kwargs)

        async def invoke() -> T:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(60)

    # --------------------------------------------------------------- seeding
    def add_account(self, api_key: str, api_secret: str, balance: Decimal | str = Decimal("10000")) -> None:
        self._on_loop(self.futures.add_account, api_key, api_secret, Decimal(str(balance)))

    def seed_position(self, api_key: str, symbol: str, side: str, quantity: Decimal | str,
                      entry_price: Decimal | str, leverage: int, margin_type: str,
                      stop_loss: Decimal | str | None = None, take_profit: Decimal | str | None = None, *,
                      stop_loss_client_id: str | None = None,
                      take_profit_client_id: str | None = None) -> list[dict[str, Any]]:
        """An open position and its close-all STOP_MARKET / TAKE_PROFIT_MARKET, without weight or events."""
        return self._on_loop(self.futures.seed_position, api_key, symbol, side, quantity, entry_price, leverage,
                             margin_type, stop_loss, take_profit, stop_loss_client_id=stop_loss_client_id,
                             take_profit_client_id=take_profit_client_id)

    # ---------------------------------------------------------------- market
    def mark_price(self, symbol: str) -> Decimal:
        return self._on_loop(self.futures.mark, symbol)

    def set_mark_price(self, symbol: str, price: Decimal | str) -> None:
        self._on_loop(self.futures.set_mark_price, symbol, price)

    def unpin_mark_price(self, symbol: str) -> None:
        self._on_loop(self.futures.unpin_mark_price, symbol)

    def manual_order(self, api_key: str, symbol: str, side: str, quantity: Decimal | str) -> dict[str, Any]:
        """A MARKET order placed outside any client (Binance's app): fills, books, pushes its events."""
        return self._on_loop(self.futures.manual_order, symbol, side, Decimal(str(quantity)), api_key)

    def position(self, api_key: str, symbol: str) -> Position:
        return self._on_loop(self.futures.position, symbol, api_key)

    def advance(self, seconds: float) -> None:
        """Move the fake clock, then sweep (triggers, listenKey expiry, 24 h connections) at once."""
        self.clock.advance(seconds)
        self.sweep()

    def sweep(self) -> None:
        self._on_loop(self.futures.sweep)

    # ----------------------------------------------------------- stream hooks
    def listen_key_of(self, api_key: str) -> str | None:
        return self._on_loop(self.streams.listen_key_of, api_key)

    def expire_listen_key(self, api_key: str) -> None:
        self._on_loop(self.streams.expire_listen_key, api_key)

    def drop_stream_connections(self) -> int:
        return self._on_loop(self.streams.drop_stream_connections)

    def pause_events(self, api_key: str) -> None:
        self._on_loop(self.streams.pause_events, api_key)

    def resume_events(self, api_key: str) -> None:
        self._on_loop(self.streams.resume_events, api_key)

    def drop_next_events(self, api_key: str, n: int) -> None:
        self._on_loop(self.streams.drop_next_events, api_key, n)

    def events_sent(self, api_key: str) -> list[Event]:
        return self._on_loop(self.streams.events_sent, api_key)

    # --------------------------------------------------------------- counters
    @property
    def rest_requests(self) -> int:
        return self.pool.requests

    @property
    def ws_connections(self) -> int:
        """Connections open now."""
        return self.streams.ws_connections

    @property
    def ws_connection_attempts(self) -> int:
        return self.streams.ws_connection_attempts

    def duplicate_client_order_ids(self) -> list[str]:
        """Client order ids the exchange accepted more than once, over every account (must stay empty)."""
        def scan() -> list[str]:
            seen: Counter[str] = Counter()
            for account in self.futures.accounts.values():
                seen.update(str(order.get("clientOrderId")) for order in account.orders)
            return sorted(cid for cid, times in seen.items() if times > 1)
        return self._on_loop(scan)

    def stats(self) -> dict[str, Any]:
        pool = self.pool
        return {
            "rest_requests": pool.requests, "answered_429": pool.answered_429, "answered_418": pool.answered_418,
            "sent_after_429": pool.sent_after_429, "peak_used_1m": pool.peak_used_1m, "used_1m": pool.used_1m(),
            "weight_by_path": dict(pool.weight_by_path), "history": pool.history,
            "ws_connections": self.ws_connections, "ws_connection_attempts": self.ws_connection_attempts,
            "ws_refused": self.streams.connect_limit.refused, "accounts": len(self.futures.accounts),
        }

    def reset_counters(self) -> None:
        """Counters from now on (REST and WebSocket attempts); limits, bans and open connections are kept."""
        self.pool.reset_counters()
        self.streams.connect_limit.reset_counters()

    # --------------------------------------------------- out-of-process control
    async def _stats_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _accounts_route(self, request: web.Request) -> web.Response:
        rows = await request.json()
        for row in rows:
            self.futures.add_account(row["api_key"], row["api_secret"], Decimal(str(row.get("balance", "10000"))))
        return web.json_response({"ok": True, "accounts": len(self.futures.accounts)})

    async def _positions_route(self, request: web.Request) -> web.Response:
        for row in await request.json():
            self.futures.seed_position(**row)
        return web.json_response({"ok": True})


async def _serve(port: int, latency_ms: float, weight_limit_1m: int) -> None:
    exchange = FakeBinanceExchange(port=port, latency_ms=latency_ms, weight_limit_1m=weight_limit_1m,
                                   record_requests=False)
    await serve_until_stopped(exchange.start, exchange.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Binance USDⓈ-M Futures: market data, trading, user streams")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--weight-limit", type=int, default=2400)
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.port, args.latency_ms, args.weight_limit))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
