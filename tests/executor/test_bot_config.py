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


@pytest.mark.parametrize("value", ["0.05", "3", "99.9"])
def test_price_distances_inside_the_range_are_kept_exactly(value):
    settings = validate_config(config(stop_loss_percent=value, take_profit_percent=value))
    assert settings.stop_loss_percent == Decimal(value)
    assert settings.take_profit_percent == Decimal(value)
