"""``python -m bench [--bots N ...]``: one tick per population and setting through the real processes.

For each population it measures the tick with the project's settings and
with the seed-style baseline (configuration knobs only, see
``bench.run.BASELINE_ENV``). A baseline runs one bot after another and
would take tens of minutes at 10,000 bots, so above ``--baseline-cap`` bots
it is measured on a random sample of that many bots of the same
population and scaled linearly (marked ``estimated`` in the JSON and the
table); ``--baseline-cap 0`` measures every baseline in full.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.population import BotPlan, plan, sample
from bench.report import (
    JSON_PATH,
    PLOT_PATH,
    RESULTS_DIR,
    add_speedups,
    check_targets,
    checks_text,
    plot,
    table,
    write_json,
)
from bench.run import RunOptions, measure_tick
from services.market.settings import MarketSettings

DEFAULT_POPULATIONS = (100, 1000, 10000)
SCALED_FIELDS = ("kline_requests", "binance_requests", "ai_calls", "ai_tokens", "weight_used")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tick benchmark: project settings vs seed-style baseline")
    parser.add_argument("--bots", type=int, nargs="*", help="populations (default 100 1000 10000)")
    parser.add_argument("--baseline-cap", type=int, default=100,
                        help="measure larger baselines on a sample of this many bots and scale (0: no cap)")
    parser.add_argument("--symbols", type=int, default=50, help="symbols the bots spread over (5..50)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json and the plot go")
    parser.add_argument("--append", action="store_true",
                        help="keep the other populations' rows already in the output's latest.json")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: recompute targets, table and plot from the output's latest.json")
    parser.add_argument("--no-baseline", action="store_true", help="project settings only")
    parser.add_argument("--binance-latency-ms", type=float, default=50.0)
    parser.add_argument("--openai-latency-ms", type=int, default=800)
    parser.add_argument("--no-backtest", action="store_true", help="skip the one-year backtest timing")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--echo", action="store_true", help="print the services' log lines")
    parser.add_argument("--live", action="store_true",
                        help="live accounts (5 bots each) against the limit-enforcing exchange, several ticks")
    parser.add_argument("--ticks", type=int, default=3, help="with --live: consecutive ticks per population")
    args = parser.parse_args(argv)
    if args.live:
        return _live(args)
    populations = args.bots or list(DEFAULT_POPULATIONS)
    options = RunOptions(args.binance_latency_ms, args.openai_latency_ms, echo=args.echo)

    json_path = args.out / JSON_PATH.name
    if args.render:
        return _render(json_path, args.no_plot)
    previous = _previous_document(json_path) if args.append else {}
    kept = [row for row in previous.get("rows", []) if row.get("bots") not in set(populations)]
    rows: list[dict[str, Any]] = []
    for bots in populations:
        population = plan(bots, args.symbols)
        print(f"== {bots} bots: project settings", flush=True)
        rows.append(measure_tick(population, "project", options))
        print(f"   tick {rows[-1]['tick_seconds']} s", flush=True)
        write_json({"partial": True, "rows": kept + rows}, json_path)
        if args.no_baseline:
            continue
        capped = args.baseline_cap and bots > args.baseline_cap
        measured = sample(population, args.baseline_cap) if capped else population
        print(f"== {bots} bots: baseline" + (f" (sample of {len(measured)}, scaled)" if capped else ""), flush=True)
        row = measure_tick(measured, "baseline", options)
        if capped:
            row = _scaled(row, population)
        rows.append(row)
        print(f"   tick {row['tick_seconds']} s", flush=True)
        write_json({"partial": True, "rows": kept + rows}, json_path)  # a long run keeps what it measured
    rows = sorted(kept + rows, key=lambda row: (row["bots"], row["setting"] != "project"))
    add_speedups(rows)
    weight_budget = MarketSettings().weight_budget_1m
    checks = check_targets(rows, weight_budget)
    document: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {"binance_latency_ms": args.binance_latency_ms, "openai_latency_ms": args.openai_latency_ms,
                    "baseline_cap": args.baseline_cap, "symbols": args.symbols, "weight_budget_1m": weight_budget},  # fmt: skip
        "rows": rows,
        "targets": checks,
    }
    if args.no_backtest and "backtest_year" in previous:
        document["backtest_year"] = previous["backtest_year"]
    if not args.no_backtest:
        from bench.backtest_year import TARGET_SECONDS, time_backtest_year

        print("== one-year backtest (105,120 five-minute steps)", flush=True)
        seconds = time_backtest_year()
        document["backtest_year"] = {"seconds": round(seconds, 2), "target_seconds": TARGET_SECONDS,
                                     "passed": seconds < TARGET_SECONDS}  # fmt: skip
    print()
    print(table(rows))
    print()
    print(checks_text(checks))
    if "backtest_year" in document:
        backtest = document["backtest_year"]
        print(f"[{'PASS' if backtest['passed'] else 'MISS'}] one-year backtest: {backtest['seconds']} s "
              f"(required < {backtest['target_seconds']})")  # fmt: skip
    print(f"\nJSON: {write_json(document, json_path)}")
    if not args.no_plot:
        print(f"plot: {plot(rows, args.out / PLOT_PATH.name)}")
    return 0


def _live(args: argparse.Namespace) -> int:
    """``make bench LIVE=1 [BOTS=N]``: rows in live.json (other populations' rows kept), details, plot."""
    from bench import live_report
    from bench.live import LiveOptions, run_live

    populations = args.bots or [1000, 10000]
    options = LiveOptions(ticks=args.ticks, binance_latency_ms=min(args.binance_latency_ms, 20.0),
                          openai_latency_ms=args.openai_latency_ms, echo=args.echo)
    json_path = args.out / live_report.LIVE_JSON.name
    details_path = args.out / live_report.LIVE_DETAILS_JSON.name
    rows, details = live_report.load(json_path), live_report.load(details_path)
    for bots in populations:
        population = plan(bots, args.symbols)
        print(f"== {bots} live bots on {len({bot.account for bot in population})} accounts, {args.ticks} ticks",
              flush=True)
        new_rows, new_details = run_live(population, options)
        rows, details = live_report.merge(rows, new_rows), live_report.merge(details, new_details)
        live_report.write(rows, json_path)
        live_report.write(details, details_path)
    print()
    print(live_report.checks_text([row for row in rows if row["bots"] in populations]))
    print(f"\nJSON: {json_path}")
    if not args.no_plot:
        print(f"plot: {live_report.plot(rows, details, args.out / live_report.LIVE_PLOT.name)}")
    return 0 if all(passed for _, passed in live_report.checks([r for r in rows if r["bots"] in populations])) else 1


def _render(json_path: Path, no_plot: bool) -> int:
    document = json.loads(json_path.read_text(encoding="utf-8"))
    rows = sorted(document["rows"], key=lambda row: (row["bots"], row["setting"] != "project"))
    add_speedups(rows)
    document["rows"] = rows
    document["targets"] = check_targets(rows, document["options"]["weight_budget_1m"])
    print(table(rows))
    print()
    print(checks_text(document["targets"]))
    write_json(document, json_path)
    if not no_plot:
        print(f"plot: {plot(rows, json_path.parent / PLOT_PATH.name)}")
    return 0


def _previous_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}



