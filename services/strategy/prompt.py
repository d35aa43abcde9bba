"""The AI prompt contract: what the model is told and the answer it must give.

The user message is one JSON document with the market facts only: symbol,
interval, strategy name, the technical proposal, every indicator value, the
trend and a summary of the recent closed candles. It never carries API keys,
user or bot identifiers. The answer is forced into ANSWER_RESPONSE_FORMAT
(strict json_schema): {"action": "BUY"|"SELL"|"HOLD", "confidence": 0..100,
"reason": "..."}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.strategy.candles import CandleSeries
from services.strategy.indicators import Indicators
from services.strategy.strategies.base import Decision
from services.strategy.trend import TrendAssessment

RECENT_CANDLES = 12

SYSTEM_PROMPT = (
    "You review trade proposals for a crypto futures trading bot. You get the technical indicators, "
    "the trend and recent candles for one symbol, and the action a rule-based strategy proposes. "
    "Answer BUY or SELL only if you confirm that action from the data; answer HOLD if the data does not "
    "support it. confidence is your certainty from 0 to 100. reason is one or two short sentences "
    "citing the indicators that decided it."
)


class AiAnswer(BaseModel):
    """The answer schema; extra fields or an out-of-range confidence count as malformed."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["BUY", "SELL", "HOLD"]
    confidence: int = Field(ge=0, le=100)
    reason: str = Field(max_length=2000)


# Written out (not generated) so the contract with the API is visible here.
ANSWER_RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "trade_confirmation",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["BUY", "SELL", "HOLD"]},
                "confidence": {"type": "integer", "description": "0 to 100"},
                "reason": {"type": "string"},
            },
            "required": ["action", "confidence", "reason"],
            "additionalProperties": False,
        },
    },
}


@dataclass(frozen=True)
class PromptFacts:
    symbol: str
    interval: str
    strategy_name: str
    technical: Decision
    indicators: Indicators
    trend: TrendAssessment
    candles: CandleSeries


def _round(value: float) -> float:
    return float(f"{value:.8g}")


def recent_candles_summary(candles: CandleSeries) -> dict[str, Any]:
    start = max(0, len(candles) - RECENT_CANDLES)
    closes = candles.close
    rows = [
        {
            "openTimeMs": int(candles.open_time_ms[i]),
            "open": _round(float(candles.open[i])),
            "high": _round(float(candles.high[i])),
            "low": _round(float(candles.low[i])),
            "close": _round(float(closes[i])),
            "volume": _round(float(candles.volume[i])),
        }
        for i in range(start, len(candles))
    ]
    window = closes[start:]
    return {
        "count": len(rows),
        "changePct": _round((float(closes[-1]) / float(window[0]) - 1.0) * 100.0),
        "highest": _round(float(candles.high[start:].max())),
        "lowest": _round(float(candles.low[start:].min())),
        "candles": rows,
    }


def build_messages(facts: PromptFacts) -> list[dict[str, str]]:
    document = {
        "symbol": facts.symbol,
        "interval": facts.interval,
        "strategy": facts.strategy_name,
        "proposed_action": facts.technical.action,
        "technical_confidence": facts.technical.confidence,
        "technical_reason": facts.technical.reason,
        "indicators": {name: _round(value) for name, value in sorted(facts.indicators.items())},
        "trend": {"direction": facts.trend.direction, "strength": facts.trend.strength, "rule": facts.trend.rule},
        "recent_candles": recent_candles_summary(facts.candles),
    }
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": json.dumps(document, separators=(",", ":"))},
    ]
