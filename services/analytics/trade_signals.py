"""Closed trades linked to the signal that opened them, from the platform's TradeLogs or a backtest.

TradeLogs: a ``CLOSE_POSITION`` TRADE log carries the trade (``openTime``, ``entryPrice``, ``quantity``,
``realizedPnl``) and, since the gateway stores each entry's signal on the position, ``openingSignal``
(strategy, confidence, the AI's verdict, the stop-loss): such a trade is linked with no other read. For older
logs without it, the same bot's ``OPEN_LONG``/``OPEN_SHORT`` log at that opening carries the stop-loss, and
the ``ANALYSIS`` log written in the same tick (the gateway stamps every log of a bot's tick with the same
``createdAt``) carries the signal: strategy, confidence and the AI's verdict. Trades whose opening cannot be
found (opened by hand, logs expired) are counted as unlinked and left out, never guessed.

Backtests: ``trades.csv`` carries ``strategy``, ``confidence`` and ``risk`` per trade.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pymongo.database import Database

from services.analytics.calibration import SignalTrade

OPEN_ACTIONS = ("OPEN_LONG", "OPEN_SHORT")
# The opening TradeLog is written at the tick; the exchange's fill time can be a little later.
OPEN_MATCH_WINDOW = timedelta(minutes=10)
JOIN_CHUNK = 500   # closed trades joined per round of queries (bounds each query's $or)


@dataclass(frozen=True)
class LinkedTrades:
    trades: list[SignalTrade]
    unlinked: int               # closed trades whose opening signal was not found


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _risk(entry: Decimal, stop: Decimal | None, quantity: Decimal) -> Decimal | None:
    if stop is None:
        return None
    risk = abs(entry - stop) * abs(quantity)
    return risk if risk > 0 else None


def _signal_trade(close_data: Mapping[str, Any], strategy: Any, confidence: Any, verdict: Any,
                  stop_loss: Any) -> SignalTrade | None:
    """The trade of a CLOSE_POSITION log's data with its signal's pieces; None when one is missing or unusable."""
    entry, quantity = _decimal(close_data.get("entryPrice")), _decimal(close_data.get("quantity"))
    pnl = _decimal(close_data.get("realizedPnl"))
    if entry is None or quantity is None or pnl is None or not isinstance(confidence, (int, float)):
        return None
    risk = _risk(entry, _decimal(stop_loss), quantity)
    if risk is None:
        return None
    return SignalTrade(str(strategy or "unknown"), float(confidence), str(verdict) if verdict else None, pnl, risk)


def stored_signal_trade(close: Mapping[str, Any]) -> SignalTrade | None:
    """A closed trade whose TradeLog carries the signal that opened it (``data.openingSignal``, written by the
    gateway since the entry was stored with it); None when it does not or the signal is unusable."""
    data = close.get("data") or {}
    signal = data.get("openingSignal")
    if not isinstance(signal, Mapping):
        return None
    return _signal_trade(data, signal.get("strategy"), signal.get("confidence"), signal.get("aiVerdict"),
                         signal.get("stopLoss"))


def has_stored_signal(close: Mapping[str, Any]) -> bool:
    return isinstance((close.get("data") or {}).get("openingSignal"), Mapping)


def link_trade(close: Mapping[str, Any], opening: Mapping[str, Any] | None,
               analysis: Mapping[str, Any] | None) -> SignalTrade | None:
    """One closed trade, its opening TradeLog (the stop) and that tick's ANALYSIS (the signal); None when any
    piece is missing or unusable."""
    if opening is None or analysis is None:
        return None
    signal_data = analysis.get("data") or {}
    ai = signal_data.get("ai") or {}
    verdict = (ai.get("signal") or {}).get("action") if ai.get("used") else None
    return _signal_trade(close.get("data") or {}, signal_data.get("strategy"),
                         (signal_data.get("signal") or {}).get("confidence"), verdict,
                         (opening.get("data") or {}).get("stopLoss"))


def opening_query(closes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The opening TradeLogs that may belong to these closed trades: same bot, within the fill's lag."""
    windows = []
    for close in closes:
        if has_stored_signal(close):
            continue
        opened = (close.get("data") or {}).get("openTime")
        if isinstance(opened, datetime):
            windows.append({"botInstanceId": close.get("botInstanceId"),
                            "createdAt": {"$gte": opened - OPEN_MATCH_WINDOW, "$lte": opened + OPEN_MATCH_WINDOW}})
    return {"logType": "TRADE", "action": {"$in": list(OPEN_ACTIONS)}, "$or": windows or [{"_id": None}]}


