"""Taking internal addresses out of error text that leaves the process.

gRPC transport errors name the pod they failed to reach ("ipv4:10.1.2.3:50053:
Failed to connect to remote host"), database errors name their servers, and
such text would otherwise travel into a bot's ``lastError``, its TradeLogs and
the user's webhooks. What a user needs is what failed, not where it runs.
"""

from __future__ import annotations

import re

ADDRESS_PLACEHOLDER = "<address>"

_PATTERNS = (
    # gRPC resolver targets and their percent-encoded IPv6 forms: ipv4:10.0.0.5:50053, ipv6:%5B::1%5D:50053
    re.compile(r"\b(?:ipv4|ipv6|dns|unix|unix-abstract):[^\s,;)'\"]+"),
    # IPv6 in brackets, with an optional port: [fd00::5]:50053
    re.compile(r"\[[0-9A-Fa-f.%]*:[0-9A-Fa-f:.%]*\](?::\d{1,5})?"),   # a colon inside: not candles[10]
    # IPv4 with an optional port
    re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"),
    # Bare IPv6: eight groups, or a "::" with a group beside it (fd00::5, fe80::1%eth0, ::1);
    # clock times (12:30:05) have neither.
    re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"),
    re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?"
               r"|::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)(?:%\w+)?(?![\w:])"),
    # host:port with a host that starts with a letter (executor.tradebot.svc.cluster.local:50053,
    # mongo:27017); clock times (12:30, 2026-12-04T12:00) do not.
    re.compile(r"\b[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*:\d{2,5}\b"),
)


def without_addresses(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(ADDRESS_PLACEHOLDER, text)
    return text
