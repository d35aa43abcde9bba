"""The cron endpoint lets only the bearer of CRON_SECRET in, before touching the database."""

from __future__ import annotations

import hmac
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from services.gateway import auth
from services.gateway.settings import GatewaySettings, SettingsError
from tests.gateway.conftest import AUTH, CRON_SECRET

PATH = "/api/cron/run-bots"
UNAUTHORIZED = {"success": False, "error": "Unauthorized"}

REJECTED_HEADERS = [
    pytest.param(None, id="missing"),
    pytest.param(f"Bearer {CRON_SECRET}x", id="longer-secret"),
    pytest.param(f"Bearer {CRON_SECRET[:-1]}", id="prefix-of-secret"),
    pytest.param(f"Basic {CRON_SECRET}", id="other-scheme"),
    pytest.param(CRON_SECRET, id="no-scheme"),
    pytest.param("Bearer ", id="empty-token"),
    pytest.param("Bearer " + "A" * 20_000, id="oversized"),
    pytest.param(("Bearer " + CRON_SECRET[:-2] + "é").encode("utf-8"), id="non-ascii"),
]


@pytest.mark.parametrize("authorization", REJECTED_HEADERS)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bad_credentials_get_401_before_any_database_work(gateway, authorization, method):
    gateway.add_bots(2)
    headers = {} if authorization is None else {"Authorization": authorization}
    gateway.mongo.commands.clear()

    response = await gateway.http.request(method, PATH, headers=headers)

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert gateway.mongo.commands == []
    assert gateway.fakes.executor.calls == []
    assert gateway.db.botinstances.count_documents({"lockOwner": {"$exists": True}}) == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_right_secret_runs_a_tick(gateway, method):
    gateway.add_bots(1)
    response = await gateway.http.request(method, PATH, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["summary"]["successful"] == 1


async def test_scheme_is_case_insensitive(gateway):
    response = await gateway.http.get(PATH, headers={"Authorization": f"bearer {CRON_SECRET}"})
    assert response.status_code == 200


async def test_secret_is_compared_in_constant_time_over_bytes(gateway, monkeypatch):
    seen: list[tuple[object, object]] = []
    real_compare = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    await gateway.http.get(PATH, headers={"Authorization": "Bearer wrong-guess"})
    await gateway.http.get(PATH, headers=AUTH)
    assert len(seen) == 2
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in seen)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def test_other_methods_get_405(gateway, method):
    response = await gateway.http.request(method, PATH, headers=AUTH)
    assert response.status_code == 405
    assert gateway.fakes.executor.calls == []


async def test_huge_declared_body_gets_413_without_a_tick(gateway):
    gateway.add_bots(1)
    response = await gateway.http.post(PATH, headers=AUTH, content=b"x" * (128 * 1024))
    assert response.status_code == 413
    assert gateway.fakes.executor.calls == []


def test_settings_refuse_a_short_or_missing_secret():
    base = {"MONGODB_URI": "mongodb://127.0.0.1:1"}
    with pytest.raises(SettingsError, match="at least 32"):
        GatewaySettings.from_env({**base, "CRON_SECRET": "short-secret"})
    with pytest.raises(SettingsError, match="CRON_SECRET"):
        GatewaySettings.from_env(base)
    with pytest.raises(SettingsError, match="MONGODB_URI"):
        GatewaySettings.from_env({"CRON_SECRET": CRON_SECRET})
    settings = GatewaySettings.from_env({**base, "CRON_SECRET": CRON_SECRET})
    assert (settings.port, settings.mongodb_db, settings.tick_deadline_seconds) == (8000, "tradebots", 270.0)
    assert settings.lease_seconds > settings.tick_deadline_seconds
    assert CRON_SECRET not in repr(settings)


def test_gateway_process_refuses_to_start_with_a_short_secret():
    short = "short-but-distinctive-Z9"
    result = subprocess.run(
        [sys.executable, "-m", "services.gateway"],
        env={"CRON_SECRET": short, "MONGODB_URI": "mongodb://127.0.0.1:1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "CRON_SECRET must be at least 32 characters" in result.stderr
    assert short not in result.stdout + result.stderr


async def test_every_cron_answer_is_counted_by_status_code(gateway):
    # A cron that keeps getting 401 (a rotated secret) ticks nothing: the alert needs this counter.
    def count(code: str) -> float:
        return REGISTRY.get_sample_value("tradebot_cron_responses_total", {"code": code}) or 0.0

    before = {code: count(code) for code in ("200", "401")}
    gateway.add_bots(1)
    assert (await gateway.http.get(PATH, headers=AUTH)).status_code == 200
    assert (await gateway.http.get(PATH, headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert {code: count(code) - before[code] for code in before} == {"200": 1, "401": 1}
