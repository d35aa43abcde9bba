"""Binance USDⓈ-M futures market data through python-binance's AsyncClient.

The adapter for one outside system: the client is built in one place
(``services.common.binance_client.ConfiguredAsyncClient``, every URL from
configuration), every request passes the process's weight governor first
(its share of the IP's weight, nothing sent during a 429 or 418), transient failures (timeouts, connection errors, 5xx) are retried with
exponential backoff and jitter inside the caller's deadline, and vendor
exceptions leave this module only as ``services.common.errors`` types.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import aiohttp
from binance.exceptions import BinanceAPIException, BinanceRequestException
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from services.common import metrics
from services.common.binance_client import ConfiguredAsyncClient
from services.common.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, TradebotError, Unavailable
from services.market.cache import Loaded, SingleFlightCache
from services.market.settings import MarketSettings
from services.market.sources.base import Bar, PriceQuote, TradingRules, UpstreamStats
from services.common.binance_weights import EXCHANGE_INFO_WEIGHT, MARK_PRICE_WEIGHT_ONE_SYMBOL, klines_weight
from services.common.weight_governor import GovernorSettings, WeightGovernor

log = logging.getLogger(__name__)

Result = TypeVar("Result")
ClientFactory = Callable[[], ConfiguredAsyncClient]

_UPSTREAM = "binance_futures"
_INVALID_SYMBOL_CODE = -1121
_MIN_ATTEMPT_SECONDS = 0.05  # no retry is started with less time than this left


class BinanceMarketSource:
    name = "binance"

    def __init__(
        self,
        client_factory: ClientFactory,
        settings: MarketSettings,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client_factory = client_factory
        self._client: ConfiguredAsyncClient | None = None
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._requests = 0
        self._rules_cache: SingleFlightCache[dict[str, TradingRules]] = SingleFlightCache(1, clock)
        self._last_rules: dict[str, TradingRules] | None = None

    @classmethod
    def from_settings(cls, settings: MarketSettings, clock: Callable[[], float] = time.time) -> BinanceMarketSource:
        def build() -> ConfiguredAsyncClient:
            return ConfiguredAsyncClient(
                futures_url=settings.futures_url,
                spot_url=settings.spot_url,
                request_timeout=settings.upstream_timeout_seconds,
                governor_settings=governor_settings(settings),
                clock=clock,   # the minute the governor counts in is the one this source lives in
            )

        return cls(build, settings, clock)

    def _get_client(self) -> ConfiguredAsyncClient:
        # Built lazily: the aiohttp session must be created inside the running loop.
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # --- MarketSource -------------------------------------------------------------------------

    async def fetch_bars(self, symbol: str, interval: str, count: int, deadline: float | None) -> list[Bar]:
        rows = await self._call(
            f"klines {symbol} {interval} limit={count}",
            klines_weight(count),
            lambda client: client.futures_klines(symbol=symbol, interval=interval, limit=count),
            deadline,
        )
        return parse_klines(rows)

    async def fetch_price(self, symbol: str, deadline: float | None) -> PriceQuote:
        answer = await self._call(
            f"premiumIndex {symbol}",
            MARK_PRICE_WEIGHT_ONE_SYMBOL,
            lambda client: client.futures_mark_price(symbol=symbol),
            deadline,
        )
        try:
            return PriceQuote(symbol, _decimal(answer["markPrice"]), int(answer["time"]))
        except (KeyError, TypeError, ValueError) as error:
            raise Unavailable(f"Binance sent a malformed premiumIndex answer for {symbol}") from error

    async def trading_rules(self, symbol: str, deadline: float | None) -> TradingRules:
        rules = (await self._rules_table(deadline)).get(symbol)
        if rules is None:
            raise InvalidArgument(f"unknown symbol {symbol!r}: Binance USDⓈ-M futures does not list it")
        return rules

    async def ensure_known_symbol(self, symbol: str, deadline: float | None) -> None:
        await self.trading_rules(symbol, deadline)

    @property
    def governor(self) -> WeightGovernor:
        return self._get_client().governor

    def stats(self) -> UpstreamStats:
        governor = self.governor
        return UpstreamStats(
            upstream_requests=self._requests,
            weight_used_1m=governor.ip_used(),
            weight_limit_1m=governor.settings.process_cap,
            backoff_seconds_left=governor.pause_left(),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close_connection()
            self._client = None

    # --- exchangeInfo, cached -----------------------------------------------------------------

    async def _rules_table(self, deadline: float | None) -> dict[str, TradingRules]:
        async def load() -> Loaded[dict[str, TradingRules]]:
            info = await self._call(
                "exchangeInfo", EXCHANGE_INFO_WEIGHT, lambda client: client.futures_exchange_info(), deadline
            )
            table = parse_exchange_info(info)
            self._last_rules = table
            return Loaded(table, self._clock() + self._settings.filters_ttl_seconds)

        try:
            return (await self._rules_cache.get("exchangeInfo", load)).value
        except (Unavailable, ResourceExhausted, DeadlineExceeded) as error:
            if self._last_rules is None:
                raise
            # Trading rules change rarely: a stale table beats failing every call.
            log.warning("using stale exchangeInfo", extra={"reason": error.message})
            return self._last_rules

    # --- one request: stop, budget, retry, translate ----------------------------------------

    async def _call(
        self,
        what: str,
        weight: int,
        send: Callable[[ConfiguredAsyncClient], Awaitable[Result]],
        deadline: float | None,
    ) -> Result:
        limit = time.monotonic() + self._settings.retry_max_total_seconds
        until = limit if deadline is None else min(deadline, limit)

        def out_of_time(state: RetryCallState) -> bool:
            return time.monotonic() + state.upcoming_sleep + _MIN_ATTEMPT_SECONDS >= until

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.retry_attempts) | out_of_time,
            wait=wait_random_exponential(
                multiplier=self._settings.retry_initial_backoff_seconds,
                max=self._settings.retry_max_backoff_seconds,
            ),
            retry=retry_if_exception_type(Unavailable),
            sleep=self._sleep,
            reraise=True,
            before_sleep=lambda state: log.warning(
                "retrying binance request",
                extra={
                    "request": what,
                    "attempt": state.attempt_number,
                    "waitSeconds": round(state.upcoming_sleep, 3),
                    "reason": str(state.outcome.exception()) if state.outcome else "",
                },
            ),
        )
        async for attempt in retrying:
            with attempt:
                result = await self._send_once(what, weight, send, until, deadline)
        return result

    async def _send_once(
        self,
        what: str,
        weight: int,
        send: Callable[[ConfiguredAsyncClient], Awaitable[Result]],
        until: float,
        deadline: float | None,
    ) -> Result:
        remaining = until - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"no time left for Binance {what}")
        client = self._get_client()
        self._requests += 1
        try:
            # The governor (inside the client) reserves the weight or refuses at once (RESOURCE_EXHAUSTED).
            async with asyncio.timeout(min(self._settings.upstream_timeout_seconds, remaining)):
                result = await send(client)
        except BinanceAPIException as error:
            metrics.UPSTREAM_REQUESTS_TOTAL.labels(upstream=_UPSTREAM, code=str(error.status_code)).inc()
            raise self._translate_api_error(what, error) from None
        except TimeoutError:
            metrics.UPSTREAM_REQUESTS_TOTAL.labels(upstream=_UPSTREAM, code="error").inc()
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(f"Binance {what} did not answer before the caller's deadline") from None
            raise Unavailable(f"Binance {what} timed out") from None
        except (aiohttp.ClientError, OSError) as error:
            metrics.UPSTREAM_REQUESTS_TOTAL.labels(upstream=_UPSTREAM, code="error").inc()
            raise Unavailable(f"Binance {what} failed: {type(error).__name__}") from None
        except BinanceRequestException:
            metrics.UPSTREAM_REQUESTS_TOTAL.labels(upstream=_UPSTREAM, code="error").inc()
            raise Unavailable(f"Binance {what} answered with an unreadable body") from None
        metrics.UPSTREAM_REQUESTS_TOTAL.labels(upstream=_UPSTREAM, code="200").inc()
        return result

    def _translate_api_error(self, what: str, error: BinanceAPIException) -> TradebotError:
        status = int(error.status_code)
        message = str(error.message or "")
        if status in (429, 418):
            wait = self.governor.pause_left()   # the governor took the pause from the answer
            reason = "HTTP 418 (IP banned)" if status == 418 else "HTTP 429 (rate limited)"
            return ResourceExhausted(
                f"Binance {reason} on {what} (code {error.code}); upstream paused for {wait:.1f}s", retry_after=wait
            )
        if status >= 500:
            return Unavailable(f"Binance {what} failed with HTTP {status} (code {error.code})")
        if error.code == _INVALID_SYMBOL_CODE:
            return InvalidArgument(f"Binance does not know the symbol in {what}: {message}")
        return InvalidArgument(f"Binance rejected {what}: HTTP {status}, code {error.code}: {message}")


def governor_settings(settings: MarketSettings) -> GovernorSettings:
    """The market service's share of the IP's weight (``MARKET_WEIGHT_*``; the executor takes most of the rest)."""
    # max_wait_s 0: the market answers RESOURCE_EXHAUSTED with the seconds to wait at once and never holds a
    # caller (the gateway's tick, an executor's cycle) for a minute; they decide whether to wait.
    return replace(GovernorSettings.from_env(settings.weight_budget_share), limit_1m=settings.weight_limit_1m,
                   share=settings.weight_budget_share, max_wait_s=0.0)


# --- parsing Binance's answers ------------------------------------------------------------------


def _decimal(value: Any) -> Decimal:
    number = Decimal(str(value))
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def parse_klines(rows: Any) -> list[Bar]:
    """Binance klines (12-element arrays, prices as strings) to Bars, oldest first."""
    try:
        bars = [
            Bar(
                open_time_ms=int(row[0]),
                close_time_ms=int(row[6]),
                open=_decimal(row[1]),
                high=_decimal(row[2]),
                low=_decimal(row[3]),
                close=_decimal(row[4]),
                volume=_decimal(row[5]),
            )
            for row in rows
        ]
    except (TypeError, ValueError, IndexError, InvalidOperation) as error:
        raise Unavailable("Binance sent malformed klines") from error
    bars.sort(key=lambda bar: bar.open_time_ms)
    return bars


def parse_exchange_info(info: Any) -> dict[str, TradingRules]:
    """exchangeInfo ``symbols[].filters`` to TradingRules per symbol."""
    table: dict[str, TradingRules] = {}
    try:
        symbols = info["symbols"]
    except (KeyError, TypeError) as error:
        raise Unavailable("Binance sent a malformed exchangeInfo") from error
    for entry in symbols:
        try:
            filters = {item["filterType"]: item for item in entry.get("filters", [])}
            lot = filters["LOT_SIZE"]
            market_lot = filters.get("MARKET_LOT_SIZE", lot)
            notional = filters.get("MIN_NOTIONAL", {})
            table[entry["symbol"]] = TradingRules(
                symbol=entry["symbol"],
                tick_size=_decimal(filters["PRICE_FILTER"]["tickSize"]),
                step_size=_decimal(lot["stepSize"]),
                min_qty=_decimal(lot["minQty"]),
                max_qty=_decimal(lot["maxQty"]),
                min_notional=_decimal(notional.get("notional", "0")),
                market_step_size=_decimal(market_lot.get("stepSize", lot["stepSize"])),
                market_max_qty=_decimal(market_lot.get("maxQty", lot["maxQty"])),
            )
        except (KeyError, TypeError, ValueError, InvalidOperation):
            log.warning("skipping exchangeInfo symbol with malformed filters", extra={"symbol": entry.get("symbol")})
    return table
