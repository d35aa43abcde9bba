"""What a cycle says when an operator's control is in force: the halt, the breaker, a flatten.

The cycle (``cycle.py``) decides; this module words it. A halt or an open breaker stops new entries and
nothing else: positions are still monitored, protected and closed by their stop-loss, take-profit or a
safety rule. A halt with ``flatten`` also closes each open position (reduce-only) in its bot's next cycle.
"""

from __future__ import annotations

from decimal import Decimal

from tradebot.v1 import common_pb2

from services.executor.convert import dec

FLATTENED = "FLATTENED"   # the closing reason of a position an operator's halt closed

_ACTION_NAMES = {common_pb2.ACTION_BUY: "BUY", common_pb2.ACTION_SELL: "SELL"}


def blocked_entry(signal: common_pb2.Signal | None, threshold: float) -> str | None:
    """The entry the signal asked for ("BUY confidence 85"), or None when it asked for none."""
    if signal is None or signal.action not in _ACTION_NAMES or not signal.confidence > threshold:
        return None
    return f"{_ACTION_NAMES[signal.action]} confidence {signal.confidence:g}"


def entries_stopped_decision(stopped: str, blocked: str | None, earlier: str) -> str:
    """The decision of a flat bot whose entries are stopped (``earlier``: what the cycle did before, if anything)."""
    entry = f"the {blocked} entry was not made" if blocked else "no new entry"
    return f"{stopped}: {entry}" + (f"; {earlier}" if earlier else "")


def flattened(side: str, quantity: Decimal, symbol: str, price: Decimal | None) -> str:
    at = f" at {dec(price)}" if price is not None else ""
    return f"the {side} position of {dec(quantity)} {symbol} was closed reduce-only{at} (flatten)"


def flatten_failed_message(reason: str, side: str, symbol: str, error: str) -> str:
    return (f"{reason}: closing the {side} position on {symbol} (flatten) FAILED: {error}; it keeps its "
            "stop-loss and the next cycle tries again")
