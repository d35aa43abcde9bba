"""``tradebot backtest``: parse the command line, load candles, run, write the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from typing import TYPE_CHECKING

from tradebot.v1 import common_pb2, executor_pb2

from services.backtest.params import DEFAULT_INITIAL_BALANCE, DEFAULT_TAKER_FEE, BacktestParams, filters_for
from services.cli.bot_config import INTERVALS, build_config, parse_config_json, validate_preset, validate_symbol
from services.cli.errors import FAILURE, USAGE, CliError
from services.common.errors import InvalidArgument, TradebotError

if TYPE_CHECKING:
    from services.backtest.candles import History

# The engine (pandas, ta, the executor) is imported only when a backtest runs, so every other
# `tradebot` command starts as fast as before.
_STEP = re.compile(r"^(\d+)([mhd])$")
_STEP_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_FILTER_KEYS = {"tickSize": "tick_size", "stepSize": "step_size", "minQty": "min_qty", "maxQty": "max_qty",
                "minNotional": "min_notional"}


def add_backtest_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "backtest", help="replay candle history through a bot's strategy, executor cycle and safety rules",
        description="Writes OUT/summary.json, OUT/trades.csv and OUT/equity.png. Candles from --csv (Binance "
        "kline files, repeatable) or --binance (fetched through BINANCE_FUTURES_URL with --start/--end).")
    parser.add_argument("--preset", required=True, type=int, help="1 Bitcoin Pro, 2 Safe Trader, 3 Trend Rider, "
                        "4 Range Scalper")
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    parser.add_argument("--interval", default="5m", choices=[i for i in INTERVALS if i != "1M"],
                        help="candle interval (default 5m)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", action="append", metavar="FILE", help="Binance kline CSV (repeat for several months)")
    source.add_argument("--binance", action="store_true", help="fetch the candles from Binance (needs --start, --end)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the report files")
    parser.add_argument("--config", help='bot config JSON, as for "bot create", e.g. \'{"leverage": 5}\'')
    parser.add_argument("--step", default="5m", help="time between cycles, the cron cadence (default 5m)")
    parser.add_argument("--start", help="first step at or after this UTC time (YYYY-MM-DD[THH:MM] or epoch ms)")
    parser.add_argument("--end", help="last step at or before this UTC time")
    parser.add_argument("--fee-taker", default=str(DEFAULT_TAKER_FEE),
                        help="taker fee rate for every fill (default 0.0005, Binance's regular USDⓈ-M taker fee)")
    parser.add_argument("--balance", default=str(DEFAULT_INITIAL_BALANCE), help="initial USDT balance (default 10000)")
    parser.add_argument("--filters", help="exchange filters JSON {tickSize, stepSize, minQty, minNotional[, maxQty]} "
                        "(default: the simulated universe's for the symbol)")
    parser.add_argument("--resume-after-losses", choices=("never", "next-day"), default="never",
                        help="after a consecutive-losses pause: stay paused (default) or resume the next UTC day "
                        "with the streak reset")
    parser.add_argument("--ai", action="store_true", help="ask the AI to confirm signals (OPENAI_* settings); the "
                        "report is then marked not reproducible")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=backtest)


def parse_time(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{what} must be YYYY-MM-DD, YYYY-MM-DDTHH:MM or epoch milliseconds, got {text!r}",
                       USAGE) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_step(text: str) -> int:
    match = _STEP.match(text)
    if not match or int(match.group(1)) <= 0:
        raise CliError(f"--step must look like 5m, 15m, 1h or 1d, got {text!r}", USAGE)
    return int(match.group(1)) * _STEP_UNIT_MS[match.group(2)]


def parse_rate(text: str, what: str, *, positive: bool = False) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CliError(f"{what} must be a number, got {text!r}", USAGE) from None
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise CliError(f"{what} must be {'positive' if positive else 'zero or positive'}, got {text!r}", USAGE)
    return value


def config_proto(config: dict[str, Any]) -> executor_pb2.BotConfig:
    """The same BotConfig the gateway sends for a bot with this config."""
    return executor_pb2.BotConfig(
        leverage=int(config["leverage"]),
        stop_loss_percent=str(config["stopLossPercent"]),
        take_profit_percent=str(config["takeProfitPercent"]),
        position_size_percent=str(config["positionSizePercent"]),
        max_daily_loss=str(config["maxDailyLoss"]),
        confidence_threshold=float(config["confidenceThreshold"]),
        max_consecutive_losses=int(config["maxConsecutiveLosses"]),
        max_position_notional="",
        interval=str(config["interval"]),
        margin_type="ISOLATED",
    )


def filters_proto(symbol: str, text: str | None) -> common_pb2.SymbolFilters:
    if not text:
        return filters_for(symbol)
    try:
        given = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"--filters is not valid JSON: {error.msg}", USAGE) from None
    if not isinstance(given, dict) or set(given) - set(_FILTER_KEYS) or not {"tickSize", "stepSize"} <= set(given):
        raise CliError(f"--filters must be a JSON object with tickSize and stepSize (and optionally "
                       f"{', '.join(k for k in _FILTER_KEYS if k not in ('tickSize', 'stepSize'))})", USAGE)
    filters = common_pb2.SymbolFilters(symbol=symbol)
    for key, value in given.items():
        setattr(filters, _FILTER_KEYS[key], str(parse_rate(str(value), f"--filters {key}")))
    return filters


async def _history(args: argparse.Namespace, start_ms: int | None, end_ms: int | None) -> History:
    from services.backtest.candles import INTERVAL_MS, load_csv, merge

    if args.csv:
        return merge([load_csv(path, args.interval) for path in args.csv])
    if start_ms is None or end_ms is None:
        raise CliError("--binance needs --start and --end", USAGE)
    from services.backtest.binance_history import fetch_history
    from services.market.settings import MarketSettings
    from services.market.sources.binance import BinanceMarketSource

    source = BinanceMarketSource.from_settings(MarketSettings.from_env())
    try:
        warm_up = 300 * INTERVAL_MS[args.interval]   # the strategy's 200-candle minimum, with room
        return await fetch_history(source, args.symbol, args.interval, start_ms - warm_up, end_ms)
    finally:
        await source.close()


def backtest(args: argparse.Namespace) -> int:
    from services.backtest.engine import run_backtest
    from services.backtest.progress import ProgressBar
    from services.backtest.report import write_report

    preset = validate_preset(args.preset)
    symbol = validate_symbol(args.symbol)
    overrides = parse_config_json(args.config)
    overrides["interval"] = args.interval
    config = build_config(overrides)
    start_ms, end_ms = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    try:
        params = BacktestParams(
            preset=preset, symbol=symbol, config=config_proto(config), filters=filters_proto(symbol, args.filters),
            step_ms=parse_step(args.step), start_ms=start_ms, end_ms=end_ms,
            taker_fee=parse_rate(args.fee_taker, "--fee-taker"),
            initial_balance=parse_rate(args.balance, "--balance", positive=True),
            use_ai=args.ai, resume_after_losses=args.resume_after_losses,
        )

        async def run() -> dict[str, Any]:
            history = await _history(args, start_ms, end_ms)
            progress = None if args.quiet else ProgressBar(f"{symbol} {args.interval} preset {preset}")
            return write_report(await run_backtest(params, history, progress), args.out)

        summary = asyncio.run(run())
    except InvalidArgument as error:
        raise CliError(error.message, USAGE) from None
    except TradebotError as error:
        raise CliError(error.message, FAILURE) from None
    print(f"{summary['strategy']} on {symbol} {args.interval}: {summary['trades']} trades, win rate "
          f"{summary['winRatePercent']}%, total PnL {summary['totalPnl']} USDT, max drawdown "
          f"{summary['maxDrawdownPercent']}%, safety trips {summary['safetyTrips']['total']}"
          f"{'' if summary['reproducible'] else ' (AI used: not reproducible)'}")
    print(f"report: {args.out}/summary.json, {args.out}/trades.csv, {args.out}/equity.png")
    return 0
