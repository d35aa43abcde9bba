"""A deterministic simulated futures feed for offline runs, demos and benchmarks.

The price of a symbol is a pure function of time: a multi-scale value-noise
walk (octaves from one minute to about a month and a half, each linear
between hashed knots, amplitude growing with the square root of its scale
like a Brownian path) around the symbol's reference price. Long octaves give
trends up and down and flat ranges, short ones the candle-to-candle noise,
so indicator strategies see both BUY and SELL conditions. Because every value
comes from a hash of (symbol, octave, knot), a candle is identical whenever
and wherever it is computed: caches, replicas and intervals agree.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from services.common.errors import InvalidArgument
from services.common.intervals import (
    FIXED_INTERVAL_MS,
    close_time_of,
    open_time_containing,
    previous_open_time,
)
from services.market.sources.base import Bar, PriceQuote, TradingRules, UpstreamStats
from services.market.sources.universe import SIMULATED_UNIVERSE, SimulatedSymbol

_MINUTE_MS = 60_000
_OCTAVE_SCALES_MINUTES = np.array([4**k for k in range(9)], dtype=np.float64)  # 1 min .. ~45 days
_SIGMA_PER_SQRT_MINUTE = 0.0006  # BTC: ~3 % daily moves, ~10 % monthly swings
# Mid octaves (about 1 h to 3 days) are boosted: they are the trends and ranges strategies trade.
_OCTAVE_BOOST = np.array([1.0, 1.0, 1.2, 1.8, 2.2, 1.8, 1.2, 1.0, 0.8])
_OCTAVE_AMPLITUDES = _SIGMA_PER_SQRT_MINUTE * np.sqrt(_OCTAVE_SCALES_MINUTES) * _OCTAVE_BOOST
_OCTAVE_SCALES_MS = (_OCTAVE_SCALES_MINUTES * _MINUTE_MS).astype(np.int64)
_INTERIOR_SAMPLES = np.array([0.2, 0.4, 0.6, 0.8])  # where a candle's high/low are looked for

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = values + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _unit(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """Hash outputs to floats uniform in [-1, 1)."""
    return (values >> np.uint64(11)).astype(np.float64) * (2.0 / 2**53) - 1.0


def _symbol_seed(symbol: str) -> int:
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "big")


class SimulatedPricePath:
    """log(price) of one symbol as a pure function of epoch milliseconds."""

    def __init__(self, spec: SimulatedSymbol) -> None:
        self.spec = spec
        seed = _symbol_seed(spec.symbol)
        self._octave_seeds = _splitmix64(np.arange(len(_OCTAVE_SCALES_MS), dtype=np.uint64) + np.uint64(seed))
        self._wick_seed = np.uint64(_splitmix64(np.array([seed ^ 0x5A5A5A5A], dtype=np.uint64))[0])
        self._log_reference = float(np.log(spec.reference_price))
        self._amplitudes = _OCTAVE_AMPLITUDES * spec.volatility

    def prices(self, times_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        log_price = np.full(times_ms.shape, self._log_reference)
        for scale, amplitude, octave_seed in zip(
            _OCTAVE_SCALES_MS, self._amplitudes, self._octave_seeds, strict=True
        ):
            knot = times_ms // scale
            fraction = (times_ms - knot * scale) / scale
            base = knot.astype(np.uint64) * _GOLDEN + octave_seed
            left = _unit(_splitmix64(base))
            right = _unit(_splitmix64(base + _GOLDEN))
            log_price += amplitude * (left + (right - left) * fraction)
        return np.exp(log_price)

    def hashed_unit(self, times_ms: npt.NDArray[np.int64], salt: int) -> npt.NDArray[np.float64]:
        """A per-(time, salt) pseudo-random value in [0, 1)."""
        keys = times_ms.astype(np.uint64) * _MIX1 + self._wick_seed + np.uint64(salt)
        return (_unit(_splitmix64(keys)) + 1.0) / 2.0


class SimulatedMarketSource:
    """Candles, prices and filters for the simulated universe. Never fails upstream."""

    name = "simulated"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._paths: dict[str, SimulatedPricePath] = {}
        self._requests = 0

    def _path(self, symbol: str) -> SimulatedPricePath:
        path = self._paths.get(symbol)
        if path is None:
            spec = SIMULATED_UNIVERSE.get(symbol)
            if spec is None:
                raise InvalidArgument(f"unknown symbol {symbol!r}: not in the simulated universe")
            path = self._paths[symbol] = SimulatedPricePath(spec)
        return path

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def ensure_known_symbol(self, symbol: str, deadline: float | None) -> None:
        self._path(symbol)

    async def trading_rules(self, symbol: str, deadline: float | None) -> TradingRules:
        return self._path(symbol).spec.rules

    async def fetch_price(self, symbol: str, deadline: float | None) -> PriceQuote:
        path = self._path(symbol)
        now = self._now_ms()
        price = path.prices(np.array([now], dtype=np.int64))[0]
        tick = path.spec.rules.tick_size
        return PriceQuote(symbol, Decimal(max(1, round(price / float(tick)))) * tick, now)

    async def fetch_bars(self, symbol: str, interval: str, count: int, deadline: float | None) -> list[Bar]:
        self._requests += 1
        return self.bars(symbol, interval, count, self._now_ms())

    def bars(self, symbol: str, interval: str, count: int, now_ms: int) -> list[Bar]:
        """The ``count`` candles up to the one containing ``now_ms``, oldest first."""
        path = self._path(symbol)
        if count <= 0:
            return []
        opens = _open_times(interval, count, now_ms)
        closes = np.array([close_time_of(interval, int(t)) for t in opens[-1:]], dtype=np.int64)
        ends = np.append(opens[1:], closes[-1] + 1)  # each candle's end = next open
        ends = np.minimum(ends, now_ms)  # the in-progress candle ends now
        lengths = ends - opens
        samples = opens[:, None] + (lengths[:, None] * _INTERIOR_SAMPLES[None, :]).astype(np.int64)
        times = np.concatenate([opens[:, None], samples, ends[:, None]], axis=1)
        prices = path.prices(times.ravel()).reshape(times.shape)
        wick = self._wick_scale(path, interval)
        upper = 1.0 + wick * path.hashed_unit(opens, 1)
        lower = 1.0 - wick * path.hashed_unit(opens, 2)
        tick = float(path.spec.rules.tick_size)
        open_ticks = np.maximum(np.rint(prices[:, 0] / tick), 1).astype(np.int64)
        close_ticks = np.maximum(np.rint(prices[:, -1] / tick), 1).astype(np.int64)
        high_ticks = np.maximum(np.rint(prices.max(axis=1) * upper / tick), np.maximum(open_ticks, close_ticks))
        low_ticks = np.minimum(np.rint(prices.min(axis=1) * lower / tick), np.minimum(open_ticks, close_ticks))
        low_ticks = np.maximum(low_ticks, 1)
        volumes = self._volumes(path, interval, opens, prices, lengths)
        return self._to_bars(path.spec, interval, opens, open_ticks, high_ticks, low_ticks, close_ticks, volumes)

    @staticmethod
    def _wick_scale(path: SimulatedPricePath, interval: str) -> float:
        minutes = FIXED_INTERVAL_MS.get(interval, 30 * 24 * 60 * _MINUTE_MS) / _MINUTE_MS
        return 0.3 * _SIGMA_PER_SQRT_MINUTE * path.spec.volatility * float(np.sqrt(minutes))

    @staticmethod
    def _volumes(
        path: SimulatedPricePath,
        interval: str,
        opens: npt.NDArray[np.int64],
        prices: npt.NDArray[np.float64],
        lengths: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float64]:
        per_ms_usd = path.spec.daily_volume_usd / (24 * 60 * _MINUTE_MS)
        move = np.abs(np.log(prices[:, -1] / prices[:, 0]))
        typical_move = 3.0 * SimulatedMarketSource._wick_scale(path, interval)
        activity = (0.5 + path.hashed_unit(opens, 3)) * (1.0 + 2.0 * np.minimum(move / typical_move, 1.5))
        return per_ms_usd * lengths * activity / prices[:, -1]

    @staticmethod
    def _to_bars(
        spec: SimulatedSymbol,
        interval: str,
        opens: npt.NDArray[np.int64],
        open_ticks: npt.NDArray[np.int64],
        high_ticks: npt.NDArray[np.float64],
        low_ticks: npt.NDArray[np.float64],
        close_ticks: npt.NDArray[np.int64],
        volumes: npt.NDArray[np.float64],
    ) -> list[Bar]:
        tick = spec.rules.tick_size
        step = spec.rules.step_size
        step_float = float(step)
        bars: list[Bar] = []
        for index, open_time in enumerate(opens.tolist()):
            bars.append(
                Bar(
                    open_time_ms=open_time,
                    close_time_ms=close_time_of(interval, open_time),
                    open=int(open_ticks[index]) * tick,
                    high=int(high_ticks[index]) * tick,
                    low=int(low_ticks[index]) * tick,
                    close=int(close_ticks[index]) * tick,
                    volume=round(float(volumes[index]) / step_float) * step,
                )
            )
        return bars

    def stats(self) -> UpstreamStats:
        return UpstreamStats(upstream_requests=self._requests)

    async def close(self) -> None:
        return None


def _open_times(interval: str, count: int, now_ms: int) -> npt.NDArray[np.int64]:
    latest = open_time_containing(interval, now_ms)
    length = FIXED_INTERVAL_MS.get(interval)
    if length is not None:  # fixed length (weeks included: ``latest`` is already Monday-aligned)
        return latest - length * np.arange(count - 1, -1, -1, dtype=np.int64)
    opens = [latest]
    while len(opens) < count:
        opens.append(previous_open_time(interval, opens[-1]))
    return np.array(opens[::-1], dtype=np.int64)

