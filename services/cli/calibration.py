"""``tradebot calibration``: does a strategy's confidence predict its trades? Per strategy and confidence
bucket: trades, win rate (95 % Wilson interval), mean return in R and its 90 % lower bound, and a suggested
threshold. From the platform's TradeLogs (MongoDB), or a backtest's output with ``--from-backtest DIR``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.analytics.calibration import StrategyReport, calibrate, reliability_points, report_document
from services.analytics.trade_signals import LinkedTrades, from_backtest, from_trade_logs
from services.cli.context import database
from services.cli.errors import USAGE, CliError
from services.cli.table import render_table
from services.common.errors import InvalidArgument
from services.strategy.strategies import strategy_for


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "calibration", help="win rate and expected value by confidence bucket; a suggested threshold per strategy")
    parser.add_argument("--strategy", type=int, help="only this strategy (1-4, the presets' ids)")
    parser.add_argument("--since", help="only trades closed on or after this date (YYYY-MM-DD, UTC)")
    parser.add_argument("--from-backtest", dest="backtest", type=Path, metavar="DIR",
                        help="read a backtest's trades (the --out directory of `tradebot backtest`)")
    parser.add_argument("--plot", type=Path, metavar="FILE", help="also write the reliability diagram as a PNG")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    strategy = _strategy_name(args.strategy)
    since = _since(args.since)
    if args.backtest is not None:
        try:
            linked = from_backtest(args.backtest, strategy=strategy)
        except (FileNotFoundError, ValueError) as error:
            raise CliError(str(error), USAGE) from None
    else:
        with database() as db:
            linked = from_trade_logs(db, since=since, strategy=strategy)
    reports = calibrate(linked.trades)
    if args.plot is not None:
        reliability_png(reports, args.plot)
    print(json.dumps(as_json(reports, linked), indent=2) if args.json else as_text(reports, linked))
    return 0


def _strategy_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return strategy_for(number).name
    except InvalidArgument:
        raise CliError(f"--strategy must be a strategy id (1-4), got {number}", USAGE) from None


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise CliError(f"--since must be a date like 2026-11-30, got {text!r}", USAGE) from None


def as_text(reports: list[StrategyReport], linked: LinkedTrades) -> str:
    if not reports:
        return f"no closed trades linked to their signals ({linked.unlinked} unlinked)"
    blocks = []
    for report in reports:
        rows = [[bucket.label, str(bucket.trades), f"{bucket.win_rate:.0%}",
                 f"{bucket.win_rate_low:.0%}-{bucket.win_rate_high:.0%}", f"{bucket.mean_r:+.2f}",
                 "-" if bucket.mean_r_lower_90 is None else f"{bucket.mean_r_lower_90:+.2f}",
                 "yes" if bucket.earns else ("too few" if not bucket.enough else "no")]
                for bucket in report.buckets]
        table = render_table(["CONFIDENCE %", "TRADES", "WIN RATE", "95 % WILSON", "EV (R)", "EV 90 % LOW", "EARNS"],
                             rows)
        blocks.append(f"{report.strategy}\n{table}\n{report.verdict}")
    footer = f"\n({linked.unlinked} closed trades not linked to an opening signal, left out)" if linked.unlinked else ""
    return "\n\n".join(blocks) + footer


def as_json(reports: list[StrategyReport], linked: LinkedTrades) -> dict[str, Any]:
    return {"strategies": [report_document(report) for report in reports], "unlinkedTrades": linked.unlinked}


def reliability_png(reports: list[StrategyReport], path: Path) -> None:
    """The reliability diagram: stated confidence against observed win rate (Wilson intervals as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 6))
    try:
        axes.plot([0.5, 1.0], [0.5, 1.0], linestyle=":", color="grey", label="calibrated")
        for report in reports:
            points = reliability_points(report)
            if not points:
                continue
            axes.errorbar([p["confidence"] for p in points], [p["winRate"] for p in points],
                          yerr=[[p["winRate"] - p["low"] for p in points], [p["high"] - p["winRate"] for p in points]],
                          marker="o", capsize=3, label=report.strategy)
        axes.set_xlim(0.45, 1.0)
        axes.set_ylim(0.0, 1.0)
        axes.set_xlabel("signal confidence (bucket middle)")
        axes.set_ylabel("observed win rate (95 % Wilson interval)")
        axes.set_title("Calibration: confidence against outcome")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="lower right", fontsize="small")
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(figure)
