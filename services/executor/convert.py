"""Translation between the proto messages and the broker's domain types."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

from tradebot.v1 import common_pb2, executor_pb2

from services.common.bot_documents import StoredPosition
from services.common.decimals import format_decimal, parse_decimal
from services.common.errors import InvalidArgument
from services.executor.brokers.base import (
    Candle,
    ClosedTradeRecord,
    ExchangePosition,
    PositionSide,
    ProtectiveOrders,
)

_SIDE_TO_PROTO = {"LONG": common_pb2.SIDE_LONG, "SHORT": common_pb2.SIDE_SHORT}
_SIDE_FROM_PROTO: dict[int, PositionSide] = {common_pb2.SIDE_LONG: "LONG", common_pb2.SIDE_SHORT: "SHORT"}


def side_to_proto(side: PositionSide) -> int:
    return _SIDE_TO_PROTO[side]


def side_from_proto(side: int) -> PositionSide | None:
    return _SIDE_FROM_PROTO.get(side)


def dec(value: Decimal | None) -> str:
    return "" if value is None else format_decimal(value)


def candles_from_proto(candles: Iterable[common_pb2.Candle]) -> list[Candle]:
    result: list[Candle] = []
    for index, candle in enumerate(candles):
        prefix = f"market.candles[{index}]"
        values = [parse_decimal(getattr(candle, name), f"{prefix}.{name}") for name in ("open", "high", "low", "close")]
        open_, high, low, close = (value if value is not None else Decimal(0) for value in values)
        if low > high:
            raise InvalidArgument(f"{prefix}: low is above high")
        result.append(Candle(candle.open_time_ms, candle.close_time_ms, open_, high, low, close, candle.closed))
    return result


def pnl_percent(pnl: Decimal, margin: Decimal) -> Decimal:
    if margin <= 0:
        return Decimal(0)
    return (pnl / margin * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def position_to_proto(
    position: ExchangePosition,
    protection: ProtectiveOrders,
    *,
    open_time_ms: int,
    entry_client_order_id: str,
) -> executor_pb2.Position:
    return executor_pb2.Position(
        symbol=position.symbol,
        side=side_to_proto(position.side),
        entry_price=dec(position.entry_price),
        quantity=dec(position.quantity),
        leverage=position.leverage,
        stop_loss=dec(protection.stop_loss_price),
        take_profit=dec(protection.take_profit_price),
        pnl=dec(position.unrealized_pnl),
        pnl_percent=dec(pnl_percent(position.unrealized_pnl, position.margin)),
        open_time_ms=open_time_ms,
        mark_price=dec(position.mark_price),
        entry_client_order_id=entry_client_order_id,
    )


def closed_trade_to_proto(record: ClosedTradeRecord) -> executor_pb2.ClosedTrade:
    return executor_pb2.ClosedTrade(
        symbol=record.symbol,
        side=side_to_proto(record.side),
        entry_price=dec(record.entry_price),
        exit_price=dec(record.exit_price),
        quantity=dec(record.quantity),
        realized_pnl=dec(record.realized_pnl),
        fees=dec(record.fees),
        reason=record.reason,
        open_time_ms=record.open_time_ms,
        close_time_ms=record.close_time_ms,
    )


def event(log_type: str, severity: str, action: str, message: str,
          data: dict[str, str] | None = None) -> executor_pb2.ExecutorEvent:
    return executor_pb2.ExecutorEvent(
        log_type=log_type, severity=severity, action=action, message=message, data=data or {}
    )


def stored_position_to_proto(position: StoredPosition) -> executor_pb2.Position:
    """The bot document's ``currentPosition`` as the cycle compares it with the exchange."""
    return executor_pb2.Position(
        symbol=position.symbol,
        side=_SIDE_TO_PROTO[position.side],
        entry_price=dec(position.entry_price),
        quantity=dec(position.quantity),
        leverage=position.leverage,
        stop_loss=dec(position.stop_loss),
        take_profit=dec(position.take_profit),
        pnl=dec(position.pnl),
        pnl_percent=dec(position.pnl_percent),
        open_time_ms=0 if position.open_time is None else int(position.open_time.timestamp() * 1000),
    )
