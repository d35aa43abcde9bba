"""Prometheus metrics of the strategy service (tradebot_strategy_*)."""

from __future__ import annotations

from prometheus_client import Counter

ANALYSES = Counter(
    "tradebot_strategy_analyses_total", "Analyze calls answered", ["strategy", "action", "cached"]
)
AI_REQUESTS = Counter(
    "tradebot_strategy_ai_requests_total", "AI confirmations attempted (one per analysis, retries inside)", ["outcome"]
)
AI_TOKENS = Counter("tradebot_strategy_ai_tokens_total", "Tokens reported by the AI's usage", ["kind"])
AI_FALLBACKS = Counter(
    "tradebot_strategy_ai_fallbacks_total", "Technical signals sent without AI confirmation", ["reason"]
)
