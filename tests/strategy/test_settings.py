from __future__ import annotations

import pytest

from services.common.jsonlog import redact
from services.common.settings import SettingsError
from services.strategy.settings import StrategySettings


def test_defaults_without_a_key_disable_the_ai():
    settings = StrategySettings.from_env({})
    assert (settings.grpc_host, settings.grpc_port) == ("127.0.0.1", 50052)
    assert not settings.ai_configured
    assert settings.openai_base_url == "https://api.openai.com/v1"
    assert settings.openai_model == "gpt-4o"
    assert settings.openai_timeout_seconds == 20.0
    assert settings.openai_max_retries == 1
    assert settings.ai_fallback_confidence_factor == 0.8


def test_the_openai_key_is_redacted_from_logs_once_read():
    key = "sk-proj-never-in-a-log-line-42"
    settings = StrategySettings.from_env({"OPENAI_API_KEY": key})
    assert settings.ai_configured
    assert redact(f"calling with {key}") == "calling with [REDACTED]"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRPC_PORT", "http"),
        ("OPENAI_TIMEOUT_SECONDS", "0"),
        ("OPENAI_MAX_RETRIES", "-1"),
        ("AI_FALLBACK_CONFIDENCE_FACTOR", "1.5"),
        ("ANALYSIS_CACHE_MAX_ENTRIES", "0"),
    ],
)
def test_malformed_values_stop_start_up_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        StrategySettings.from_env({name: value})
