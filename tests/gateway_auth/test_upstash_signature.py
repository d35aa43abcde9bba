"""Upstash signed deliveries: each way a forged or stale delivery can look is refused."""

from __future__ import annotations

import base64
import hashlib
import time

import jwt
import pytest

from services.gateway.upstash_signature import SignatureInvalid, UpstashVerifier

CURRENT = "sig_current_key_0123456789abcdef"
NEXT = "sig_next_key_fedcba9876543210abcd"
URL = "https://bots.example.com/api/cron/run-bots"


def body_hash(body: bytes, padded: bool = True) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
    return digest if padded else digest.rstrip("=")


def token(key: str, signed_body: bytes, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": "Upstash",
        "sub": URL,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "jwt_test",
        "body": body_hash(signed_body),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="HS256")


VERIFIER = UpstashVerifier(CURRENT, NEXT, URL, leeway_seconds=5)


def test_current_key_accepted():
    VERIFIER.verify(token(CURRENT, b"{}"), b"{}")


def test_next_key_accepted_during_rotation():
    VERIFIER.verify(token(NEXT, b""), b"")


def test_unpadded_body_hash_accepted():
    VERIFIER.verify(token(CURRENT, b"abc", body=body_hash(b"abc", padded=False)), b"abc")


@pytest.mark.parametrize(
    ("signature_factory", "body"),
    [
        (lambda: token("some_other_key_not_configured_x", b"{}"), b"{}"),
        (lambda: token(CURRENT, b"{}", sub="https://evil.example.com/api/cron/run-bots"), b"{}"),
        (lambda: token(CURRENT, b"{}", exp=int(time.time()) - 60), b"{}"),
        (lambda: token(CURRENT, b"{}", nbf=int(time.time()) + 120), b"{}"),
        (lambda: token(CURRENT, b"{}"), b'{"tampered": true}'),
        (lambda: token(CURRENT, b"{}", iss="NotUpstash"), b"{}"),
        (lambda: token(CURRENT, b"{}", body=None), b"{}"),
        (lambda: "not-a-jwt", b"{}"),
        (lambda: "", b"{}"),
        (lambda: "a" * 10_000, b"{}"),
    ],
    ids=["wrong-key", "wrong-sub", "expired", "not-yet-valid", "tampered-body", "wrong-iss", "no-body-claim",
         "garbage", "empty", "oversized"],
)
def test_forged_or_stale_deliveries_refused(signature_factory, body):
    with pytest.raises(SignatureInvalid):
        VERIFIER.verify(signature_factory(), body)


def test_none_algorithm_refused():
    unsigned = jwt.encode({"iss": "Upstash", "sub": URL, "exp": int(time.time()) + 60, "nbf": int(time.time()),
                           "body": body_hash(b"")}, key=None, algorithm="none")
    with pytest.raises(SignatureInvalid):
        VERIFIER.verify(unsigned, b"")
