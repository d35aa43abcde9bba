"""Time one year of 5-minute candles (105,120 steps) through ``run_backtest`` for one bot.

``python -m bench.backtest_year [--preset N] [--out DIR]`` prints the seconds;
``time_backtest_year()`` returns them (the bench suite calls it). The candles
are a deterministic random walk with alternating trend regimes, so the bot
opens, stops out, takes profit and trips safety rules along the way. The
target on the 2-core reference machine is under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time

from services.backtest.candles import History, HistoryCandle
from services.backtest.cli import config_proto
from services.backtest.engine import BacktestParams, filters_for, run_backtest
from services.backtest.report import write_report
from services.cli.bot_config import DEFAULT_CONFIG

FIVE_MINUTES_MS = 300_000
YEAR_OF_5M = 365 * 288
START_MS = 1_735_689_600_000   # 2025-01-01T00:00:00Z
TARGET_SECONDS = 60.0


def synthetic_year(count: int = YEAR_OF_5M, seed: int = 2025) -> History:
    rng = random.Random(seed)
    price = 60_000.0
    candles = []
    for index in range(count):
        drift = 0.00006 * math.sin(index / 2_000)         # trend regimes of about a week
        opened = price
        price = max(1_000.0, price * math.exp(rng.gauss(drift, 0.002)))
        high = max(opened, price) * (1 + abs(rng.gauss(0, 0.0006)))
        low = min(opened, price) * (1 - abs(rng.gauss(0, 0.0006)))
        candles.append(HistoryCandle(START_MS + index * FIVE_MINUTES_MS, f"{opened:.1f}", f"{high:.1f}",
                                     f"{low:.1f}", f"{price:.1f}", f"{rng.uniform(50, 150):.3f}"))
    return History("5m", FIVE_MINUTES_MS, tuple(candles))


def time_backtest_year(preset: int = 1, out_dir: str | None = None) -> float:
    """Seconds for one year of 5-minute steps, report files included."""
    history = synthetic_year()
    params = BacktestParams(preset=preset, symbol="BTCUSDT", config=config_proto(DEFAULT_CONFIG),
                            filters=filters_for("BTCUSDT"), resume_after_losses="next-day")
    started = time.perf_counter()
    result = asyncio.run(run_backtest(params, history))
    with tempfile.TemporaryDirectory() as scratch:
        write_report(result, out_dir or scratch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", type=int, default=1)
    parser.add_argument("--out", help="keep the report files here")
    args = parser.parse_args()
    seconds = time_backtest_year(args.preset, args.out)
    verdict = "OK" if seconds < TARGET_SECONDS else "TOO SLOW"
    print(f"backtest one year of 5m candles, preset {args.preset}: {seconds:.1f} s "
          f"(target < {TARGET_SECONDS:.0f} s) {verdict}")


if __name__ == "__main__":
    main()
