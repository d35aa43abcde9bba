"""Prometheus metrics of the market service (names tradebot_market_*)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CACHE_HITS = Counter("tradebot_market_cache_hits", "Candle requests answered from the shared cache", ["kind"])
CACHE_MISSES = Counter("tradebot_market_cache_misses", "Candle requests that needed an upstream fetch", ["kind"])
UPSTREAM_REQUESTS = Counter(
    "tradebot_market_upstream_requests", "Requests sent to the exchange", ["endpoint", "outcome"]
)
WEIGHT_USED = Gauge("tradebot_market_weight_used_1m", "Request weight used in the current minute")
REFUSED_BY_BUDGET = Counter(
    "tradebot_market_weight_refusals", "Requests refused locally because they would cross the weight budget"
)
