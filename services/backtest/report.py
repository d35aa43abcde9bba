"""A backtest's results as files: summary.json, trades.csv and equity.png.

Every number is derived from the result alone and written in a fixed order
and format (sorted keys, fixed float rounding, PNG without timestamps), so
the same inputs give byte-identical files.

Definitions (documented in docs/backtesting.md):
- win rate: trades with net PnL > 0 / trades (the gateway's rule);
- profit factor: sum of winning net PnL / |sum of losing net PnL| (null without losses);
- max drawdown: the largest fall of equity from its running peak, in USDT and % of that peak;
- Sharpe: mean / standard deviation (ddof 1) of per-step equity returns, times
  sqrt(steps per year) (365-day year, no risk-free rate);
- exposure: share of steps with an open position.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.backtest.engine import BacktestResult
from services.common.decimals import format_decimal

YEAR_MS = 365 * 86_400_000
TRADE_COLUMNS = ("openTime", "closeTime", "side", "entryPrice", "exitPrice", "quantity", "grossPnl", "fees",
                 "realizedPnl", "reason", "strategy", "confidence", "risk")   # the last three: calibration


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(value: float, digits: int = 6) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


@dataclass(frozen=True)
class Drawdown:
    amount: Decimal
    percent: float
    series: list[float]            # per step, % below the running peak (<= 0)


def drawdown(equity: list[Decimal]) -> Drawdown:
    peak = equity[0] if equity else Decimal(0)
    worst, worst_pct = Decimal(0), 0.0
    series: list[float] = []
    for value in equity:
        peak = max(peak, value)
        fall = peak - value
        pct = float(fall / peak * 100) if peak > 0 else 0.0
        series.append(-pct)
        if fall > worst:
            worst = fall
        worst_pct = max(worst_pct, pct)
    return Drawdown(worst, worst_pct, series)


def sharpe(equity: list[Decimal], step_ms: int) -> float | None:
    returns = [float(b / a - 1) for a, b in zip(equity, equity[1:], strict=False) if a > 0]
    if len(returns) < 2:
        return None
    mean = math.fsum(returns) / len(returns)
    variance = math.fsum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    if variance <= 0:
        return None
    return mean / math.sqrt(variance) * math.sqrt(YEAR_MS / step_ms)


def summary(result: BacktestResult) -> dict[str, Any]:
    params = result.params
    pnls = [Decimal(trade["realizedPnl"]) for trade in result.trades]
    wins = [pnl for pnl in pnls if pnl > 0]
    losses = [pnl for pnl in pnls if pnl <= 0]
    gross_win, gross_loss = sum(wins, Decimal(0)), -sum(losses, Decimal(0))
    total = sum(pnls, Decimal(0))
    fall = drawdown(result.equity)
    steps = len(result.step_times_ms)
    config = params.config
    trips: dict[str, int] = {}
    for trip in result.safety_trips:
        trips[trip.rule] = trips.get(trip.rule, 0) + 1
    return {
        "strategy": result.strategy_name,
        "reproducible": not params.use_ai,
        "reproducibleNote": "AI confirmation was used: a past AI answer cannot be reproduced"
        if params.use_ai else "technical signals only: same inputs give the same report",
        "parameters": {
            "preset": params.preset,
            "symbol": params.symbol,
            "interval": config.interval,
            "stepMinutes": params.step_ms / 60_000,
            "initialBalance": format_decimal(params.initial_balance),
            "takerFee": format_decimal(params.taker_fee),
            "useAi": params.use_ai,
            "resumeAfterLosses": params.resume_after_losses,
            "config": {
                "leverage": config.leverage,
                "stopLossPercent": config.stop_loss_percent,
                "takeProfitPercent": config.take_profit_percent,
                "positionSizePercent": config.position_size_percent,
                "maxDailyLoss": config.max_daily_loss,
                "confidenceThreshold": config.confidence_threshold,
                "maxConsecutiveLosses": config.max_consecutive_losses,
            },
            "filters": {
                "tickSize": params.filters.tick_size,
                "stepSize": params.filters.market_step_size or params.filters.step_size,
                "minQty": params.filters.min_qty,
                "minNotional": params.filters.min_notional,
            },
        },
        "candles": {"first": iso(result.first_candle_ms), "last": iso(result.last_candle_ms)},
        "period": {
            "firstStep": iso(result.step_times_ms[0]) if steps else None,
            "lastStep": iso(result.step_times_ms[-1]) if steps else None,
            "steps": steps,
        },
        "trades": len(pnls),
        "winningTrades": len(wins),
        "losingTrades": len(losses),
        "winRatePercent": _round(len(wins) / len(pnls) * 100, 2) if pnls else 0.0,
        "totalPnl": format_decimal(total),
        "averagePnl": format_decimal((total / len(pnls)).quantize(Decimal("0.00000001"))) if pnls else "0",
        "totalFees": format_decimal(sum((Decimal(trade["fees"]) for trade in result.trades), Decimal(0))),
        "profitFactor": _round(float(gross_win / gross_loss), 4) if gross_loss > 0 else None,
        "finalEquity": format_decimal(result.equity[-1]) if result.equity else format_decimal(params.initial_balance),
        "returnPercent": _round(float((result.equity[-1] / params.initial_balance - 1) * 100), 4)
        if result.equity else 0.0,
        "maxDrawdown": format_decimal(fall.amount),
        "maxDrawdownPercent": _round(fall.percent, 4),
        "sharpe": _round(s, 4) if (s := sharpe(result.equity, params.step_ms)) is not None else None,
        "exposurePercent": _round(sum(result.in_position) / steps * 100, 4) if steps else 0.0,
        "pausedPercent": _round(sum(result.paused) / steps * 100, 4) if steps else 0.0,
        "safetyTrips": {
            "total": len(result.safety_trips),
            "byRule": dict(sorted(trips.items())),
            "events": [
                {"time": iso(trip.time_ms), "rule": trip.rule, "message": trip.message,
                 "positionClosed": trip.position_closed, "paused": trip.paused}
                for trip in result.safety_trips
            ],
        },
        "aiCalls": result.ai_calls,
        "openPositionAtEnd": None if (open_ := result.open_position) is None else {
            "side": open_.side, "entryPrice": format_decimal(open_.entry_price),
            "quantity": format_decimal(open_.quantity), "markPrice": format_decimal(open_.mark_price),
            "unrealizedPnl": format_decimal(open_.unrealized_pnl),
        },
    }


def trades_csv(result: BacktestResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRADE_COLUMNS)
    for trade in result.trades:
        writer.writerow([
            iso(int(trade["openTimeMs"])), iso(int(trade["closeTimeMs"])), trade["side"], trade["entryPrice"],
            trade["exitPrice"], trade["quantity"], trade["grossPnl"], trade["fees"], trade["realizedPnl"],
            trade["reason"], result.strategy_name, opening_confidence(result, int(trade["openTimeMs"])),
            format_decimal(entry_risk(result, trade)),
        ])
    return buffer.getvalue()


def opening_confidence(result: BacktestResult, open_time_ms: int) -> str:
    """The confidence of the entry signal that opened a trade: the last BUY/SELL decision at or before it."""
    confidence = ""
    for moment, action, value in result.decisions:
        if moment > open_time_ms:
            break
        if action in ("BUY", "SELL"):
            confidence = f"{value:g}"
    return confidence


def entry_risk(result: BacktestResult, trade: dict[str, Any]) -> Decimal:
    """What the stop-loss put at risk at entry: the stop's distance (the bot's stop-loss %) times the quantity."""
    percent = Decimal(str(result.params.config.stop_loss_percent))
    return Decimal(trade["entryPrice"]) * percent / 100 * Decimal(trade["quantity"])


def equity_png(result: BacktestResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [(ms - result.step_times_ms[0]) / 86_400_000 for ms in result.step_times_ms] if result.step_times_ms else []
    equity = [float(value) for value in result.equity]
    fall = drawdown(result.equity).series
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    try:
        params = result.params
        top.plot(days, equity, color="#1f77b4", linewidth=1.0)
        top.set_title(f"{result.strategy_name} on {params.symbol} {params.config.interval}: equity (USDT)")
        top.set_ylabel("equity (USDT)")
        top.grid(True, alpha=0.3)
        bottom.fill_between(days, fall, 0, color="#d62728", alpha=0.4, linewidth=0)
        bottom.set_ylabel("drawdown %")
        bottom.set_xlabel(f"days since {iso(result.step_times_ms[0]) if result.step_times_ms else '-'}")
        bottom.grid(True, alpha=0.3)
        figure.tight_layout()
        # No Software/date chunks: the same result gives the same bytes.
        figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(figure)


def write_report(result: BacktestResult, out_dir: str | Path) -> dict[str, Any]:
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    data = summary(result)
    (directory / "summary.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (directory / "trades.csv").write_text(trades_csv(result))
    equity_png(result, directory / "equity.png")
    return data
