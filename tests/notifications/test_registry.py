"""Which TradeLogs become notifications, and what a registration must look like."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize("url", ["ftp://example.com/x", "hooks.example.com/path", "http://"])
def test_registration_refuses_non_http_urls(url: str) -> None:
    with pytest.raises(WebhookValidationError, match="http"):
        new_webhook_document("u1", url)


def test_registration_refuses_unknown_events() -> None:
    with pytest.raises(WebhookValidationError, match="ANALYSIS"):
        new_webhook_document("u1", "https://example.com/x", events=["TRADE", "ANALYSIS"])


def test_bot_scoped_webhook_only_hears_its_bot() -> None:
    hook = {"botInstanceId": "b1", "events": ["TRADE"], "isActive": True}
    assert subscribes(hook, {"botInstanceId": "b1"}, "TRADE")
    assert not subscribes(hook, {"botInstanceId": "b2"}, "TRADE")
    assert not subscribes(hook, {"botInstanceId": "b1"}, "ERROR")
    assert not subscribes({**hook, "isActive": False}, {"botInstanceId": "b1"}, "TRADE")
