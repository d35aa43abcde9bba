"""The gateway's configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.circuit_breaker import BreakerSettings
from services.common.settings import (
    SettingsError,
    env_bool,
    env_float,
    env_int,
    env_mongodb_uri,
    env_optional,
    env_str,
)
from services.common.tls import client_tls_from_env, require_secure_targets
from services.gateway.dashboard.settings import DashboardSettings
from services.gateway.weight_plan import DEFAULT_WEIGHT_BUDGET
from services.notifications.egress import IPNetwork, env_networks

MIN_CRON_SECRET_LENGTH = 32


@dataclass(frozen=True)
class GatewaySettings:
    cron_secret: str
    mongodb_uri: str
    mongodb_db: str = "tradebots"
    host: str = "127.0.0.1"
    port: int = 8000
    market_addr: str = "127.0.0.1:50051"
    strategy_addr: str = "127.0.0.1:50052"
    executor_addr: str = "127.0.0.1:50053"
    tick_deadline_seconds: float = 270.0
    tick_concurrency: int = 32
    # A lease outlives the tick that took it, so a live tick never loses its
    # bots to another one; a crashed tick's bots come back after it expires.
    lease_seconds: float = 300.0
    candle_limit: int = 300
    use_ai: bool = True
    # False: one market and one strategy call per bot (the benchmark's seed-style baseline).
    group_work: bool = True
    # Time kept back from the deadline for the final bulk writes and the response.
    write_reserve_seconds: float = 10.0
    # Binance market-data weight one tick may plan on this egress IP: the market service's share
    # (weight_plan.DEFAULT_WEIGHT_BUDGET, 360). 0: no planning.
    weight_budget_per_tick: int = DEFAULT_WEIGHT_BUDGET
    mongodb_timeout_ms: int = 5000
    # Upstash (QStash) signed deliveries, accepted besides the bearer secret when a key is set.
    qstash_current_signing_key: str | None = None
    qstash_next_signing_key: str | None = None
    cron_public_url: str | None = None
    # Non-public networks webhooks may reach all the same (e.g. a receiver on the cluster network); default none.
    webhook_allowed_networks: tuple[IPNetwork, ...] = ()
    # Bearer token of /api/status (every user's positions): not the cron secret, which Upstash holds. None: off.
    status_token: str | None = None
    # The fleet circuit breaker: the gateway judges the tick's candles for flash crashes (BREAKER_FLASH_*).
    breaker: BreakerSettings = BreakerSettings()
    # The operators' dashboard at /dashboard (DASHBOARD_PASSWORD and friends).
    dashboard: DashboardSettings = DashboardSettings()

    def __repr__(self) -> str:  # never print the secret, whatever logs the settings
        return f"GatewaySettings(mongodb_db={self.mongodb_db!r}, host={self.host!r}, port={self.port})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        cron_secret = env_str("CRON_SECRET", env=env)
        if len(cron_secret) < MIN_CRON_SECRET_LENGTH:
            raise SettingsError(
                f"environment variable CRON_SECRET must be at least {MIN_CRON_SECRET_LENGTH} characters long"
            )
        current_key = env_optional("QSTASH_CURRENT_SIGNING_KEY", env=env)
        next_key = env_optional("QSTASH_NEXT_SIGNING_KEY", env=env)
        public_url = env_optional("CRON_PUBLIC_URL", env=env)
        if (current_key or next_key) and not public_url:
            raise SettingsError(
                "environment variable CRON_PUBLIC_URL is required when QSTASH_CURRENT_SIGNING_KEY or "
                "QSTASH_NEXT_SIGNING_KEY is set (Upstash signs the URL it delivers to)"
            )
        deadline = env_float("TICK_DEADLINE_SECONDS", 270.0, minimum=5.0, maximum=3600.0, env=env)
        status_token = env_optional("STATUS_TOKEN", env=env)
        if status_token is not None and len(status_token) < MIN_CRON_SECRET_LENGTH:
            raise SettingsError(
                f"environment variable STATUS_TOKEN must be at least {MIN_CRON_SECRET_LENGTH} characters long"
            )
        if status_token is not None and status_token == cron_secret:
            raise SettingsError("environment variable STATUS_TOKEN must differ from CRON_SECRET (Upstash holds that)")
        addresses = {name: env_str(f"{name.upper()}_ADDR", f"127.0.0.1:{port}", env=env)
                     for name, port in (("market", 50051), ("strategy", 50052), ("executor", 50053))}
        require_secure_targets(addresses.values(), client_tls_from_env(env), env)
        return cls(
            cron_secret=cron_secret,
            mongodb_uri=env_mongodb_uri(env=env),
            mongodb_db=env_str("MONGODB_DB", "tradebots", env=env),
            host=env_str("GATEWAY_HOST", "127.0.0.1", env=env),
            port=env_int("GATEWAY_PORT", 8000, minimum=0, maximum=65535, env=env),
            market_addr=addresses["market"],
            strategy_addr=addresses["strategy"],
            executor_addr=addresses["executor"],
            tick_deadline_seconds=deadline,
            tick_concurrency=env_int("TICK_CONCURRENCY", 32, minimum=1, maximum=1024, env=env),
            lease_seconds=env_float("LEASE_SECONDS", deadline + 30.0, minimum=deadline, env=env),
            candle_limit=env_int("TICK_CANDLE_LIMIT", 300, minimum=50, maximum=1500, env=env),
            use_ai=env_bool("TICK_USE_AI", True, env=env),
            group_work=env_bool("TICK_GROUPING", True, env=env),
            write_reserve_seconds=min(10.0, deadline / 5),
            weight_budget_per_tick=env_int("GATEWAY_WEIGHT_BUDGET_PER_TICK", DEFAULT_WEIGHT_BUDGET, minimum=0, maximum=100_000, env=env),
            mongodb_timeout_ms=env_int("MONGODB_TIMEOUT_MS", 5000, minimum=100, env=env),
            qstash_current_signing_key=current_key,
            qstash_next_signing_key=next_key,
            cron_public_url=public_url,
            webhook_allowed_networks=env_networks("WEBHOOK_ALLOWED_NETWORKS", env=env),
            status_token=status_token,
            breaker=BreakerSettings.from_env(env),
            dashboard=DashboardSettings.from_env(env, other_secrets=(cron_secret, status_token)),
        )
