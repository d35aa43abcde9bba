"""Market data as the rest of the system sees it: validated, cached, closed candles.

Source-agnostic: the Binance and simulated sources sit behind ``MarketSource``.
One upstream fetch per (symbol, interval) and candle period serves every
caller: the window cached is the longest asked for, and a shorter request is
its tail (the gateway's 300 candles also serve the executor's few). The entry
lives until the current candle closes or the TTL passes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common import metrics
from services.market.cache import Loaded, Lookup, SingleFlightCache
from services.common.intervals import next_open_time, open_time_containing, validate_interval
from services.market.settings import MarketSettings
from services.market.sources.base import Bar, MarketSource, PriceQuote, TradingRules

DEFAULT_LIMIT = 200
MAX_LIMIT = 1500  # Binance's maximum klines per request
_NOT_YET_ROLLED_TTL_SECONDS = 1.0
_LONGER_WINDOW_TRIES = 3
_SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,30}$")


@dataclass(frozen=True, slots=True)
class _Window:
    """What one upstream klines request returned, and how many candles it asked for."""

    fetched: int
    bars: list[Bar]


@dataclass(frozen=True, slots=True)
class CandleWindow:
    symbol: str
    interval: str
    bars: list[Bar]
    closed: list[bool]
    from_cache: bool


@dataclass(frozen=True, slots=True)
class ServiceStats:
    cache_hits: int
    cache_misses: int
    cache_entries: int
    upstream_requests: int
    weight_used_1m: int
    weight_limit_1m: int
    backoff_seconds_left: float
    source: str


def normalise_symbol(symbol: str) -> str:
    cleaned = symbol.strip().upper()
    if not cleaned:
        raise InvalidArgument("symbol is required, e.g. BTCUSDT")
    if not _SYMBOL_PATTERN.fullmatch(cleaned):
        raise InvalidArgument(f"symbol {symbol!r} is malformed: expected letters and digits like BTCUSDT")
    return cleaned


def normalise_limit(limit: int) -> int:
    if limit == 0:
        return DEFAULT_LIMIT
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT} (0 means {DEFAULT_LIMIT}), got {limit}")
    return limit


class MarketDataService:
    def __init__(
        self,
        source: MarketSource,
        settings: MarketSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._settings = settings
        self._clock = clock
        self._candles: SingleFlightCache[_Window] = SingleFlightCache(
            settings.cache_max_entries,
            clock,
            on_hit=metrics.CANDLE_CACHE_HITS_TOTAL.inc,
            on_miss=metrics.CANDLE_CACHE_MISSES_TOTAL.inc,
        )
        self._prices: SingleFlightCache[PriceQuote] = SingleFlightCache(settings.cache_max_entries, clock)

    async def candles(
        self, symbol: str, interval: str, limit: int, include_open: bool, deadline: float | None
    ) -> CandleWindow:
        symbol = normalise_symbol(symbol)
        interval = validate_interval(interval)
        limit = normalise_limit(limit)
        await self.source.ensure_known_symbol(symbol, deadline)
        # One more than asked: the newest kline is usually the one still in progress.
        fetch_count = min(limit + 1, MAX_LIMIT)

        async def load() -> Loaded[_Window]:
            bars = await self.source.fetch_bars(symbol, interval, fetch_count, deadline)
            now = self._clock()
            window = _Window(fetch_count, bars)
            current_open = open_time_containing(interval, int(now * 1000))
            if bars and bars[-1].open_time_ms < current_open:
                # The exchange has not opened the current candle yet (its clock is a little
                # behind ours): its newest candle may still change, so keep it only briefly.
                return Loaded(window, now + min(_NOT_YET_ROLLED_TTL_SECONDS, self._settings.cache_ttl_seconds))
            next_close = next_open_time(interval, current_open) / 1000
            return Loaded(window, min(now + self._settings.cache_ttl_seconds, next_close))

        lookup = await self._candles.get((symbol, interval), load)
        # A window fetched for a shorter request cannot serve this one: fetch the longer one, which
        # then serves both. A few tries, in case shorter loads keep landing in between.
        for _ in range(_LONGER_WINDOW_TRIES):
            if lookup.value.fetched >= fetch_count:
                break
            self._candles.discard((symbol, interval), lookup.value)
            lookup = await self._candles.get((symbol, interval), load)
        else:
            if lookup.value.fetched < fetch_count:
                lookup = Lookup((await load()).value, False)
        now_ms = int(self._clock() * 1000)
        bars = [bar for bar in lookup.value.bars if bar.close_time_ms < now_ms][-limit:]
        closed = [True] * len(bars)
        if include_open:
            in_progress = [bar for bar in lookup.value.bars if bar.close_time_ms >= now_ms]
            bars += in_progress
            closed += [False] * len(in_progress)
        return CandleWindow(symbol, interval, bars, closed, lookup.from_cache)

    async def price(self, symbol: str, deadline: float | None) -> PriceQuote:
        symbol = normalise_symbol(symbol)
        await self.source.ensure_known_symbol(symbol, deadline)

        async def load() -> Loaded[PriceQuote]:
            quote = await self.source.fetch_price(symbol, deadline)
            return Loaded(quote, self._clock() + self._settings.price_ttl_seconds)

        return (await self._prices.get(symbol, load)).value

    async def trading_rules(self, symbol: str, deadline: float | None) -> TradingRules:
        return await self.source.trading_rules(normalise_symbol(symbol), deadline)

    def stats(self) -> ServiceStats:
        upstream = self.source.stats()
        return ServiceStats(
            cache_hits=self._candles.hits,
            cache_misses=self._candles.misses,
            cache_entries=len(self._candles),
            upstream_requests=upstream.upstream_requests,
            weight_used_1m=upstream.weight_used_1m,
            weight_limit_1m=upstream.weight_limit_1m or self._settings.weight_budget_1m,
            backoff_seconds_left=upstream.backoff_seconds_left,
            source=self.source.name,
        )

    async def close(self) -> None:
        await self.source.close()
