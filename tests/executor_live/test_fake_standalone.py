"""The fake exchange as its own process (what end-to-end tests start), reached by the live broker."""

from __future__ import annotations

from decimal import Decimal

import httpx

from services.executor.brokers.base import EntryOrder
from services.executor.binance.broker import create_binance_broker
from tests.support.processes import ManagedProcess, free_port, python_module


async def test_standalone_fake_serves_the_broker_and_moves_the_mark_price() -> None:
    port = free_port()
    key, secret = "standaloneKey0001", "standaloneSecret0001"
    process = ManagedProcess(
        "fake-binance",
        python_module("tests.fakes.binance_futures", "--port", str(port), "--api-key", key, "--api-secret", secret),
        {},
    )
    try:
        url = process.wait_for_line(r"READY (\S+)", timeout=20).group(1)
        assert url == f"http://127.0.0.1:{port}"
        broker = await create_binance_broker(api_key=key, api_secret=secret, futures_url=url, spot_url=url)
        try:
            fill = await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.01"), "e2e-t1-entry", Decimal("50000")))
            await broker.protect("BTCUSDT", "LONG", Decimal("49000"), Decimal("55000"), "e2e-t1-sl", "e2e-t1-tp")
            async with httpx.AsyncClient() as http:
                moved = await http.post(f"{url}/_fake/mark-price", json={"symbol": "BTCUSDT", "price": "48900"})
            assert moved.status_code == 200
            assert await broker.position("BTCUSDT") is None
            record = await broker.closed_trade("BTCUSDT", "LONG", fill.time_ms)
            assert record is not None and record.reason == "STOP_LOSS" and record.exit_price == Decimal("48900")
        finally:
            await broker.close()
    finally:
        process.stop()
    assert secret not in process.output()
