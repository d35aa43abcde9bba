"""Config values that would place a stop at or below zero, or inside the spread, never reach an order."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.common.errors import InvalidArgument
from services.executor.bot_config import validate_config
from tests.executor.builders import config


@pytest.mark.parametrize("field", ["stop_loss_percent", "take_profit_percent"])
@pytest.mark.parametrize("value", ["100", "150", "0.01", "1E-999999", "0", "-3", "NaN"])
def test_price_distances_outside_the_safe_range_are_rejected(field, value):
    with pytest.raises(InvalidArgument, match=field):
        validate_config(config(**{field: value}))


@pytest.mark.parametrize("value", ["0.05", "3", "98.9"])
def test_price_distances_inside_the_range_are_kept_exactly(value):
    # Leverage 1: the stop distance is bounded by the price range, not by liquidation.
    settings = validate_config(config(leverage=1, stop_loss_percent=value, take_profit_percent=value))
    assert settings.stop_loss_percent == Decimal(value)
    assert settings.take_profit_percent == Decimal(value)


@pytest.mark.parametrize(("leverage", "stop", "accepted"), [
    (10, "3", True),       # liquidated about 9 % away: the 3 % stop fires first
    (10, "9", False),      # at the liquidation distance: the position is liquidated before its stop
    (50, "1.5", False),    # 100/50 - 1 = 1 %: a 1.5 % stop can never fire
    (50, "0.9", True),
    (125, "0.05", False),  # at 125x an isolated position is liquidated before any stop 0.05 % away
])
def test_a_stop_at_or_beyond_liquidation_is_refused_with_the_numbers(leverage, stop, accepted):
    bot = config(leverage=leverage, stop_loss_percent=stop)
    if accepted:
        assert validate_config(bot).stop_loss_percent == Decimal(stop)
        return
    with pytest.raises(InvalidArgument, match=f"stopLossPercent {stop} at leverage {leverage} is at or beyond "
                                              "liquidation") as refused:
        validate_config(bot)
    assert "lower the leverage or the stop distance" in refused.value.message
