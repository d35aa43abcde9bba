"""The executor's configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.common.binance_client import DEFAULT_FUTURES_TESTNET_URL, DEFAULT_FUTURES_URL, DEFAULT_SPOT_URL
from services.common.circuit_breaker import BreakerSettings
from services.common.settings import SettingsError, env_bool, env_int, env_mongodb_uri, env_optional, env_str
from services.common.tls import client_tls_from_env, require_secure_targets
from services.executor.credentials import parse_credentials_keys

DEFAULT_FUTURES_WS_URL = "wss://fstream.binance.com"
DEFAULT_FUTURES_TESTNET_WS_URL = "wss://fstream.binancefuture.com"


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
    # User-data streams (account state without per-tick REST reads); roots without a path.
    binance_futures_ws_url: str = DEFAULT_FUTURES_WS_URL
    binance_futures_testnet_ws_url: str = DEFAULT_FUTURES_TESTNET_WS_URL
    user_streams: bool = True
    breaker: BreakerSettings = BreakerSettings()   # the fleet circuit breaker's thresholds (BREAKER_*)

    def ws_url_for(self, futures_url: str) -> str:
        return (self.binance_futures_ws_url if futures_url == self.binance_futures_url
                else self.binance_futures_testnet_ws_url)

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
            binance_futures_ws_url=_ws_root("BINANCE_FUTURES_WS_URL", "BINANCE_FUTURES_URL", DEFAULT_FUTURES_URL,
                                            DEFAULT_FUTURES_WS_URL, env),
            binance_futures_testnet_ws_url=_ws_root("BINANCE_FUTURES_TESTNET_WS_URL", "BINANCE_FUTURES_TESTNET_URL",
                                                    DEFAULT_FUTURES_TESTNET_URL, DEFAULT_FUTURES_TESTNET_WS_URL, env),
            user_streams=env_bool("BINANCE_USER_STREAMS", True, env=env),
            breaker=BreakerSettings.from_env(env),
        )


def _ws_root(name: str, rest_name: str, rest_default: str, ws_default: str, env: Mapping[str, str] | None) -> str:
    """The stream root: as configured; else Binance's own for Binance's REST root; else the REST root's host
    over ws(s), which is how a local or test exchange serves both."""
    configured = env_optional(name, env=env)
    if configured:
        return configured.rstrip("/")
    rest = env_str(rest_name, rest_default, env=env).rstrip("/")
    if rest == rest_default:
        return ws_default
    return "ws" + rest.removeprefix("http") if rest.startswith("http") else rest


def _env_decimal(name: str, default: str, env: Mapping[str, str] | None, *, allow_zero: bool = False) -> Decimal:
    raw = env_str(name, default, env=env)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(f"environment variable {name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0 or (value == 0 and not allow_zero):
        raise SettingsError(f"environment variable {name} must be a positive number, got {raw!r}")
    return value
