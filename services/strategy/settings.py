"""Strategy service configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.jsonlog import register_secret
from services.common.settings import env_float, env_int, env_optional, env_str

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o"  # supports structured outputs (strict json_schema)


@dataclass(frozen=True)
class StrategySettings:
    grpc_host: str
    grpc_port: int
    openai_api_key: str | None  # None: AI confirmation is disabled ("AI not configured")
    openai_base_url: str
    openai_model: str
    openai_timeout_seconds: float  # the whole AI call, retries included, fits inside this
    openai_max_retries: int
    ai_fallback_confidence_factor: float
    analysis_cache_max_entries: int

    @property
    def ai_configured(self) -> bool:
        return self.openai_api_key is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StrategySettings:
        api_key = env_optional("OPENAI_API_KEY", env=env)
        register_secret(api_key)
        return cls(
            grpc_host=env_str("GRPC_HOST", "127.0.0.1", env=env),
            grpc_port=env_int("GRPC_PORT", 50052, minimum=0, maximum=65535, env=env),
            openai_api_key=api_key,
            openai_base_url=env_str("OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL, env=env),
            openai_model=env_str("OPENAI_MODEL", DEFAULT_OPENAI_MODEL, env=env),
            openai_timeout_seconds=env_float("OPENAI_TIMEOUT_SECONDS", 20.0, minimum=0.05, maximum=120.0, env=env),
            openai_max_retries=env_int("OPENAI_MAX_RETRIES", 1, minimum=0, maximum=5, env=env),
            ai_fallback_confidence_factor=env_float(
                "AI_FALLBACK_CONFIDENCE_FACTOR", 0.8, minimum=0.0, maximum=1.0, env=env
            ),
            analysis_cache_max_entries=env_int("ANALYSIS_CACHE_MAX_ENTRIES", 1024, minimum=1, env=env),
        )
