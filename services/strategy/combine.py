"""How the technical signal and the AI's answer become the final signal.

Agreement (AI names the same BUY/SELL): the action stays and the confidence
rises by half the remaining headroom weighted by the AI's confidence:
    final = technical + (100 - technical) * ai_confidence / 200
so it never drops below the technical confidence and never exceeds 100.

Disagreement (AI says HOLD or the opposite side): HOLD, with the AI's
confidence; the reason names both sides. A questioned trade is not taken.

Fallback (the AI could not be used, for any reason): the technical action
with confidence * AI_FALLBACK_CONFIDENCE_FACTOR (default 0.8), so an
unconfirmed signal needs a stronger technical case to clear a bot's threshold.
"""

from __future__ import annotations

from services.strategy.strategies.base import Decision, clamp_confidence


def combine_with_ai(technical: Decision, ai: Decision) -> Decision:
    if ai.action == technical.action:
        confidence = technical.confidence + (100.0 - technical.confidence) * ai.confidence / 200.0
        return Decision(technical.action, clamp_confidence(confidence), f"AI confirms {technical.action}: {ai.reason}")
    return Decision(
        "HOLD",
        clamp_confidence(ai.confidence),
        f"AI disagrees (technical {technical.action}, AI {ai.action}): {ai.reason}",
    )


def fallback_without_ai(technical: Decision, factor: float, reason: str) -> Decision:
    return Decision(
        technical.action,
        clamp_confidence(technical.confidence * factor),
        f"{technical.reason}; AI not used ({reason}), confidence x{factor:g}",
    )
