"""The signature scheme receivers rely on: HMAC-SHA256 over "<timestamp>.<raw body>"."""

from __future__ import annotations

import hashlib
import hmac

from services.notifications.signing import sign, verify_signature

SECRET = "whsec_test_secret_value"
BODY = b'{"event":"TRADE","message":"Opened LONG 0.01 BTCUSDT"}'


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1700000000", BODY) == f"sha256={expected}"


def test_verify_accepts_a_fresh_signature() -> None:
    header = sign(SECRET, "1700000000", BODY)
    assert verify_signature(SECRET, "1700000000", BODY, header, tolerance=300, now=1700000100)


def test_verify_rejects_tampering_wrong_secret_and_replays() -> None:
    header = sign(SECRET, "1700000000", BODY)
    assert not verify_signature(SECRET, "1700000000", BODY + b" ", header, now=1700000000)
    assert not verify_signature("whsec_other_secret", "1700000000", BODY, header, now=1700000000)
    # The timestamp is bound into the signature: moving it breaks the check...
    assert not verify_signature(SECRET, "1700000200", BODY, header, now=1700000200)
    # ...and an old delivery replayed later is refused.
    assert not verify_signature(SECRET, "1700000000", BODY, header, tolerance=300, now=1700000301)
    assert not verify_signature(SECRET, "not-a-number", BODY, header, now=1700000000)
    assert not verify_signature(SECRET, "1700000000", BODY, header.removeprefix("sha256="), now=1700000000)
