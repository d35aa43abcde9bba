"""The market data a cycle sizes and protects with, read by the executor itself from the market service.

The price sets the quantity and the filters round it: taken from the caller,
a forged price would size a position far beyond what the user allowed. The
executor asks the market service (the only reader of exchange market data,
behind its shared cache and weight budget) once per (symbol, tick) however
many bots trade the symbol, and candles only when a paper position needs its
stops simulated.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import grpc
from tradebot.v1 import common_pb2, market_pb2, market_pb2_grpc

from services.common.decimals import parse_decimal
from services.common.errors import (
    FailedPrecondition,
    ResourceExhausted,
    TradebotError,
    Unavailable,
)
from services.common.grpc_client import retry_after
from services.common.grpc_server import TICK_ID_METADATA_KEY
from services.common.intervals import FIXED_INTERVAL_MS
from services.executor.account_cache import ENTRY_TTL_SECONDS, SingleFlight
from services.executor.brokers.base import Candle
from services.executor.convert import candles_from_proto

MIN_CANDLES = 10            # a paper position is checked against at least the last few candles
MAX_CANDLES = 1500          # Binance's largest kline page
MARKET_CALL_SECONDS = 10.0  # one call to the market service, at most (the cycle's deadline wins if sooner)
CONNECT_WAIT_SECONDS = 6.0  # a restarted market service: longer than the channel's 5 s reconnect back-off cap
_SHORTEST_MONTH_MS = 28 * 24 * 3_600_000


@dataclass(frozen=True)
class MarketInputs:
    """What one cycle knows of the market: the price and filters, and candles on demand."""

    price: Decimal
    filters: common_pb2.SymbolFilters
    load_candles: Callable[[], Awaitable[list[Candle]]]


class MarketReader(Protocol):
    async def inputs(self, symbol: str, interval: str, opened_ms: int | None, tick_id: str,
                     deadline: float | None) -> MarketInputs:
        """Price and filters of ``symbol`` now; candles of ``interval`` since ``opened_ms`` when loaded."""


def candles_needed(interval: str, opened_ms: int | None, now_ms: int) -> int:
    """Closed candles that cover the time since a position opened (paper stops trigger on them)."""
    if opened_ms is None or opened_ms <= 0:
        return MIN_CANDLES
    length = FIXED_INTERVAL_MS.get(interval, _SHORTEST_MONTH_MS)
    return max(MIN_CANDLES, min(MAX_CANDLES, math.ceil((now_ms - opened_ms) / length) + 2))


class MarketServiceReader:
    """``MarketReader`` over the market service's gRPC API, shared per (symbol, tick)."""

    def __init__(self, channel: grpc.aio.Channel, clock: Callable[[], float] = time.time) -> None:
        self._channel = channel
        self._stub = market_pb2_grpc.MarketDataStub(channel)
        self._clock = clock
        self._quotes: SingleFlight[tuple[Decimal, common_pb2.SymbolFilters]] = SingleFlight(ENTRY_TTL_SECONDS)

    async def inputs(self, symbol: str, interval: str, opened_ms: int | None, tick_id: str,
                     deadline: float | None) -> MarketInputs:
        metadata = ((TICK_ID_METADATA_KEY, tick_id),)
        price, filters = await self._quotes.get((symbol, tick_id), lambda: self._quote(symbol, metadata, deadline))

        async def load_candles() -> list[Candle]:
            limit = candles_needed(interval, opened_ms, int(self._clock() * 1000))
            reply = await self._call("GetCandles", self._stub.GetCandles,
                                     market_pb2.GetCandlesRequest(symbol=symbol, interval=interval, limit=limit),
                                     metadata, deadline)
            return candles_from_proto(reply.candles)

        return MarketInputs(price, filters, load_candles)

    async def _quote(self, symbol: str, metadata: tuple[tuple[str, str], ...],
                     deadline: float | None) -> tuple[Decimal, common_pb2.SymbolFilters]:
        price_reply = await self._call("GetPrice", self._stub.GetPrice, market_pb2.GetPriceRequest(symbol=symbol),
                                       metadata, deadline)
        filters = await self._call("GetSymbolFilters", self._stub.GetSymbolFilters,
                                   market_pb2.GetSymbolFiltersRequest(symbol=symbol), metadata, deadline)
        price = parse_decimal(price_reply.price, "market price", positive=True)
        assert price is not None
        return price, filters

    async def _call(self, name: str, method, request, metadata: tuple[tuple[str, str], ...],  # noqa: ANN001
                    deadline: float | None):  # noqa: ANN202
        timeout = MARKET_CALL_SECONDS if deadline is None else min(MARKET_CALL_SECONDS, deadline - time.monotonic())
        if timeout <= 0:
            raise Unavailable(f"no time left to read market data ({name})")
        await self._connected(min(CONNECT_WAIT_SECONDS, timeout / 2))
        try:
            return await method(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise market_error(name, error) from None

    async def _connected(self, wait: float) -> None:
        """A channel whose service restarted sits in reconnect back-off and fails calls at once: give it
        ``wait`` seconds to connect first (a connected channel costs nothing; one still down fails after)."""
        if self._channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return
        try:
            await asyncio.wait_for(self._channel.channel_ready(), wait)
        except TimeoutError:
            pass


def market_error(name: str, error: grpc.aio.AioRpcError) -> TradebotError:
    """The market service's status as the executor's own error (the gateway reads the same codes)."""
    code, details = error.code(), error.details() or "no details"
    message = f"market data {name}: {code.name}: {details}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        try:
            seconds = float(retry_after(error) or 0)
        except (TypeError, ValueError):
            seconds = 0.0
        return ResourceExhausted(message, retry_after=seconds)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return FailedPrecondition(message)
    return Unavailable(message)
