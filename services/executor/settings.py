"""The executor's configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.common.binance_client import DEFAULT_FUTURES_TESTNET_URL, DEFAULT_FUTURES_URL, DEFAULT_SPOT_URL
from services.common.settings import SettingsError, env_int, env_mongodb_uri, env_str
from services.common.tls import client_tls_from_env, require_secure_targets
from services.executor.credentials import parse_credentials_keys


@dataclass(frozen=True)
class ExecutorSettings:
    grpc_host: str
    grpc_port: int
    mongodb_uri: str
    mongodb_db: str
    credentials_keys: tuple[str, ...]   # Fernet keys; the first one encrypts
    binance_futures_url: str
    binance_futures_testnet_url: str
    binance_spot_url: str
    paper_initial_balance: Decimal
    paper_taker_fee: Decimal
    market_addr: str = "127.0.0.1:50051"   # the market service: prices and filters the executor sizes with

    def __repr__(self) -> str:  # never print the keys or a URI that may carry a password
        return f"ExecutorSettings(grpc={self.grpc_host}:{self.grpc_port}, db={self.mongodb_db})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutorSettings:
        keys = parse_credentials_keys(env_str("CREDENTIALS_KEYS", env=env))
        uri = env_mongodb_uri(env=env)
        market_addr = env_str("MARKET_ADDR", "127.0.0.1:50051", env=env)
        require_secure_targets([market_addr], client_tls_from_env(env), env)
        return cls(
            grpc_host=env_str("GRPC_HOST", "127.0.0.1", env=env),
            grpc_port=env_int("GRPC_PORT", 50053, minimum=0, maximum=65535, env=env),
            mongodb_uri=uri,
            mongodb_db=env_str("MONGODB_DB", "tradebots", env=env),
            credentials_keys=keys,
            binance_futures_url=env_str("BINANCE_FUTURES_URL", DEFAULT_FUTURES_URL, env=env),
            binance_futures_testnet_url=env_str("BINANCE_FUTURES_TESTNET_URL", DEFAULT_FUTURES_TESTNET_URL, env=env),
            binance_spot_url=env_str("BINANCE_SPOT_URL", DEFAULT_SPOT_URL, env=env),
            paper_initial_balance=_env_decimal("PAPER_INITIAL_BALANCE", "10000", env),
            paper_taker_fee=_env_decimal("PAPER_TAKER_FEE", "0.0005", env, allow_zero=True),
            market_addr=market_addr,
        )


def _env_decimal(name: str, default: str, env: Mapping[str, str] | None, *, allow_zero: bool = False) -> Decimal:
    raw = env_str(name, default, env=env)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(f"environment variable {name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0 or (value == 0 and not allow_zero):
        raise SettingsError(f"environment variable {name} must be a positive number, got {raw!r}")
    return value
