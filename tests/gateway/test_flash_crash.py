"""The flash-crash trigger judges the candles a tick already has: a candle ranging past the threshold trips the
breaker once; long candles, old candles and calm candles do not."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tradebot.v1 import common_pb2

from services.common.circuit_breaker import BreakerSettings
from services.gateway.flash_crash import FlashCrashWatch, candle_move

MINUTE_MS = 60_000
NOW_MS = 1_795_000_000_000
SETTINGS = BreakerSettings(flash_move=0.10, cooldown_seconds=900, flash_max_interval="1h")


class RecordingTrips:
    def __init__(self) -> None:
        self.trips: list[tuple[str, str, Mapping[str, Any]]] = []

    async def trip(self, cause: str, reason: str, evidence: Mapping[str, Any]) -> bool:
        self.trips.append((cause, reason, evidence))
        return True


def _candle(minutes_ago: int, open_: str, high: str, low: str, length_minutes: int = 5) -> common_pb2.Candle:
    open_time = NOW_MS - minutes_ago * MINUTE_MS
    return common_pb2.Candle(open_time_ms=open_time, close_time_ms=open_time + length_minutes * MINUTE_MS - 1,
                             open=open_, high=high, low=low, close=open_, volume="1", closed=True)


def _watch(settings: BreakerSettings = SETTINGS) -> tuple[FlashCrashWatch, RecordingTrips]:
    trips = RecordingTrips()
    return FlashCrashWatch(trips, settings, clock_ms=lambda: NOW_MS), trips  # type: ignore[arg-type]


def test_the_move_is_the_candles_range_over_its_open() -> None:
    assert candle_move(_candle(10, "100", "106", "95")) == Decimal("0.11")
    assert candle_move(_candle(10, "0", "1", "0")) is None
    assert candle_move(_candle(10, "abc", "1", "0")) is None


async def test_a_candle_ranging_past_the_threshold_trips_it_once() -> None:
    watch, trips = _watch()
    candles = [_candle(15, "100", "101", "99"), _candle(10, "100", "101", "88")]   # a 13 % plunge

    assert await watch.judge("BTCUSDT", "5m", candles)
    assert not await watch.judge("BTCUSDT", "5m", candles)   # the next tick sees the same candles
    [(cause, reason, evidence)] = trips.trips
    assert cause == "flash_crash" and "BTCUSDT moved 13.0% of its open inside one 5m candle" in reason
    assert evidence["low"] == "88" and evidence["move"] == "0.1300"


async def test_calm_candles_long_candles_and_old_candles_do_not_trip_it() -> None:
    watch, trips = _watch()
    assert not await watch.judge("BTCUSDT", "5m", [_candle(10, "100", "105", "96")])          # 9 %
    assert not await watch.judge("ETHUSDT", "4h", [_candle(300, "100", "120", "90", 240)])    # a day's market
    assert not await watch.judge("SOLUSDT", "5m", [_candle(60, "100", "130", "80")])          # before the cool-down
    assert trips.trips == []


async def test_a_zero_threshold_turns_it_off() -> None:
    watch, trips = _watch(BreakerSettings(flash_move=0.0))
    assert not await watch.judge("BTCUSDT", "5m", [_candle(10, "100", "150", "50")])
    assert trips.trips == []
