"""Deterministic client order ids: the same (bot, tick) always yields the same ids.

A retried or duplicated tick therefore finds its own orders instead of
placing new ones. Ids fit Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$``.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

CLIENT_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


class OrderPurpose(StrEnum):
    ENTRY = "E"
    STOP_LOSS = "SL"
    TAKE_PROFIT = "TP"
    CLOSE = "X"


def client_order_id(bot_instance_id: str, tick_id: str, purpose: OrderPurpose) -> str:
    digest = hashlib.sha256(f"{bot_instance_id}\x00{tick_id}".encode()).hexdigest()[:16]
    return f"tb-{digest}-{purpose.value}"