def analysis_query(openings: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ANALYSIS TradeLogs written in the same tick as these openings (same bot, same ``createdAt``)."""
    pairs = [{"botInstanceId": opening.get("botInstanceId"), "createdAt": opening.get("createdAt")}
             for opening in openings]
    return {"logType": "ANALYSIS", "$or": pairs or [{"_id": None}]}


def _moment_key(value: Any) -> Any:
    """createdAt as a comparable key whether the driver returned it aware or naive."""
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


def join_trades(closes: Iterable[Mapping[str, Any]], openings: Iterable[Mapping[str, Any]],
                analyses: Iterable[Mapping[str, Any]], *, strategy: str | None = None) -> LinkedTrades:
    """Each closed trade with the bot's last opening at or near its open time and that tick's signal."""
    openings_by_bot: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for opening in openings:
        openings_by_bot[opening.get("botInstanceId")].append(opening)
    analysis_at = {(entry.get("botInstanceId"), _moment_key(entry.get("createdAt"))): entry for entry in analyses}
    linked: list[SignalTrade] = []
    unlinked = 0
    for close in closes:
        if has_stored_signal(close):
            trade = stored_signal_trade(close)
        else:   # older logs: find the opening and its tick's analysis
            opening = _opening(close, openings_by_bot.get(close.get("botInstanceId"), []))
            analysis = None if opening is None else analysis_at.get(
                (opening.get("botInstanceId"), _moment_key(opening.get("createdAt"))))
            trade = link_trade(close, opening, analysis)
        if trade is None:
            unlinked += 1
        elif strategy is None or trade.strategy == strategy:
            linked.append(trade)
    return LinkedTrades(linked, unlinked)


def _opening(close: Mapping[str, Any], candidates: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    opened = (close.get("data") or {}).get("openTime")
    if not isinstance(opened, datetime):
        return None
    low, high = _moment_key(opened - OPEN_MATCH_WINDOW), _moment_key(opened + OPEN_MATCH_WINDOW)
    near = [entry for entry in candidates if isinstance(entry.get("createdAt"), datetime)
            and low <= _moment_key(entry["createdAt"]) <= high]
    return max(near, key=lambda entry: _moment_key(entry["createdAt"])) if near else None


def from_trade_logs(db: Database[dict[str, Any]], *, since: datetime | None = None,
                    strategy: str | None = None) -> LinkedTrades:
    """Every closed trade in ``tradelogs`` (closed since ``since``), linked to its opening signal: three
    queries per chunk of trades, never one per trade."""
    query: dict[str, Any] = {"logType": "TRADE", "action": "CLOSE_POSITION"}
    if since is not None:
        query["createdAt"] = {"$gte": since}
    closes = list(db.tradelogs.find(query).sort("createdAt", 1))
    linked: list[SignalTrade] = []
    unlinked = 0
    for start in range(0, len(closes), JOIN_CHUNK):
        chunk = closes[start:start + JOIN_CHUNK]
        needs_join = not all(has_stored_signal(close) for close in chunk)
        openings = list(db.tradelogs.find(opening_query(chunk))) if needs_join else []
        analyses = list(db.tradelogs.find(analysis_query(openings))) if openings else []
        part = join_trades(chunk, openings, analyses, strategy=strategy)
        linked += part.trades
        unlinked += part.unlinked
    return LinkedTrades(linked, unlinked)


def from_backtest(directory: Path, *, strategy: str | None = None) -> LinkedTrades:
    """A backtest's ``trades.csv`` (``tradebot backtest`` output)."""
    path = directory / "trades.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give the --out directory of a `tradebot backtest` run")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"strategy", "confidence", "risk"} <= set(rows[0]):
        raise ValueError(f"{path} has no strategy/confidence/risk columns: re-run the backtest with this version")
    return _from_rows(rows, strategy)


def _from_rows(rows: Iterable[Mapping[str, str]], strategy: str | None) -> LinkedTrades:
    linked: list[SignalTrade] = []
    unlinked = 0
    for row in rows:
        pnl, risk = _decimal(row.get("realizedPnl")), _decimal(row.get("risk"))
        try:
            confidence = float(row.get("confidence") or "")
        except ValueError:
            confidence = None
        if pnl is None or risk is None or risk <= 0 or confidence is None:
            unlinked += 1
            continue
        trade = SignalTrade(row.get("strategy") or "unknown", confidence, None, pnl, risk)
        if strategy is None or trade.strategy == strategy:
            linked.append(trade)
    return LinkedTrades(linked, unlinked)
