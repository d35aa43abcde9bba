"""Every environment variable is documented in .env.example and reaches its container.

The names are read from the code (``env_str("NAME"`` and friends), so a new
setting without documentation, or one compose forgets to pass on, fails here.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.processes import REPO_ROOT

SERVICES = ("gateway", "market", "strategy", "executor")
# GRPC_TLS_* paths need mounted files: a TLS deployment adds them itself.
SETTING_CALL = re.compile(r"env_[a-z_]+\(\s*\"([A-Z][A-Z0-9_]*)\"")


def read_by(folder: str) -> set[str]:
    names: set[str] = set()
    for path in (REPO_ROOT / "services" / folder).rglob("*.py"):
        names.update(SETTING_CALL.findall(path.read_text()))
    return names


def documented() -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (REPO_ROOT / ".env.example").read_text(), re.M))


def compose_environment() -> dict[str, dict[str, str]]:
    raw = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return {name: service.get("environment") or {} for name, service in raw["services"].items()}


def test_contract_variables_are_documented() -> None:
    contract = {
        "CRON_SECRET", "MONGODB_URI", "MONGODB_DB", "GATEWAY_PORT", "MARKET_ADDR", "STRATEGY_ADDR",
        "EXECUTOR_ADDR", "MARKET_DATA_SOURCE", "BINANCE_FUTURES_URL", "BINANCE_FUTURES_TESTNET_URL",
        "BINANCE_SPOT_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "CREDENTIALS_KEYS",
        "TICK_DEADLINE_SECONDS", "CRON_LOCAL_INTERVAL", "GRPC_HOST", "GRPC_PORT", "GATEWAY_HOST",
    }
    assert contract - documented() == set()


def test_every_variable_the_code_reads_is_documented() -> None:
    read = set().union(*(read_by(folder.name) for folder in (REPO_ROOT / "services").iterdir() if folder.is_dir()))
    assert read, "the scan found no settings at all"
    assert sorted(read - documented()) == []


def test_every_interpolated_variable_is_documented() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert sorted(interpolated - documented()) == []


@pytest.mark.parametrize("service", SERVICES)
def test_compose_passes_each_service_its_own_settings(service: str) -> None:
    missing = read_by(service) - set(compose_environment()[service])
    assert sorted(missing) == [], f"docker-compose.yml does not pass these to {service}"
