"""History for a backtest fetched through the market service's Binance source.

``GET /fapi/v1/klines`` returns at most 1500 candles, so a period is read in
pages, newest first, each ending (``endTime``) just before the oldest candle
already read. Every page goes through ``BinanceMarketSource``'s one request
path: the per-minute weight budget (a page of 1500 weighs 10), the 429/418
stop, retries with backoff and error translation. When the budget for the
current minute is spent, the pager waits for the next minute instead of
failing. Only candles closed before ``now`` are kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.backtest.candles import History, HistoryCandle, interval_ms
from services.common.decimals import format_decimal
from services.common.errors import InvalidArgument, ResourceExhausted
from services.market.sources.base import Bar
from services.market.sources.binance import BinanceMarketSource, parse_klines
from services.common.binance_weights import klines_weight

PAGE_LIMIT = 1500          # Binance's maximum for /fapi/v1/klines
MAX_BUDGET_WAITS = 30      # a run that keeps hitting the budget this often gives up with a clear error

Sleep = Callable[[float], Awaitable[None]]


async def _page(source: BinanceMarketSource, symbol: str, interval: str, end_ms: int, limit: int,
                sleep: Sleep) -> list[Bar]:
    what = f"klines {symbol} {interval} endTime={end_ms} limit={limit}"
    for _ in range(MAX_BUDGET_WAITS):
        try:
            # The source's own request path: budget, 429/418 stop, retries, error translation.
            rows = await source._call(  # noqa: SLF001 - the one request path of the adapter, on purpose
                what, klines_weight(limit),
                lambda client: client.futures_klines(symbol=symbol, interval=interval, endTime=end_ms, limit=limit),
                None,
            )
        except ResourceExhausted as error:
            await sleep(max(error.retry_after, 0.05))
            continue
        return parse_klines(rows)
    raise ResourceExhausted(f"Binance weight budget stayed exhausted while reading {what}")


async def fetch_history(source: BinanceMarketSource, symbol: str, interval: str, start_ms: int, end_ms: int,
                        *, now_ms: int | None = None, sleep: Sleep = asyncio.sleep,
                        page_limit: int = PAGE_LIMIT) -> History:
    """Closed candles opening in [start_ms, end_ms], oldest first."""
    if start_ms >= end_ms:
        raise InvalidArgument("--start must be before --end")
    if not 1 <= page_limit <= PAGE_LIMIT:
        raise InvalidArgument(f"page limit must be in 1..{PAGE_LIMIT}")
    step = interval_ms(interval)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    by_open: dict[int, Bar] = {}
    cursor = min(end_ms + step - 1, now)
    while cursor >= start_ms:
        bars = await _page(source, symbol, interval, cursor, page_limit, sleep)
        fresh = [bar for bar in bars if bar.open_time_ms <= cursor]
        if not fresh:
            break  # nothing older exists (the symbol's listing)
        for bar in fresh:
            by_open[bar.open_time_ms] = bar
        oldest = min(bar.open_time_ms for bar in fresh)
        if oldest <= start_ms:
            break
        cursor = oldest - 1
    kept = sorted(
        (bar for bar in by_open.values()
         if start_ms <= bar.open_time_ms <= end_ms and bar.open_time_ms + step <= now),
        key=lambda bar: bar.open_time_ms,
    )
    if not kept:
        raise InvalidArgument(f"Binance has no closed {symbol} {interval} candles in that period")
    candles = tuple(
        HistoryCandle(bar.open_time_ms, format_decimal(bar.open), format_decimal(bar.high), format_decimal(bar.low),
                      format_decimal(bar.close), format_decimal(bar.volume))
        for bar in kept
    )
    return History(interval, step, candles)
