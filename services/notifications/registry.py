"""Webhook registrations (collection ``webhooks``) and which TradeLogs they receive.

A registration is ``{userId, botInstanceId (absent/None = every bot of the
user), url, secret, events, isActive, createdAt}``. An operator's registration
(``tradebot webhook add --operator``) has ``operator: true`` and no user: it
receives the operator controls' events (halts, resumes, circuit breaker trips,
``CONTROL_ACTIONS``), fleet-wide and per user. ``secret`` is a random
per-webhook signing key generated here and shown to the user once; it is
stored as is because the gateway, which sends notifications, must sign with
it and does not hold the credential key. It is a shared secret with the
receiver only: it grants nothing on the exchange.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from services.common.trading_controls import CONTROL_ACTIONS
from services.notifications.egress import ALLOWED_SCHEMES, IPNetwork, parse_ip_literal, permitted

COLLECTION = "webhooks"
EVENTS: tuple[str, ...] = ("TRADE", "SAFETY", "ERROR")


class WebhookValidationError(ValueError):
    """A registration that cannot be stored, with a message meant for the user."""


def event_for(entry: Mapping[str, Any]) -> str | None:
    """The notification event a TradeLog entry raises, or None for routine entries.

    CRITICAL outranks the log type: a CRITICAL TRADE entry (for example a
    position closed because its stop could not be placed) is a SAFETY event.
    """
    log_type = str(entry.get("logType", "")).upper()
    severity = str(entry.get("severity", "")).upper()
    if log_type == "SAFETY" or severity == "CRITICAL":
        return "SAFETY"
    if log_type == "TRADE":
        return "TRADE"
    if log_type == "ERROR" or severity == "ERROR":
        return "ERROR"
    return None


def validate_url(url: str, allowed_networks: Sequence[IPNetwork] = ()) -> str:
    """An http(s) URL without credentials whose host, if an IP literal, is public or in ``allowed_networks``.

    A first, cheap filter with a message for the user: host names are not
    resolved here, because what a name points at can change after registration.
    The gateway checks every address again at each delivery.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
        _ = parts.port  # a port out of range raises ValueError
    except ValueError:
        raise WebhookValidationError(f"webhook URL must be an absolute http(s) URL, got {url!r}") from None
    if parts.scheme not in ALLOWED_SCHEMES or not hostname:
        raise WebhookValidationError(f"webhook URL must be an absolute http(s) URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would be printed by `webhook list` and sent in the clear over http.
        raise WebhookValidationError("webhook URL must not contain credentials (user:password@host)")
    literal = parse_ip_literal(hostname)
    if literal is not None and not permitted(literal, allowed_networks):
        raise WebhookValidationError(
            f"webhook URL must point at a public address, got {literal} (an internal, reserved or special address)"
        )
    return text


def validate_events(events: Iterable[str] | None) -> list[str]:
    if events is None:
        return list(EVENTS)
    chosen = [event.strip().upper() for event in events if event.strip()]
    unknown = sorted(set(chosen) - set(EVENTS))
    if unknown or not chosen:
        raise WebhookValidationError(f"events must be among {', '.join(EVENTS)}, got {', '.join(chosen) or 'none'}")
    return sorted(set(chosen), key=EVENTS.index)


def new_webhook_document(
    user_id: Any,
    url: str,
    *,
    bot_instance_id: Any | None = None,
    events: Iterable[str] | None = None,
    now: datetime | None = None,
    allowed_networks: Sequence[IPNetwork] = (),
) -> dict[str, Any]:
    """A registration ready to insert; its ``secret`` must be shown to the user exactly once.

    ``allowed_networks`` admits IP-literal hosts in those networks (a local receiver in development).
    """
    return {
        "userId": user_id,
        "botInstanceId": bot_instance_id,
        "url": validate_url(url, allowed_networks),
        "secret": "whsec_" + secrets.token_hex(32),
        "events": validate_events(events),
        "isActive": True,
        "createdAt": now or datetime.now(UTC),
    }


def new_operator_webhook_document(
    url: str,
    *,
    events: Iterable[str] | None = None,
    now: datetime | None = None,
    allowed_networks: Sequence[IPNetwork] = (),
) -> dict[str, Any]:
    """An operator's registration: the halt, resume and circuit-breaker events of the whole fleet."""
    document = new_webhook_document(None, url, events=events, now=now, allowed_networks=allowed_networks)
    document["operator"] = True
    return document


def for_operators(entry: Mapping[str, Any]) -> bool:
    """Whether an entry is an operator control's event, which operators' webhooks receive."""
    return entry.get("action") in CONTROL_ACTIONS


def subscribes(webhook: Mapping[str, Any], entry: Mapping[str, Any], event: str) -> bool:
    """Whether ``webhook`` (already matched on userId) wants ``event`` from ``entry``'s bot."""
    if not webhook.get("isActive", True):
        return False
    if event not in (webhook.get("events") or EVENTS):
        return False
    bot = webhook.get("botInstanceId")
    return bot is None or str(bot) == str(entry.get("botInstanceId"))
