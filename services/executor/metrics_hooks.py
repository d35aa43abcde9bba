"""Order and safety metrics, read off each RunCycle response (the cycle itself stays metrics-free).

The response does not say which account mode the cycle ran in, so the cycle
runner reports each resolved connection to ``note_connection_mode``, which
keeps its mode in a per-call holder that the servicer reads when it records
the response.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from tradebot.v1 import common_pb2, executor_pb2

from services.common import metrics
from services.executor.connections import ExchangeConnection

UNKNOWN_MODE = "unknown"  # the cycle failed before its connection was resolved
# Executor events that mean an order could not do its job, by ORDERS_FAILED_TOTAL reason.
FAILED_ORDER_ACTIONS = {
    "ORDER_FAILED": "rejected",
    "UNPROTECTED_POSITION": "protection",
    "STOP_LOSS_FAILED": "protection",
}


@dataclass
class _CycleMode:
    mode: str = UNKNOWN_MODE


_current: ContextVar[_CycleMode | None] = ContextVar("executor_cycle_mode", default=None)


def note_connection_mode(connection: ExchangeConnection) -> None:
    """Tell the current RunCycle call's metrics which account mode its connection has."""
    holder = _current.get()
    if holder is not None:
        holder.mode = connection.mode


@contextmanager
def cycle_mode() -> Iterator[_CycleMode]:
    """Collect the mode of the connection resolved inside this block (one RunCycle call)."""
    holder = _CycleMode()
    token = _current.set(holder)
    try:
        yield holder
    finally:
        _current.reset(token)


def record_cycle(response: executor_pb2.RunCycleResponse, mode: str) -> None:
    if response.order.placed:
        side = "LONG" if response.order.side == common_pb2.SIDE_LONG else "SHORT"
        metrics.ORDERS_PLACED_TOTAL.labels(mode=mode, side=side).inc()
    for event in response.events:
        reason = FAILED_ORDER_ACTIONS.get(event.action)
        if reason is not None:
            metrics.ORDERS_FAILED_TOTAL.labels(mode=mode, reason=reason).inc()
    if response.safety.tripped:
        metrics.SAFETY_TRIPS_TOTAL.labels(rule=response.safety.rule or "UNKNOWN").inc()
