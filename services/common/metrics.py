"""Prometheus metrics shared by every service, defined once.

Every ``tradebot_*`` metric lives here so no two modules register the same
name (prometheus_client raises on duplicates). Services import the objects
they need and record into them; ``start_metrics_server()`` exposes the
process's default registry over HTTP and hooks gRPC server latency in.

Label values are kept to small, fixed sets (status names, rule names, HTTP
status codes): never a bot id, user id, symbol list or URL, which would
make the number of series grow without bound.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.common import grpc_server
from services.common.settings import SettingsError, env_int, env_str

log = logging.getLogger(__name__)

# --- the tick (gateway) -------------------------------------------------------------------------

TICK_DURATION_SECONDS = Histogram(
    "tradebot_tick_duration_seconds",
    "Wall time of one cron tick, from authentication to response.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 180, 240, 270, 300),
)
TICKS_TOTAL = Counter(
    "tradebot_ticks_total",
    "Cron ticks by outcome: success (every bot processed), partial (some bots failed), failed (the tick itself failed).",
    ["outcome"],
)
LAST_TICK_TIMESTAMP_SECONDS = Gauge(
    "tradebot_last_tick_timestamp_seconds",
    "Unix time at which the last tick finished, whatever its outcome.",
)
CRON_RESPONSES_TOTAL = Counter(
    "tradebot_cron_responses_total",
    "Answers of /api/cron/run-bots by HTTP status code (200, 401, 405, 413, 503, ...).",
    ["code"],
)
BOT_RESULTS_TOTAL = Counter(
    "tradebot_bot_results_total",
    "Per-bot results of ticks by status (success | failed | skipped).",
    ["status"],
)

# --- market data --------------------------------------------------------------------------------

CANDLE_CACHE_HITS_TOTAL = Counter(
    "tradebot_candle_cache_hits_total",
    "Candle requests answered from the market service's cache.",
)
CANDLE_CACHE_MISSES_TOTAL = Counter(
    "tradebot_candle_cache_misses_total",
    "Candle requests that had to go upstream.",
)
UPSTREAM_REQUESTS_TOTAL = Counter(
    "tradebot_upstream_requests_total",
    "HTTP requests to outside systems by upstream (binance_futures | binance_spot | openai) and status code "
    "('error' when no response arrived).",
    ["upstream", "code"],
)
EXCHANGE_WEIGHT_USED = Gauge(
    "tradebot_exchange_weight_used",
    "Binance request weight used in the current minute, from X-MBX-USED-WEIGHT-1M (per replica's IP).",
)
EXCHANGE_WEIGHT_LIMIT = Gauge(
    "tradebot_exchange_weight_limit",
    "Binance request weight allowed per minute (from exchangeInfo rateLimits, or configuration).",
)
RATE_LIMIT_EVENTS_TOTAL = Counter(
    "tradebot_rate_limit_events_total",
    "Binance answers 429 (rate limited) and 418 (IP banned) by status.",
    ["status"],
)

# --- strategy / AI ------------------------------------------------------------------------------

AI_CALLS_TOTAL = Counter(
    "tradebot_ai_calls_total",
    "AI confirmation calls by outcome (success | error | timeout | cached).",
    ["outcome"],
)
AI_TOKENS_TOTAL = Counter(
    "tradebot_ai_tokens_total",
    "Tokens used by AI calls by kind (prompt | completion).",
    ["kind"],
)
AI_FALLBACKS_TOTAL = Counter(
    "tradebot_ai_fallbacks_total",
    "Signals that fell back to technical indicators only, by reason (error | timeout | disabled | invalid).",
    ["reason"],
)

# --- executor -----------------------------------------------------------------------------------

ORDERS_PLACED_TOTAL = Counter(
    "tradebot_orders_placed_total",
    "Entry orders filled, by account mode (paper | testnet | live) and side (LONG | SHORT).",
    ["mode", "side"],
)
ORDERS_FAILED_TOTAL = Counter(
    "tradebot_orders_failed_total",
    "Orders the exchange rejected or that could not be sent, by mode and reason (rejected | unavailable | "
    "protection | other).",
    ["mode", "reason"],
)
SAFETY_TRIPS_TOTAL = Counter(
    "tradebot_safety_trips_total",
    "Safety rules that stopped a bot, by rule (DAILY_LOSS | POSITION_SIZE | CONSECUTIVE_LOSSES | ...).",
    ["rule"],
)

CREDENTIAL_FAILURES_TOTAL = Counter(
    "tradebot_credential_failures_total",
    "Exchange credentials that could not be used, by reason (decrypt | missing | invalid).",
    ["reason"],
)

# --- operator controls (executor, CLI through MongoDB) ------------------------------------------

TRADING_HALTED = Gauge(
    "tradebot_trading_halted",
    "1 while an operator's halt stops new entries, by scope (fleet: everyone; user: at least one user).",
    ["scope"],
)
CIRCUIT_BREAKER_OPEN = Gauge(
    "tradebot_circuit_breaker_open",
    "1 while the fleet circuit breaker pauses new entries for everyone.",
)
CIRCUIT_BREAKER_TRIPS_TOTAL = Counter(
    "tradebot_circuit_breaker_trips_total",
    "Times the fleet circuit breaker tripped, by cause (exchange_errors | flash_crash).",
    ["cause"],
)

# --- notifications (gateway) -------------------------------------------------------------------

WEBHOOK_DELIVERIES_TOTAL = Counter(
    "tradebot_webhook_deliveries_total",
    "Webhook deliveries by outcome: delivered (2xx), rejected (3xx/4xx, not retried), failed (retries exhausted), "
    "dropped (queue full), blocked (the target is not a public address and not allowed).",
    ["outcome"],
)

# --- MongoDB (gateway, executor) ----------------------------------------------------------------

MONGO_COMMANDS_TOTAL = Counter(
    "tradebot_mongo_commands_total",
    "MongoDB commands sent (round trips), by command name and collection.",
    ["command", "collection"],
)
MONGO_COMMAND_SECONDS = Histogram(
    "tradebot_mongo_command_seconds",
    "Round-trip time of MongoDB commands as the driver saw it, by command name.",
    ["command"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- gRPC servers -------------------------------------------------------------------------------

GRPC_SERVER_HANDLING_SECONDS = Histogram(
    "tradebot_grpc_server_handling_seconds",
    "Time a gRPC server spent handling each unary call, by full method name.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _observe_grpc_latency(method: str, seconds: float) -> None:
    GRPC_SERVER_HANDLING_SECONDS.labels(method=method).observe(seconds)


_lock = threading.Lock()
_hook_installed = False
_bound_port: int | None = None


def install_grpc_latency_hook() -> None:
    """Record every gRPC call's latency into the histogram (idempotent)."""
    global _hook_installed
    with _lock:
        if not _hook_installed:
            grpc_server.add_latency_hook(_observe_grpc_latency)
            _hook_installed = True


def start_metrics_server(port: int | None = None) -> int | None:
    """Serve ``/metrics`` on ``METRICS_HOST`` (127.0.0.1) and ``port`` (else ``METRICS_PORT``).

    0 or unset turns metrics off and returns None; otherwise returns the bound
    port. Calling it again in the same process returns the port already
    bound instead of failing, so several services in one process share one
    endpoint. The gRPC latency hook is installed either way it serves.
    """
    global _bound_port
    if port is None:
        port = env_int("METRICS_PORT", 0, minimum=0, maximum=65535)
    if port < 0 or port > 65535:
        raise SettingsError(f"metrics port must be between 0 and 65535, got {port}")
    if port == 0:
        return None
    host = env_str("METRICS_HOST", "127.0.0.1")
    with _lock:
        if _bound_port is None:
            start_http_server(port, addr=host)
            _bound_port = port
            log.info("metrics endpoint started", extra={"metricsAddress": f"{host}:{port}"})
        elif _bound_port != port:
            log.warning(
                "metrics endpoint already running on another port",
                extra={"metricsPort": _bound_port, "requestedPort": port},
            )
    install_grpc_latency_hook()
    return _bound_port
