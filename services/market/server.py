"""The tradebot.v1.MarketData gRPC servicer: protobuf in, MarketDataService, protobuf out.

Errors are ``services.common.errors`` types; ``services.common.grpc_server``
maps them to status codes (INVALID_ARGUMENT, RESOURCE_EXHAUSTED with a
retry-after-seconds trailer, UNAVAILABLE, DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import time
from decimal import Decimal

import grpc
from tradebot.v1 import common_pb2, market_pb2, market_pb2_grpc

from services.market.service import MarketDataService


def decimal_text(value: Decimal) -> str:
    """Plain notation as the exchange writes it ("0.10", never "1E-1")."""
    return format(value, "f")


def caller_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's gRPC deadline as a ``time.monotonic()`` instant, if it set one."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + remaining


class MarketDataServicer(market_pb2_grpc.MarketDataServicer):
    def __init__(self, service: MarketDataService) -> None:
        self.service = service

    async def GetCandles(
        self, request: market_pb2.GetCandlesRequest, context: grpc.aio.ServicerContext
    ) -> market_pb2.GetCandlesResponse:
        window = await self.service.candles(
            request.symbol, request.interval, request.limit, request.include_open, caller_deadline(context)
        )
        return market_pb2.GetCandlesResponse(
            symbol=window.symbol,
            interval=window.interval,
            candles=[
                common_pb2.Candle(
                    open_time_ms=bar.open_time_ms,
                    close_time_ms=bar.close_time_ms,
                    open=decimal_text(bar.open),
                    high=decimal_text(bar.high),
                    low=decimal_text(bar.low),
                    close=decimal_text(bar.close),
                    volume=decimal_text(bar.volume),
                    closed=closed,
                )
                for bar, closed in zip(window.bars, window.closed, strict=True)
            ],
            from_cache=window.from_cache,
            source=self.service.source.name,
        )

    async def GetPrice(
        self, request: market_pb2.GetPriceRequest, context: grpc.aio.ServicerContext
    ) -> market_pb2.GetPriceResponse:
        quote = await self.service.price(request.symbol, caller_deadline(context))
        return market_pb2.GetPriceResponse(symbol=quote.symbol, price=decimal_text(quote.price), time_ms=quote.time_ms)

    async def GetSymbolFilters(
        self, request: market_pb2.GetSymbolFiltersRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.SymbolFilters:
        rules = await self.service.trading_rules(request.symbol, caller_deadline(context))
        return common_pb2.SymbolFilters(
            symbol=rules.symbol,
            tick_size=decimal_text(rules.tick_size),
            step_size=decimal_text(rules.step_size),
            min_qty=decimal_text(rules.min_qty),
            max_qty=decimal_text(rules.max_qty),
            min_notional=decimal_text(rules.min_notional),
            market_step_size=decimal_text(rules.market_step_size),
            market_max_qty=decimal_text(rules.market_max_qty),
        )

    async def GetStats(
        self, request: market_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> market_pb2.MarketStats:
        stats = self.service.stats()
        return market_pb2.MarketStats(
            cache_hits=stats.cache_hits,
            cache_misses=stats.cache_misses,
            cache_entries=stats.cache_entries,
            upstream_requests=stats.upstream_requests,
            weight_used_1m=stats.weight_used_1m,
            weight_limit_1m=stats.weight_limit_1m,
            backoff_seconds_left=stats.backoff_seconds_left,
            source=stats.source,
        )
