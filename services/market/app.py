"""Wiring: settings -> source -> service -> gRPC binding. The one place sources are chosen."""

from __future__ import annotations

from tradebot.v1 import market_pb2_grpc

from services.common.caller_policy import EXECUTOR, GATEWAY, OPERATOR, allow_all_methods, service_methods
from services.common.grpc_server import ServiceBinding
from services.market.server import MarketDataServicer
from services.market.service import MarketDataService
from services.market.settings import MarketSettings
from services.market.sources.base import MarketSource
from services.market.sources.simulated import SimulatedMarketSource

SERVICE_FULL_NAME = "tradebot.v1.MarketData"


def build_source(settings: MarketSettings) -> MarketSource:
    if settings.data_source == "binance":
        from services.market.sources.binance import BinanceMarketSource

        return BinanceMarketSource.from_settings(settings)
    return SimulatedMarketSource()


def build_service(settings: MarketSettings, source: MarketSource | None = None) -> MarketDataService:
    return MarketDataService(source if source is not None else build_source(settings), settings)


def binding(service: MarketDataService) -> ServiceBinding:
    # The gateway's tick and the executor's sizing read market data; an operator may look.
    callers = allow_all_methods(service_methods(SERVICE_FULL_NAME), GATEWAY, EXECUTOR, OPERATOR)
    return ServiceBinding(SERVICE_FULL_NAME, MarketDataServicer(service), market_pb2_grpc.add_MarketDataServicer_to_server,
                          callers)
