"""What every strategy is: declared parameters, a minimum history, one decision."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from services.common.errors import InvalidArgument
from services.strategy.indicators import MIN_CANDLES, Indicators
from services.strategy.trend import TrendAssessment

TechnicalAction = Literal["BUY", "SELL", "HOLD"]


@dataclass(frozen=True)
class Parameter:
    name: str
    default: float
    minimum: float
    maximum: float
    description: str


@dataclass(frozen=True)
class Decision:
    """A strategy's indicators-only signal; confidence in 0..100."""

    action: TechnicalAction
    confidence: float
    reason: str


def clamp_confidence(value: float) -> float:
    return round(max(0.0, min(100.0, value)), 2)


def fraction(value: float, full_at: float) -> float:
    """value / full_at limited to 0..1: how much of a 'full' signal a reading gives."""
    if full_at <= 0:
        return 1.0 if value > 0 else 0.0
    return max(0.0, min(1.0, value / full_at))


class Strategy(ABC):
    bot_id: ClassVar[int]
    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[tuple[Parameter, ...]]
    min_candles: ClassVar[int] = MIN_CANDLES

    @classmethod
    def resolve_parameters(cls, overrides: Mapping[str, float]) -> dict[str, float]:
        """Defaults with the overrides applied; unknown names and out-of-range values are rejected, never clamped."""
        declared = {parameter.name: parameter for parameter in cls.parameters}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise InvalidArgument(
                f"{cls.name} has no parameter {', '.join(unknown)}; known parameters: {', '.join(sorted(declared))}"
            )
        resolved = {name: parameter.default for name, parameter in declared.items()}
        for name, value in overrides.items():
            parameter = declared[name]
            if not math.isfinite(value) or not parameter.minimum <= value <= parameter.maximum:
                raise InvalidArgument(
                    f"{cls.name} parameter {name} must be between {parameter.minimum:g} and "
                    f"{parameter.maximum:g}, got {value:g}"
                )
            resolved[name] = float(value)
        cls.check_parameter_consistency(resolved)
        return resolved

    @classmethod
    def check_parameter_consistency(cls, params: Mapping[str, float]) -> None:
        """Cross-parameter rules (e.g. oversold below overbought); raise InvalidArgument."""

    @abstractmethod
    def decide(self, indicators: Indicators, trend: TrendAssessment, params: Mapping[str, float]) -> Decision:
        """The technical signal for the last closed candle."""
