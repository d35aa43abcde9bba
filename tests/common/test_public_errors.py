"""Error text that leaves a process names what failed, never where it runs."""

from __future__ import annotations

import pytest

from services.common.public_errors import ADDRESS_PLACEHOLDER, without_addresses


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.1.2.3:50053: Failed to connect",
         "10.1.2.3"),
        ("ipv6:%5B::1%5D:50053: Socket closed", "%5B::1%5D"),
        ("connect to [fd00::5]:50053 failed", "fd00::5"),
        ("executor.tradebot.svc.cluster.local:50053 unreachable", "cluster.local"),
        ("mongo:27017: [Errno -2] Name or service not known", "mongo:27017"),
        ("Cannot connect to host fapi.binance.com:443 ssl:default", "fapi.binance.com:443"),
        ("peer 2001:db8::1 reset the stream", "2001:db8::1"),
        ("dns:///market:50051 is not resolvable", "market:50051"),
    ],
)
def test_addresses_are_taken_out(text: str, address: str) -> None:
    cleaned = without_addresses(text)
    assert address not in cleaned and ADDRESS_PLACEHOLDER in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "config.leverage must be between 1 and 125, got 500",
        "candles[10].close must be a finite number, got 'NaN'",
        "tick at 16:49:06Z, next at 2026-12-04T12:00:00",
        "BUY confidence 80 above the threshold 70: opened LONG 0.166 at 60000.5",
        "LONG entry on BTCUSDT rejected: Binance error -2019: Margin is insufficient.",
    ],
)
def test_ordinary_messages_are_left_alone(text: str) -> None:
    assert without_addresses(text) == text