def _scaled(row: dict[str, Any], population: list[BotPlan]) -> dict[str, Any]:
    """A baseline sample's figures scaled to the whole population (it runs bots one after another)."""
    population_size = len(population)
    factor = population_size / row["bots"]
    scaled = dict(row)
    scaled.update(
        bots=population_size,
        estimated=True,
        sample_bots=row["bots"],
        sample_tick_seconds=row["tick_seconds"],
        tick_seconds=round(row["tick_seconds"] * factor, 1),
        db_seconds=round(row["db_seconds"] * factor, 2),
        bots_per_second=row["bots_per_second"],
    )
    for name in (*SCALED_FIELDS, "buy_sell_analyses"):
        if row.get(name) is not None:
            scaled[name] = round(row[name] * factor)
    # The population's own distinct counts, not the sample's.
    scaled["distinct_symbol_intervals"] = len({(bot.symbol, bot.interval) for bot in population})
    scaled["distinct_strategy_symbol_intervals"] = len({(bot.strategy, bot.symbol, bot.interval) for bot in population})
    scaled["symbols"] = len({bot.symbol for bot in population})
    scaled["accounts"] = len({bot.account for bot in population})
    scaled["bots_with_positions"] = sum(bot.with_position for bot in population)
    return scaled


def machine() -> dict[str, Any]:
    import os

    import psutil

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "ram_gb": round(psutil.virtual_memory().total / 1_073_741_824, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


if __name__ == "__main__":
    raise SystemExit(main())
