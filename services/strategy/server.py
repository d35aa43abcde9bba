"""The tradebot.v1.Strategy servicer: proto in, Analyzer, proto out."""

from __future__ import annotations

import grpc

from services.common.caller_policy import GATEWAY, OPERATOR, allow_all_methods, service_methods
from services.common.grpc_server import ServiceBinding
from services.strategy.ai import build_ai_confirmer
from services.strategy.analysis import Analysis, Analyzer
from services.strategy.settings import StrategySettings
from services.strategy.strategies import all_strategies
from services.strategy.strategies.base import Decision
from tradebot.v1 import common_pb2, strategy_pb2, strategy_pb2_grpc

_ACTIONS = {"BUY": common_pb2.ACTION_BUY, "SELL": common_pb2.ACTION_SELL, "HOLD": common_pb2.ACTION_HOLD}


def signal_message(decision: Decision) -> common_pb2.Signal:
    return common_pb2.Signal(action=_ACTIONS[decision.action], confidence=decision.confidence, reason=decision.reason)


def response_message(analysis: Analysis, cached: bool) -> strategy_pb2.AnalyzeResponse:
    ai = analysis.ai
    return strategy_pb2.AnalyzeResponse(
        strategy_name=analysis.strategy_name,
        signal=signal_message(analysis.signal),
        technical_signal=signal_message(analysis.technical),
        indicators=analysis.indicators,
        trend=strategy_pb2.Trend(
            direction=analysis.trend.direction, strength=analysis.trend.strength, rule=analysis.trend.rule
        ),
        ai=strategy_pb2.AiVerdict(
            requested=ai.requested,
            used=ai.used,
            signal=signal_message(ai.answer) if ai.answer is not None else None,
            model=ai.model,
            fallback_reason=ai.fallback_reason,
            prompt_tokens=ai.prompt_tokens,
            completion_tokens=ai.completion_tokens,
            cached=cached and ai.requested,
        ),
        last_candle_open_time_ms=analysis.last_candle_open_time_ms,
        cached=cached,
    )


def strategy_catalogue() -> strategy_pb2.ListStrategiesResponse:
    return strategy_pb2.ListStrategiesResponse(
        strategies=[
            strategy_pb2.StrategyInfo(
                bot_id=strategy.bot_id,
                name=strategy.name,
                description=strategy.description,
                min_candles=strategy.min_candles,
                parameters=[
                    strategy_pb2.StrategyParameter(
                        name=parameter.name,
                        default_value=parameter.default,
                        min_value=parameter.minimum,
                        max_value=parameter.maximum,
                        description=parameter.description,
                    )
                    for parameter in strategy.parameters
                ],
            )
            for strategy in all_strategies()
        ]
    )


class StrategyServicer(strategy_pb2_grpc.StrategyServicer):
    def __init__(self, analyzer: Analyzer) -> None:
        self._analyzer = analyzer

    async def Analyze(  # noqa: N802 (gRPC method name)
        self, request: strategy_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> strategy_pb2.AnalyzeResponse:
        analysis, cached = await self._analyzer.analyze(request)
        return response_message(analysis, cached)

    async def ListStrategies(  # noqa: N802
        self, request: strategy_pb2.ListStrategiesRequest, context: grpc.aio.ServicerContext
    ) -> strategy_pb2.ListStrategiesResponse:
        return strategy_catalogue()


def build_analyzer(settings: StrategySettings) -> Analyzer:
    return Analyzer(
        build_ai_confirmer(settings),
        fallback_factor=settings.ai_fallback_confidence_factor,
        cache_max_entries=settings.analysis_cache_max_entries,
    )


def strategy_binding(analyzer: Analyzer) -> ServiceBinding:
    # Only the gateway's tick (and an operator) may spend the AI quota or fill the shared analysis cache.
    callers = allow_all_methods(service_methods("tradebot.v1.Strategy"), GATEWAY, OPERATOR)
    return ServiceBinding(
        "tradebot.v1.Strategy", StrategyServicer(analyzer), strategy_pb2_grpc.add_StrategyServicer_to_server, callers
    )
