"""Upstash-signed deliveries are accepted when signing keys are configured, and only when valid."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

import jwt
import pytest

from tests.gateway.conftest import AUTH

PATH = "/api/cron/run-bots"
PUBLIC_URL = "https://bots.example.com/api/cron/run-bots"
CURRENT = "sig_current_0123456789abcdefghijkl"
NEXT = "sig_next_0123456789abcdefghijklmnop"


def signature(body: bytes, *, key: str = CURRENT, sub: str = PUBLIC_URL, exp_in: float = 300, nbf_in: float = 0,
              issuer: str = "Upstash", jti: str | None = None) -> str:  # fmt: skip
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": sub,
        "exp": now + int(exp_in),
        "nbf": now + int(nbf_in),
        "iat": now,
        "jti": jti if jti is not None else f"msg_{uuid.uuid4().hex}",   # Upstash names each delivery
        "body": base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode(),
    }
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.fixture
async def signed_gateway(gateway_factory):
    async with gateway_factory(
        qstash_current_signing_key=CURRENT, qstash_next_signing_key=NEXT, cron_public_url=PUBLIC_URL
    ) as gateway:
        gateway.add_bots(1)
        yield gateway


async def test_valid_signature_with_current_or_next_key_runs_the_tick(signed_gateway):
    body = b'{"scheduled": true}'
    for key in (CURRENT, NEXT):
        response = await signed_gateway.http.post(PATH, content=body, headers={"Upstash-Signature": signature(body, key=key)})
        assert response.status_code == 200, response.text
        assert response.json()["summary"]["totalBots"] == 1


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda body: signature(body, key="sig_wrong_key_0123456789abcdefgh"), id="wrong-key"),
        pytest.param(lambda body: signature(body, sub="https://evil.example.com/api/cron/run-bots"), id="wrong-sub"),
        pytest.param(lambda body: signature(body, exp_in=-120), id="expired"),
        pytest.param(lambda body: signature(body, nbf_in=120), id="not-yet-valid"),
        pytest.param(lambda body: signature(body, issuer="Someone"), id="wrong-issuer"),
        pytest.param(lambda body: signature(body + b"tampered"), id="tampered-body"),
        pytest.param(lambda body: "not.a.jwt", id="garbage"),
    ],
)
async def test_invalid_signatures_get_401_before_database_work(signed_gateway, make):
    body = b'{"scheduled": true}'
    signed_gateway.mongo.commands.clear()
    response = await signed_gateway.http.post(PATH, content=body, headers={"Upstash-Signature": make(body)})
    assert response.status_code == 401
    assert response.json() == {"success": False, "error": "Unauthorized"}
    assert signed_gateway.mongo.commands == []


async def test_signature_is_ignored_when_no_signing_key_is_configured(gateway):
    body = b"{}"
    response = await gateway.http.post(PATH, content=body, headers={"Upstash-Signature": signature(body)})
    assert response.status_code == 401


async def test_signed_delivery_with_a_huge_body_gets_413(signed_gateway):
    body = b"x" * (200 * 1024)
    response = await signed_gateway.http.post(PATH, content=body, headers={"Upstash-Signature": signature(body)})
    assert response.status_code == 413


def test_signing_keys_need_the_public_url():
    from services.gateway.settings import GatewaySettings, SettingsError

    env = {"CRON_SECRET": "x" * 40, "MONGODB_URI": "mongodb://127.0.0.1:1", "QSTASH_CURRENT_SIGNING_KEY": CURRENT}
    with pytest.raises(SettingsError, match="CRON_PUBLIC_URL"):
        GatewaySettings.from_env(env)
    settings = GatewaySettings.from_env({**env, "CRON_PUBLIC_URL": PUBLIC_URL})
    assert settings.cron_public_url == PUBLIC_URL and CURRENT not in repr(settings)


async def test_a_cron_signature_does_not_open_the_status_report(signed_gateway):
    # Valid for the cron URL for five minutes; it must not be a key to other endpoints.
    response = await signed_gateway.http.get("/api/status", headers={"Upstash-Signature": signature(b"")})
    assert response.status_code == 401
    assert response.json() == {"success": False, "error": "Unauthorized"}


async def test_a_replayed_delivery_is_refused(signed_gateway):
    body = b'{"scheduled": true}'
    captured = signature(body)
    first = await signed_gateway.http.post(PATH, content=body, headers={"Upstash-Signature": captured})
    assert first.status_code == 200, first.text
    # The same signed request again, well within its five minutes: no second tick.
    again = await signed_gateway.http.post(PATH, content=body, headers={"Upstash-Signature": captured})
    assert again.status_code == 401 and again.json() == {"success": False, "error": "Unauthorized"}
    assert len(signed_gateway.fakes.executor.calls) == 1   # the one bot ran once
    stored = signed_gateway.db.cronreplays.find_one({})
    assert stored is not None and stored["_id"].startswith("jti:msg_") and stored["expiresAt"] is not None
    # A token without a jti is keyed by its hash: replaying it is refused all the same.
    anonymous = signature(body, jti="")
    assert (await signed_gateway.http.post(PATH, content=body, headers={"Upstash-Signature": anonymous})).status_code == 200
    assert (await signed_gateway.http.post(PATH, content=body, headers={"Upstash-Signature": anonymous})).status_code == 401
    # The bearer secret is not a delivery: a retry with it still runs.
    assert (await signed_gateway.http.post(PATH, headers=AUTH)).status_code == 200
