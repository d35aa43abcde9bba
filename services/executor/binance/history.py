"""Closed trades and today's realised PnL of one account.

Daily PnL (the daily-loss rule), per symbol: the fills the user-data stream
has delivered since it went live (``realizedPnl`` minus USDT commission, like
``userTrades``), plus, for the part of the day before that, one ``userTrades``
read of that symbol (weight 5) kept for the rest of the UTC day. A stream live
since before midnight needs no read at all. Without a live stream the day is
read over REST each time. Nothing reads ``/fapi/v1/income`` (weight 30).

Closed trades are booked from ``userTrades`` and the algo-order history, as
Binance recorded them.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from services.executor.binance.account import PnlBaseline
from services.executor.binance.account_state import STREAM_START_MARGIN_MS
from services.executor.binance.rest import AccountRest
from services.executor.brokers.base import ClosedTradeRecord, PositionSide
from services.executor.binance.records import close_reason, round_trips, trade_pnl

USER_TRADES_WINDOW_MS = 7 * 24 * 3600 * 1000  # userTrades answers at most 7 days per query
OPEN_TIME_SLACK_MS = 1000  # the entry fill may be stamped a moment before the caller's open time
CLOCK_MARGIN_MS = 5000
HISTORY_LIMIT_MS = 183 * 24 * 3600 * 1000  # userTrades keeps about six months


class History:
    def __init__(self, rest: AccountRest) -> None:
        self._rest = rest
        self._shared = rest.shared

    def server_now_ms(self) -> int:
        return int(time.time() * 1000) + int(self._rest.client.server_clock.offset_ms)

    async def closed_trade(self, symbol: str, side: PositionSide, open_time_ms: int) -> ClosedTradeRecord | None:
        """The round trip that opened at ``open_time_ms``; with ``open_time_ms`` 0 (unknown), the latest one."""
        # A fill stamped just now must not be cut off by clock error: end the history a little ahead.
        until = self.server_now_ms() + CLOCK_MARGIN_MS
        known_open = open_time_ms > 0
        # Unknown open time: exactly one userTrades window, the latest.
        since = open_time_ms - OPEN_TIME_SLACK_MS if known_open else until - USER_TRADES_WINDOW_MS + 1
        trades = await self.user_trades(symbol, max(since, until - HISTORY_LIMIT_MS), until)
        trips = round_trips(trades, side)
        if not trips:
            return None
        booked = trips[0] if known_open else trips[-1]
        client = self._rest.client
        algo_orders = await self._rest.read(
            f"algo order history of {symbol}",
            lambda: client.futures_get_all_algo_orders(symbol=symbol, startTime=booked.open_time_ms - OPEN_TIME_SLACK_MS),
        )
        reason = close_reason(booked.closing_order_ids, algo_orders or [], self._shared.own_closes)
        return ClosedTradeRecord(
            symbol=symbol, side=side, entry_price=booked.entry_price, exit_price=booked.exit_price,
            quantity=booked.quantity, realized_pnl=booked.realized_pnl, fees=booked.fees, reason=reason,
            open_time_ms=booked.open_time_ms, close_time_ms=booked.close_time_ms,
        )

    async def user_trades(self, symbol: str, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
        """userTrades between the two times, walking 7-day windows and 1000-row pages."""
        rows: dict[int, dict[str, Any]] = {}
        start = min(since_ms, until_ms)
        client = self._rest.client
        for _ in range(60):  # bounded: 60 pages
            end = min(start + USER_TRADES_WINDOW_MS - 1, until_ms)
            page = await self._rest.read(
                f"trade history of {symbol}",
                lambda: client.futures_account_trades(symbol=symbol, startTime=start, endTime=end, limit=1000),
            )
            page = page or []
            for row in page:
                rows[int(row["id"])] = row
            if len(page) >= 1000:
                start = int(page[-1]["time"])
            elif end >= until_ms:
                break
            else:
                start = end + 1
        return list(rows.values())

    async def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        """Realised PnL net of commissions since ``since_ms`` (see the module docstring). The caller says how
        urgent its REST read is (``weight_governor.at_priority``): the cycle reads it for an entry as the tick's
        own work, for an open position as background work; with no room the caller gets ``ResourceExhausted``
        and the read is tried again at the next tick, so first-contact reads spread over minutes."""
        return await self._realized_pnl_since(symbol, since_ms)

    async def _realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        state = self._shared.live_state()
        seen_from = state.fills_seen_since_ms if state is not None else None
        if state is None or seen_from is None:
            until = self.server_now_ms() + CLOCK_MARGIN_MS
            # A day fits one userTrades window (7 days): one request, never a walk through history.
            rows = await self.user_trades(symbol, max(since_ms, until - USER_TRADES_WINDOW_MS + 1), until)
            return sum((trade_pnl(row) for row in rows if int(row.get("time", 0)) >= since_ms), Decimal(0))
        if seen_from <= since_ms:
            return state.realized_pnl_since(symbol, since_ms)
        return await self._before_stream(symbol, since_ms, seen_from) + state.realized_pnl_since(symbol, seen_from)

    async def _before_stream(self, symbol: str, since_ms: int, until_ms: int) -> Decimal:
        """The symbol's realised PnL from ``since_ms`` up to the stream's first fill: read once per day."""
        key = f"{symbol}@{since_ms}"
        async with self._shared.baseline_lock(symbol):   # one read, whatever the number of bots asking
            known: PnlBaseline | None = self._shared.baselines.get(key)
            if known is not None and known.until_ms >= until_ms:
                return known.pnl
            # The stream's start carries a margin, so it can still be ahead: a read now knows only the fills up to
            # now (less a margin for the clock). Kept as known that far, a fill between now and the stream's start is
            # read again later instead of being counted by neither.
            known_until = min(until_ms, self.server_now_ms() - STREAM_START_MARGIN_MS)
            rows = await self.user_trades(symbol, max(since_ms, until_ms - USER_TRADES_WINDOW_MS), until_ms - 1)
            pnl = sum((trade_pnl(row) for row in rows if since_ms <= int(row.get("time", 0)) < until_ms), Decimal(0))
            self._shared.baselines[key] = PnlBaseline(since_ms, known_until, pnl)
            return pnl
