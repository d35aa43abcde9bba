"""docker-compose.yml checked by the real ``docker-compose config`` (no engine needed).

Install: ``apt-get install -y --no-install-recommends docker-compose`` (Debian).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
GRPC_SERVICES = {"market": 50051, "strategy": 50052, "executor": 50053}
SECRETS_BY_OWNER = {"CRON_SECRET": "gateway", "CREDENTIALS_KEYS": "executor", "OPENAI_API_KEY": "strategy"}


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is not installed: apt-get install -y --no-install-recommends docker-compose"
    return found


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --env-file keeps a developer's own .env out of the test; a clean
    # environment keeps the shell's variables out of the interpolation.
    return subprocess.run(
        [docker_compose(), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE),
         "--env-file", str(env_file), *args],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def filled_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = ENV_EXAMPLE.read_text()
    text = re.sub(r"^CRON_SECRET=.*$", "CRON_SECRET=cron-secret-for-config-test", text, flags=re.M)
    text = re.sub(r"^CREDENTIALS_KEYS=.*$", "CREDENTIALS_KEYS=fernet-key-for-config-test", text, flags=re.M)
    text = re.sub(r"^OPENAI_API_KEY=.*$", "OPENAI_API_KEY=openai-key-for-config-test", text, flags=re.M)
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def resolved(filled_env: Path) -> dict[str, Any]:
    result = compose(filled_env, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid(filled_env: Path) -> None:
    result = compose(filled_env, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_unfilled_env_file_stops_before_anything_starts() -> None:
    # .env.example copied as is: the required secrets are empty.
    result = compose(ENV_EXAMPLE, "config", "-q")
    assert result.returncode != 0
    assert "CRON_SECRET" in result.stderr or "CREDENTIALS_KEYS" in result.stderr


def test_services_and_images(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == {"mongo", "gateway", *GRPC_SERVICES}
    assert services["mongo"]["image"] == "mongo:7"
    for name in ("gateway", *GRPC_SERVICES):
        assert services[name]["build"]["dockerfile"] == f"services/{name}/Dockerfile"
        assert Path(services[name]["build"]["context"]).resolve() == REPO_ROOT


def test_mongo_keeps_data_in_a_named_volume_and_is_health_checked(resolved: dict[str, Any]) -> None:
    mongo = resolved["services"]["mongo"]
    assert "mongo-data" in resolved["volumes"]
    assert any(str(volume).startswith("mongo-data:/data/db") or (isinstance(volume, dict)
               and volume.get("source") == "mongo-data") for volume in mongo["volumes"])
    assert "mongosh" in mongo["healthcheck"]["test"]


def test_every_service_is_health_checked_with_the_grpc_probe(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, port in GRPC_SERVICES.items():
        test = services[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "services.common.healthprobe"]
        assert test[4] == f"127.0.0.1:{port}"
        assert services[name]["environment"]["GRPC_PORT"] == str(port)
        assert services[name]["environment"]["GRPC_HOST"] == "0.0.0.0"
    assert "/healthz" in " ".join(services["gateway"]["healthcheck"]["test"])


def test_start_order_waits_for_healthy_dependencies(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    gateway_needs = services["gateway"]["depends_on"]
    assert set(gateway_needs) == {"mongo", *GRPC_SERVICES}
    assert all(item["condition"] == "service_healthy" for item in gateway_needs.values())
    assert services["executor"]["depends_on"]["mongo"]["condition"] == "service_healthy"


def test_services_scale_out(resolved: dict[str, Any]) -> None:
    # `docker compose up --scale strategy=3 --scale market=2` needs no fixed
    # names and no host ports on scaled services; clients resolve every replica.
    services = resolved["services"]
    for name, service in services.items():
        assert "container_name" not in service, name
        if name != "gateway":
            assert not service.get("ports"), f"{name} publishes a host port"
    gateway_env = services["gateway"]["environment"]
    for name, port in GRPC_SERVICES.items():
        assert gateway_env[f"{name.upper()}_ADDR"] == f"dns:///{name}:{port}"
    (published,) = services["gateway"]["ports"]
    assert published["target"] == 8000


def test_each_secret_reaches_only_its_own_service(resolved: dict[str, Any]) -> None:
    for secret, owner in SECRETS_BY_OWNER.items():
        holders = {name for name, service in resolved["services"].items()
                   if secret in (service.get("environment") or {})}
        assert holders == {owner}, f"{secret} reaches {holders}"
        assert resolved["services"][owner]["environment"][secret].endswith("-for-config-test")
