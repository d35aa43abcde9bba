"""User-data stream events in Binance's USDⓈ-M formats, built from the fake's own REST rows.

Numbers are strings as Binance sends them; ``E`` (event time) and ``T``
(transaction time) come from the fake clock in ms. Built from the same order,
trade and algo rows the REST routes answer with, so stream and REST agree.
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]


def order_trade_update(now_ms: int, order: dict[str, Any], *, execution: str, status: str,
                       cumulative: str = "0", trade: dict[str, Any] | None = None) -> Event:
    """ORDER_TRADE_UPDATE for one state change of ``order``; ``trade`` is the userTrades row of a fill."""
    filled = trade is not None
    return {"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": now_ms, "o": {
        "s": order["symbol"], "c": order["clientOrderId"], "S": order["side"], "o": order["type"], "f": "GTC",
        "q": order["origQty"], "p": "0", "ap": order["avgPrice"] if cumulative != "0" else "0",
        "sp": order["stopPrice"], "x": execution, "X": status, "i": order["orderId"],
        "l": trade["qty"] if filled else "0", "z": cumulative, "L": trade["price"] if filled else "0",
        "N": "USDT", "n": trade["commission"] if filled else "0", "T": trade["time"] if filled else now_ms,
        "t": trade["id"] if filled else 0, "b": "0", "a": "0", "m": False, "R": order["reduceOnly"],
        "wt": order["workingType"], "ot": order["origType"], "ps": order["positionSide"],
        "cp": order["closePosition"], "rp": trade["realizedPnl"] if filled else "0", "pP": False,
        "si": 0, "ss": 0, "V": "NONE", "pm": "NONE", "gtd": 0,
    }}


def algo_update(now_ms: int, algo: dict[str, Any], executed_qty: str = "0") -> Event:
    """ALGO_UPDATE with the algo order's current status (its REST row's ``algoStatus``)."""
    triggered = algo["actualOrderId"] != ""
    return {"e": "ALGO_UPDATE", "T": now_ms, "E": now_ms, "o": {
        "caid": algo["clientAlgoId"], "aid": algo["algoId"], "at": "CONDITIONAL", "o": algo["orderType"],
        "s": algo["symbol"], "S": algo["side"], "ps": algo["positionSide"], "f": "GTC", "q": algo["quantity"],
        "X": algo["algoStatus"], "ai": algo["actualOrderId"], "ap": algo["actualPrice"] if triggered else "0",
        "aq": executed_qty, "act": "MARKET" if triggered else "0", "tp": algo["triggerPrice"], "p": "0",
        "V": "NONE", "wt": algo["workingType"], "pm": "NONE", "cp": algo["closePosition"],
        "pP": algo["priceProtect"], "R": algo["reduceOnly"], "tt": algo["triggerTime"], "gtd": 0,
    }}


def account_update(now_ms: int, wallet: str, cross_wallet: str, positions: list[dict[str, Any]],
                   reason: str = "ORDER") -> Event:
    """ACCOUNT_UPDATE: the USDT balance and the positions that changed (``pa`` signed, "0" once closed)."""
    return {"e": "ACCOUNT_UPDATE", "E": now_ms, "T": now_ms, "a": {
        "m": reason, "B": [{"a": "USDT", "wb": wallet, "cw": cross_wallet, "bc": "0"}], "P": positions,
    }}


def account_config_update(now_ms: int, symbol: str, leverage: int) -> Event:
    return {"e": "ACCOUNT_CONFIG_UPDATE", "E": now_ms, "T": now_ms, "ac": {"s": symbol, "l": leverage}}


def listen_key_expired(now_ms: int, listen_key: str) -> Event:
    return {"e": "listenKeyExpired", "E": now_ms, "listenKey": listen_key}
