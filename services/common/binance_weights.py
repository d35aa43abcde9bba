"""Binance USDⓈ-M futures request weights (per egress IP, 2,400 per minute).

One table for the market service, which spends weight, and the gateway's
planner, which estimates it before a tick.
"""

from __future__ import annotations

IP_WEIGHT_LIMIT_1M = 2400
EXCHANGE_INFO_WEIGHT = 1
MARK_PRICE_WEIGHT_ONE_SYMBOL = 1
MARK_PRICE_WEIGHT_ALL_SYMBOLS = 10


def klines_weight(limit: int) -> int:
    """GET /fapi/v1/klines weight by LIMIT: [1,100) 1, [100,500) 2, [500,1000] 5, > 1000 10."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10
