"""Market service settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.binance_client import DEFAULT_FUTURES_URL, DEFAULT_SPOT_URL
from services.common.settings import env_choice, env_float, env_int, env_str

SOURCES = ("binance", "simulated")


@dataclass(frozen=True)
class MarketSettings:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    data_source: str = "simulated"
    futures_url: str = DEFAULT_FUTURES_URL
    spot_url: str = DEFAULT_SPOT_URL
    weight_limit_1m: int = 2400
    weight_budget_share: float = 0.15   # of the IP: the executor takes 0.8 (BINANCE_WEIGHT_SHARE)
    cache_max_entries: int = 2048
    cache_ttl_seconds: float = 60.0
    price_ttl_seconds: float = 2.0
    filters_ttl_seconds: float = 300.0
    upstream_timeout_seconds: float = 10.0
    retry_attempts: int = 3
    retry_initial_backoff_seconds: float = 0.2
    retry_max_backoff_seconds: float = 2.0
    retry_max_total_seconds: float = 15.0
    shutdown_grace_seconds: float = 10.0

    @property
    def weight_budget_1m(self) -> int:
        """The part of Binance's per-IP minute budget this service may spend."""
        return int(self.weight_limit_1m * self.weight_budget_share)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MarketSettings:
        return cls(
            grpc_host=env_str("GRPC_HOST", "127.0.0.1", env=env),
            grpc_port=env_int("GRPC_PORT", 50051, minimum=0, maximum=65535, env=env),
            data_source=env_choice("MARKET_DATA_SOURCE", SOURCES, "simulated", env=env),
            futures_url=env_str("BINANCE_FUTURES_URL", DEFAULT_FUTURES_URL, env=env),
            spot_url=env_str("BINANCE_SPOT_URL", DEFAULT_SPOT_URL, env=env),
            weight_limit_1m=env_int("MARKET_WEIGHT_LIMIT_1M", 2400, minimum=1, env=env),
            weight_budget_share=env_float("MARKET_WEIGHT_BUDGET_SHARE", 0.15, minimum=0.01, maximum=1.0, env=env),
            cache_max_entries=env_int("MARKET_CACHE_MAX_ENTRIES", 2048, minimum=1, env=env),
            cache_ttl_seconds=env_float("MARKET_CACHE_TTL_SECONDS", 60.0, minimum=0.0, env=env),
            price_ttl_seconds=env_float("MARKET_PRICE_TTL_SECONDS", 2.0, minimum=0.0, env=env),
            filters_ttl_seconds=env_float("MARKET_FILTERS_TTL_SECONDS", 300.0, minimum=1.0, env=env),
            upstream_timeout_seconds=env_float("MARKET_UPSTREAM_TIMEOUT_SECONDS", 10.0, minimum=0.1, env=env),
            retry_attempts=env_int("MARKET_RETRY_ATTEMPTS", 3, minimum=1, maximum=10, env=env),
            retry_initial_backoff_seconds=env_float("MARKET_RETRY_INITIAL_BACKOFF_SECONDS", 0.2, minimum=0.0, env=env),
            retry_max_backoff_seconds=env_float("MARKET_RETRY_MAX_BACKOFF_SECONDS", 2.0, minimum=0.0, env=env),
            retry_max_total_seconds=env_float("MARKET_RETRY_MAX_TOTAL_SECONDS", 15.0, minimum=0.1, env=env),
            shutdown_grace_seconds=env_float("MARKET_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0, env=env),
        )
