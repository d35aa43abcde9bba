"""What the strategy service counts.

Its own series (tradebot_strategy_*) carry the detail: analyses by
strategy/action/cached, AI requests by outcome, tokens from ``usage``,
fallbacks by exact reason kind. The project-wide AI series in
services.common.metrics (tradebot_ai_*) are fed from the same events with
their coarser label sets, so shared dashboards work too.
"""

from __future__ import annotations

from prometheus_client import Counter

from services.common import metrics as common

ANALYSES = Counter(
    "tradebot_strategy_analyses_total", "Analyze calls answered", ["strategy", "action", "cached"]
)
AI_REQUESTS = Counter(
    "tradebot_strategy_ai_requests_total",
    "AI confirmations sent (one per shared analysis; SDK retries inside), by outcome (answered | failed)",
    ["outcome"],
)
AI_TOKENS = Counter("tradebot_strategy_ai_tokens_total", "Tokens reported by the AI's usage", ["kind"])
AI_FALLBACKS = Counter(
    "tradebot_strategy_ai_fallbacks_total",
    "Technical signals sent without AI confirmation, by reason (not_configured | timeout | connection | auth | "
    "rate_limited | server_error | api_error | refusal | truncated | malformed | unexpected)",
    ["reason"],
)

_COMMON_FALLBACK_REASON = {
    "not_configured": "disabled",
    "timeout": "timeout",
    "refusal": "invalid",
    "truncated": "invalid",
    "malformed": "invalid",
}


def record_analysis(strategy: str, action: str, cached: bool, ai_requested: bool) -> None:
    ANALYSES.labels(strategy, action, str(cached).lower()).inc()
    if cached and ai_requested:
        common.AI_CALLS_TOTAL.labels("cached").inc()  # a call the shared analysis saved


def record_ai_tokens(prompt_tokens: int, completion_tokens: int) -> None:
    for kind, count in (("prompt", prompt_tokens), ("completion", completion_tokens)):
        AI_TOKENS.labels(kind).inc(count)
        common.AI_TOKENS_TOTAL.labels(kind).inc(count)


def record_ai_answer() -> None:
    AI_REQUESTS.labels("answered").inc()
    common.AI_CALLS_TOTAL.labels("success").inc()


def record_ai_fallback(kind: str) -> None:
    AI_FALLBACKS.labels(kind).inc()
    common.AI_FALLBACKS_TOTAL.labels(_COMMON_FALLBACK_REASON.get(kind, "error")).inc()
    if kind != "not_configured":  # no request was sent without a key
        AI_REQUESTS.labels("failed").inc()
        common.AI_CALLS_TOTAL.labels("timeout" if kind == "timeout" else "error").inc()
