"""The live broker's account-wide positions read: one positionRisk v3 request without a symbol."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.common.errors import Unavailable


async def test_all_open_positions_in_one_request(broker, fake):
    fake.manual_order("BTCUSDT", "BUY", Decimal("0.01"))
    fake.manual_order("ETHUSDT", "SELL", Decimal("2"))
    fake.requests.clear()

    positions = await broker.positions()

    assert set(positions) == {"BTCUSDT", "ETHUSDT"}
    assert positions["BTCUSDT"].side == "LONG" and positions["BTCUSDT"].quantity == Decimal("0.01")
    assert positions["ETHUSDT"].side == "SHORT" and positions["ETHUSDT"].quantity == Decimal("2")
    assert positions["ETHUSDT"] == await broker.position("ETHUSDT")   # the same view as the per-symbol read
    [first, _] = fake.reads("/fapi/v3/positionRisk")
    assert "symbol" not in first.params


async def test_a_flat_account_is_an_empty_snapshot_but_a_failed_read_raises(broker, fake):
    assert await broker.positions() == {}
    fake.fail_next("GET", "/fapi/v3/positionRisk", status=503, code=-1001, msg="Internal error", times=10)
    with pytest.raises(Unavailable):
        await broker.positions()
