"""Which TradeLogs become notifications, and what a registration must look like."""

from __future__ import annotations

import pytest

from services.notifications.egress import parse_networks
from services.notifications.registry import (
    WebhookValidationError,
    event_for,
    new_webhook_document,
    subscribes,
)


@pytest.mark.parametrize(
    ("log_type", "severity", "event"),
    [
        ("TRADE", "INFO", "TRADE"),
        ("SAFETY", "WARNING", "SAFETY"),
        ("TRADE", "CRITICAL", "SAFETY"),  # e.g. closed at market because the stop could not be placed
        ("ERROR", "ERROR", "ERROR"),
        ("SYSTEM", "ERROR", "ERROR"),
        ("ANALYSIS", "INFO", None),
        ("SYSTEM", "WARNING", None),
    ],
)
def test_event_for_trade_log(log_type: str, severity: str, event: str | None) -> None:
    assert event_for({"logType": log_type, "severity": severity}) == event


def test_registration_generates_a_distinct_secret_and_defaults_to_every_event() -> None:
    first = new_webhook_document("u1", "https://hooks.example.com/a")
    second = new_webhook_document("u1", "https://hooks.example.com/a")
    assert first["secret"] != second["secret"] and len(first["secret"]) >= 32
    assert first["events"] == ["TRADE", "SAFETY", "ERROR"]
    assert first["isActive"] is True and first["botInstanceId"] is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "hooks.example.com/path", "http://", "file:///etc/passwd", "http://[::1/",
            "http://example.com:99999/"],
)
def test_registration_refuses_non_http_urls(url: str) -> None:
    with pytest.raises(WebhookValidationError, match="http"):
        new_webhook_document("u1", url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/", "http://127.0.0.1:9000/hook", "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/", "https://192.168.0.10/", "http://[::1]:8080/", "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/", "http://2130706433/", "http://0x7f.0.0.1/", "http://0.0.0.0/",
    ],
)
def test_registration_refuses_internal_ip_literals(url: str) -> None:
    with pytest.raises(WebhookValidationError, match="public address"):
        new_webhook_document("u1", url)


def test_registration_refuses_credentials_in_the_url() -> None:
    with pytest.raises(WebhookValidationError, match="credentials"):
        new_webhook_document("u1", "http://user:pw@hooks.example.com/")
    with pytest.raises(WebhookValidationError, match="credentials"):
        new_webhook_document("u1", "https://token@hooks.example.com/")


def test_registration_accepts_public_hosts_and_allowed_networks() -> None:
    assert new_webhook_document("u1", "https://8.8.8.8/hook")["url"] == "https://8.8.8.8/hook"
    # Names are not resolved at registration: the delivery-time check judges what they point at.
    assert new_webhook_document("u1", "http://localhost:9000/hook")["url"] == "http://localhost:9000/hook"
    local = new_webhook_document("u1", " http://127.0.0.1:9000/hook ", allowed_networks=parse_networks("127.0.0.0/8"))
    assert local["url"] == "http://127.0.0.1:9000/hook"


def test_registration_refuses_unknown_events() -> None:
    with pytest.raises(WebhookValidationError, match="ANALYSIS"):
        new_webhook_document("u1", "https://example.com/x", events=["TRADE", "ANALYSIS"])


def test_bot_scoped_webhook_only_hears_its_bot() -> None:
    hook = {"botInstanceId": "b1", "events": ["TRADE"], "isActive": True}
    assert subscribes(hook, {"botInstanceId": "b1"}, "TRADE")
    assert not subscribes(hook, {"botInstanceId": "b2"}, "TRADE")
    assert not subscribes(hook, {"botInstanceId": "b1"}, "ERROR")
    assert not subscribes({**hook, "isActive": False}, {"botInstanceId": "b1"}, "TRADE")
