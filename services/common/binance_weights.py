"""Binance USDⓈ-M futures request weights (per egress IP, 2,400 per minute): the one table.

From https://developers.binance.com/docs/derivatives/usds-margined-futures (each
endpoint's "Request Weight"). The weight governor charges every REST request
by it before sending; the gateway's planner estimates a tick with it. Orders
(``POST /fapi/v1/order``, ``/fapi/v1/algoOrder``) weigh 0 on the IP: they count
against the account's order-rate limits instead (``binance_ratelimit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IP_WEIGHT_LIMIT_1M = 2400
EXCHANGE_INFO_WEIGHT = 1
MARK_PRICE_WEIGHT_ONE_SYMBOL = 1
MARK_PRICE_WEIGHT_ALL_SYMBOLS = 10
UNKNOWN_ENDPOINT_WEIGHT = 5   # not in the table: assume a heavy-ish read rather than a free one


def klines_weight(limit: int) -> int:
    """GET /fapi/v1/klines weight by LIMIT: [1,100) 1, [100,500) 2, [500,1000] 5, > 1000 10."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


# (method, path) -> weight, or (weight with symbol, weight without symbol).
_WEIGHTS: dict[tuple[str, str], int | tuple[int, int]] = {
    ("GET", "/fapi/v1/ping"): 1,
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): EXCHANGE_INFO_WEIGHT,
    ("GET", "/fapi/v1/premiumIndex"): (MARK_PRICE_WEIGHT_ONE_SYMBOL, MARK_PRICE_WEIGHT_ALL_SYMBOLS),
    ("GET", "/fapi/v1/ticker/price"): (1, 2),
    ("GET", "/fapi/v2/ticker/price"): (1, 2),
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("POST", "/fapi/v1/positionSide/dual"): 1,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v1/symbolConfig"): 5,
    ("GET", "/fapi/v1/accountConfig"): 5,
    ("POST", "/fapi/v1/order"): 0,
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): (1, 40),
    ("GET", "/fapi/v1/allOrders"): 5,
    ("POST", "/fapi/v1/algoOrder"): 0,
    ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/openAlgoOrders"): (1, 40),
    ("GET", "/fapi/v1/allAlgoOrders"): 5,
    ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/income"): 30,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
}


def request_weight(method: str, path: str, params: Mapping[str, Any] | None = None) -> int:
    """The IP weight Binance charges for one request."""
    params = params or {}
    if path.endswith("/klines"):
        return klines_weight(int(params.get("limit", 500)))
    entry = _WEIGHTS.get((method.upper(), path))
    if entry is None:
        return UNKNOWN_ENDPOINT_WEIGHT
    if isinstance(entry, tuple):
        return entry[0] if params.get("symbol") else entry[1]
    return entry
