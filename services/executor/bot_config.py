"""The bot's trading settings: from the stored bot document, or from a BotConfig message.

The executor trades on the stored document's config (``settings_from_document``).
A BotConfig in a request (the backtest's, or a caller's statement of what it
believes the config is) is validated here with INVALID_ARGUMENT on
out-of-range values, before it is used or compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tradebot.v1 import executor_pb2

from services.common.bot_documents import (
    MARGIN_TYPES,
    MAX_PRICE_DISTANCE_PERCENT,
    MIN_PRICE_DISTANCE_PERCENT,
    BotConfigValues,
    stop_beyond_liquidation,
)
from services.common.decimals import parse_decimal
from services.common.errors import InvalidArgument


@dataclass(frozen=True)
class BotSettings:
    leverage: int
    stop_loss_percent: Decimal
    take_profit_percent: Decimal
    position_size_percent: Decimal
    max_daily_loss: Decimal
    confidence_threshold: float
    max_consecutive_losses: int        # 0 = rule off
    max_position_notional: Decimal | None
    margin_type: str


def _percent(value: str, field: str) -> Decimal:
    number = parse_decimal(value, field, positive=True)
    assert number is not None
    if number > 100:
        raise InvalidArgument(f"{field} must be in (0, 100], got {value!r}")
    return number


def _price_distance(value: str, field: str) -> Decimal:
    number = parse_decimal(value, field, positive=True)
    assert number is not None
    if not MIN_PRICE_DISTANCE_PERCENT <= number < MAX_PRICE_DISTANCE_PERCENT:
        raise InvalidArgument(
            f"{field} must be at least {MIN_PRICE_DISTANCE_PERCENT} and below {MAX_PRICE_DISTANCE_PERCENT} "
            f"(a price distance in percent from the entry fill), got {value!r}"
        )
    return number


def validate_config(config: executor_pb2.BotConfig) -> BotSettings:
    if not 1 <= config.leverage <= 125:
        raise InvalidArgument(f"config.leverage must be in 1..125, got {config.leverage}")
    threshold = config.confidence_threshold
    if not (0 <= threshold <= 100):  # also rejects NaN
        raise InvalidArgument(f"config.confidence_threshold must be in 0..100, got {threshold}")
    if config.max_consecutive_losses < 0:
        raise InvalidArgument("config.max_consecutive_losses must be >= 0")
    max_daily_loss = parse_decimal(config.max_daily_loss, "config.max_daily_loss", positive=True)
    assert max_daily_loss is not None
    cap = parse_decimal(config.max_position_notional, "config.max_position_notional", allow_empty=True)
    if cap is not None and cap < 0:
        raise InvalidArgument("config.max_position_notional must be >= 0")
    margin_type = (config.margin_type or "ISOLATED").upper()
    if margin_type not in MARGIN_TYPES:
        raise InvalidArgument(f"config.margin_type must be ISOLATED or CROSSED, got {config.margin_type!r}")
    stop_loss_percent = _price_distance(config.stop_loss_percent, "config.stop_loss_percent")
    beyond = stop_beyond_liquidation(config.leverage, stop_loss_percent)
    if beyond is not None:
        raise InvalidArgument(f"config.{beyond}")
    return BotSettings(
        leverage=config.leverage,
        stop_loss_percent=stop_loss_percent,
        take_profit_percent=_price_distance(config.take_profit_percent, "config.take_profit_percent"),
        position_size_percent=_percent(config.position_size_percent, "config.position_size_percent"),
        max_daily_loss=max_daily_loss,
        confidence_threshold=threshold,
        max_consecutive_losses=config.max_consecutive_losses,
        max_position_notional=cap if cap else None,
        margin_type=margin_type,
    )


def settings_from_document(config: BotConfigValues) -> BotSettings:
    """The stored config, already validated by the shared document parser."""
    return BotSettings(
        leverage=config.leverage,
        stop_loss_percent=config.stop_loss_percent,
        take_profit_percent=config.take_profit_percent,
        position_size_percent=config.position_size_percent,
        max_daily_loss=config.max_daily_loss,
        confidence_threshold=config.confidence_threshold,
        max_consecutive_losses=config.max_consecutive_losses,
        max_position_notional=config.max_position_notional,
        margin_type=config.margin_type,
    )
