"""One account's balances, positions, conditional orders and fills, kept from its user-data stream.

Binance pushes every change of a USDⓈ-M account on the user-data stream:
``ACCOUNT_UPDATE`` (wallet balances and the positions that changed),
``ORDER_TRADE_UPDATE`` (every order state change; each ``x == "TRADE"`` is a
fill with its realised profit and commission), ``ALGO_UPDATE`` (conditional
orders: stops and targets) and ``ACCOUNT_CONFIG_UPDATE`` (leverage). The state
is trustworthy (``live``) only while the stream is live and a REST snapshot
has been loaded since the last gap: a gap (disconnect, expired key) may have
lost events, so reads go back to REST until the next reconcile.

Snapshot and stream meet without a hole: ``begin_reconcile`` starts buffering
events before the snapshot is requested; ``load_snapshot`` applies the
snapshot, then replays the buffered events newer than the rows they touch
(by transaction time against each row's ``updateTime``). A gap while a
snapshot is in flight voids it: ``load_snapshot`` refuses a snapshot begun
before the latest gap, since events lost in that gap may postdate it.

Available balance: ``ACCOUNT_UPDATE`` carries wallet balances but not the
available balance. It is kept conservatively: the snapshot's figure, lowered
by any fall of the wallet balance and by the margin of positions opened or
grown since, never raised by events (a figure too low only shrinks an entry;
one too high would earn a -2019 refusal). The next snapshot sets it exactly.

Memory is bounded for thousands of accounts in one process: fills of the last
``TRADES_KEPT_MS`` (48 h), at most ``MAX_ORDERS`` orders by client id.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from services.executor.binance.records import QUOTE_ASSET, trade_pnl
from services.executor.brokers.base import AccountSnapshot, ExchangePosition

TRADES_KEPT_MS = 48 * 3600 * 1000
MAX_ORDERS = 2000
OPEN_ALGO_STATUS = "NEW"
STREAM_START_MARGIN_MS = 1000
STREAM_POLL_S = 0.02
FINAL_ORDER_STATES = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"})


def _dec(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        return Decimal(0)
    return number if number.is_finite() else Decimal(0)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class _Position:
    __slots__ = ("amount", "entry", "unrealized", "margin_type", "isolated_wallet", "updated_ms")

    def __init__(self, amount: Decimal, entry: Decimal, unrealized: Decimal, margin_type: str,
                 isolated_wallet: Decimal, updated_ms: int) -> None:
        self.amount, self.entry, self.unrealized = amount, entry, unrealized
        self.margin_type, self.isolated_wallet, self.updated_ms = margin_type, isolated_wallet, updated_ms


class AccountState:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """``clock``: the exchange's time in seconds (local time plus the measured offset)."""
        self._clock = clock
        self._stream_live = False
        self._reconciled = False
        self._buffer: list[Mapping[str, Any]] | None = None
        self._wallet = Decimal(0)
        self._available = Decimal(0)
        self._balance_updated_ms = 0
        self._positions: dict[str, _Position] = {}
        self._algo: dict[str, dict[str, Any]] = {}                  # clientAlgoId -> REST-shaped row (NEW only)
        self._algo_symbols: set[str] = set()   # symbols whose conditional orders are all known (read since the gap)
        self._orders: OrderedDict[str, dict[str, Any]] = OrderedDict()   # clientOrderId -> REST-shaped row
        self._trades: dict[str, list[dict[str, Any]]] = {}          # symbol -> userTrades-shaped rows
        self._leverage: dict[str, int] = {}
        self._position_event_ms: dict[str, int] = {}   # symbol -> T of the last ACCOUNT_UPDATE that moved it
        self._fills_seen_since_ms: int | None = None
        self._gaps = 0   # gaps so far: a snapshot begun before the latest one is void

    # ------------------------------------------------------------ stream side
    def on_live(self) -> None:
        if not self._stream_live:
            # The stream delivers every fill from here on. A second's margin on the exchange's clock: a fill
            # stamped just before it is counted by the REST read of the day before the stream (never twice,
            # since the stream's sum starts here).
            self._fills_seen_since_ms = int(self._clock() * 1000) + STREAM_START_MARGIN_MS
        self._stream_live = True

    def on_gap(self, reason: str) -> None:
        self._stream_live = False
        self._gaps += 1
        self._algo_symbols = set()
        self._reconciled = False
        self._buffer = None
        self._fills_seen_since_ms = None   # fills may have been missed: the day needs REST again

    def on_event(self, event: Mapping[str, Any]) -> None:
        if self._buffer is not None:
            self._buffer.append(event)
            return
        self._apply(event)

    @property
    def live(self) -> bool:
        return self._stream_live and self._reconciled

    @property
    def fills_seen_since_ms(self) -> int | None:
        """Every fill from this time on has been seen; None when that is not known (not live)."""
        return self._fills_seen_since_ms if self.live else None

    # ------------------------------------------------------------ reconcile
    def begin_reconcile(self) -> int:
        """Start buffering events; the answer identifies this snapshot for ``load_snapshot``."""
        if self._buffer is None:   # a reconcile that failed keeps its buffer: its fills must not be lost
            self._buffer = []
        return self._gaps

    def load_snapshot(self, account: Mapping[str, Any], open_algo_orders: Iterable[Mapping[str, Any]] | None, *,
                      algo_symbols: Iterable[str] | None = None, begun: int | None = None) -> bool:
        """Apply a snapshot begun at ``begun`` (``begin_reconcile``'s answer); False, and nothing applied,
        when a gap came since: the account needs another snapshot."""
        if begun is not None and begun != self._gaps:
            return False
        buffered = self._buffer or []
        self._buffer = None
        for row in account.get("assets", []) or []:
            if row.get("asset") == QUOTE_ASSET:
                self._wallet = _dec(row.get("walletBalance"))
                self._available = _dec(row.get("availableBalance"))
                self._balance_updated_ms = int(row.get("updateTime") or 0)
        positions: dict[str, _Position] = {}
        for row in account.get("positions", []) or []:
            amount = _dec(row.get("positionAmt"))
            if amount == 0:
                continue
            notional, unrealized = _dec(row.get("notional")), _dec(row.get("unrealizedProfit"))
            entry = _dec(row.get("entryPrice")) or ((notional - unrealized) / amount)
            isolated = _dec(row.get("isolatedWallet"))
            positions[str(row["symbol"])] = _Position(amount, entry, unrealized,
                                                      "isolated" if isolated > 0 else "cross", isolated,
                                                      int(row.get("updateTime") or 0))
        self._positions = positions
        if open_algo_orders is not None:
            symbols = None if algo_symbols is None else set(algo_symbols)
            self._algo = {cid: row for cid, row in self._algo.items()
                          if symbols is not None and row.get("symbol") not in symbols}
            for row in open_algo_orders:
                if row.get("algoStatus", OPEN_ALGO_STATUS) == OPEN_ALGO_STATUS:
                    self._algo[str(row.get("clientAlgoId"))] = dict(row)
            self._algo_symbols = set(symbols or {str(row.get("symbol")) for row in self._algo.values()})
        for event in buffered:
            self._apply(event, snapshot=True)
        self._reconciled = True
        return True

    # ------------------------------------------------------------ reads
    def account(self) -> AccountSnapshot:
        return AccountSnapshot(available_balance=max(Decimal(0), min(self._available, self._wallet)),
                               wallet_balance=self._wallet)

    def positions(self, leverage: Mapping[str, int]) -> dict[str, ExchangePosition]:
        return {symbol: self._exchange_position(symbol, position, leverage.get(symbol, 1))
                for symbol, position in self._positions.items() if position.amount != 0}

    def position(self, symbol: str, leverage: int) -> ExchangePosition | None:
        position = self._positions.get(symbol)
        if position is None or position.amount == 0:
            return None
        return self._exchange_position(symbol, position, leverage)

    def caught_up_with(self, symbol: str, client_order_ids: Iterable[str]) -> bool:
        """Whether these orders of ours on ``symbol`` have all been reported final, and the position moves
        they caused too (an ACCOUNT_UPDATE at least as recent as the last of them)."""
        latest = 0
        for client_id in client_order_ids:
            order = self._orders.get(client_id)
            if order is None or order.get("status") not in FINAL_ORDER_STATES:
                return False
            if order.get("status") in ("FILLED", "PARTIALLY_FILLED") or _dec(order.get("executedQty")) > 0:
                latest = max(latest, int(order.get("updateTime") or 0))
        return latest == 0 or self._position_event_ms.get(symbol, 0) >= latest

    def leverage(self, symbol: str) -> int | None:
        """The leverage Binance reported for the symbol (ACCOUNT_CONFIG_UPDATE), if any since the stream began."""
        return self._leverage.get(symbol)

    def open_algo_orders(self, symbol: str) -> list[dict[str, Any]]:
        return [row for row in self._algo.values() if row.get("symbol") == symbol]

    def algo_orders_known(self, symbol: str) -> bool:
        """Whether every working conditional order of ``symbol`` is known: read since the last gap. Orders placed
        before the stream began on a symbol the snapshot did not read (a flat one) are not, until it is read."""
        return symbol in self._algo_symbols

    def load_algo_orders(self, symbol: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """The symbol's working conditional orders as REST just listed them (``openAlgoOrders?symbol=``)."""
        self._algo = {cid: row for cid, row in self._algo.items() if row.get("symbol") != symbol}
        for row in rows:
            if row.get("algoStatus", OPEN_ALGO_STATUS) == OPEN_ALGO_STATUS:
                self._algo[str(row.get("clientAlgoId"))] = dict(row)
        self._algo_symbols.add(symbol)

    def order(self, client_order_id: str) -> dict[str, Any] | None:
        return self._orders.get(client_order_id)

    def trades(self, symbol: str, since_ms: int = 0) -> list[dict[str, Any]]:
        return [row for row in self._trades.get(symbol, []) if int(row["time"]) >= since_ms]

    def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        """The fills seen, each counted as ``userTrades`` rows are (``records.trade_pnl``)."""
        return sum((trade_pnl(row) for row in self.trades(symbol, since_ms)), Decimal(0))

    def _exchange_position(self, symbol: str, position: _Position, leverage: int) -> ExchangePosition:
        leverage = self._leverage.get(symbol, leverage)
        quantity = abs(position.amount)
        mark = position.entry + position.unrealized / position.amount
        margin = position.isolated_wallet if position.isolated_wallet > 0 else quantity * mark / max(leverage, 1)
        return ExchangePosition(symbol=symbol, side="LONG" if position.amount > 0 else "SHORT", quantity=quantity,
                                entry_price=position.entry, mark_price=mark, unrealized_pnl=position.unrealized,
                                leverage=leverage, margin=margin)

    # ------------------------------------------------------------ events
    def _apply(self, event: Mapping[str, Any], *, snapshot: bool = False) -> None:
        kind = event.get("e")
        when = int(event.get("T") or event.get("E") or 0)
        if kind == "ACCOUNT_UPDATE":
            self._account_update(event.get("a") or {}, when, snapshot)
        elif kind == "ORDER_TRADE_UPDATE":
            self._order_update(event.get("o") or {}, when)
        elif kind == "ALGO_UPDATE":
            self._algo_update(event.get("o") or {}, when)
        elif kind == "ACCOUNT_CONFIG_UPDATE":
            config = event.get("ac") or {}
            if config.get("s") and config.get("l") is not None:
                self._leverage[str(config["s"])] = int(config["l"])

    def _account_update(self, update: Mapping[str, Any], when: int, snapshot: bool) -> None:
        for row in update.get("B", []) or []:
            if row.get("a") != QUOTE_ASSET or (snapshot and when < self._balance_updated_ms):
                continue
            wallet = _dec(row.get("wb"))
            if wallet < self._wallet:
                self._available -= self._wallet - wallet   # a loss or fee lowers what is free at once
            self._wallet = wallet
        for row in update.get("P", []) or []:
            if row.get("ps", "BOTH") != "BOTH":
                continue
            symbol = str(row.get("s"))
            current = self._positions.get(symbol)
            if snapshot and current is not None and when < current.updated_ms:
                continue   # the snapshot already holds something newer
            self._position_event_ms[symbol] = max(when, self._position_event_ms.get(symbol, 0))
            amount = _dec(row.get("pa"))
            if amount == 0:
                self._positions.pop(symbol, None)
                continue
            entry = _dec(row.get("ep"))
            grown = abs(amount) - (abs(current.amount) if current is not None else Decimal(0))
            if grown > 0:   # margin newly tied up (notional / leverage), never given back until a snapshot
                self._available -= grown * entry / max(self._leverage.get(symbol, 1), 1)
            self._positions[symbol] = _Position(amount, entry, _dec(row.get("up")), str(row.get("mt", "cross")),
                                                _dec(row.get("iw")), when)

    def _order_update(self, order: Mapping[str, Any], when: int) -> None:
        client_id = str(order.get("c", ""))
        symbol = str(order.get("s", ""))
        row = {
            "symbol": symbol, "orderId": int(order.get("i") or 0), "clientOrderId": client_id,
            "status": order.get("X"), "executedQty": str(order.get("z", "0")), "avgPrice": str(order.get("ap", "0")),
            "side": order.get("S"), "type": order.get("o"), "origType": order.get("ot", order.get("o")),
            "reduceOnly": _truthy(order.get("R")), "closePosition": _truthy(order.get("cp")), "updateTime": when,
        }
        if client_id:
            self._orders[client_id] = row
            self._orders.move_to_end(client_id)
            while len(self._orders) > MAX_ORDERS:
                self._orders.popitem(last=False)
        if order.get("x") == "TRADE" and _dec(order.get("l")) > 0:
            trade_time = int(order.get("T") or when)
            trades = self._trades.setdefault(symbol, [])
            trade_id = int(order.get("t") or 0)
            if any(int(existing["id"]) == trade_id for existing in trades[-50:]):
                return   # replayed after a reconcile: counted once
            trades.append({
                "id": trade_id, "orderId": row["orderId"], "symbol": symbol, "side": order.get("S"),
                "price": str(order.get("L", "0")), "qty": str(order.get("l", "0")),
                "realizedPnl": str(order.get("rp", "0")), "commission": str(order.get("n", "0")),
                "commissionAsset": order.get("N", QUOTE_ASSET), "time": trade_time,
                "buyer": order.get("S") == "BUY", "maker": _truthy(order.get("m")), "positionSide": order.get("ps", "BOTH"),
            })
            horizon = int(self._clock() * 1000) - TRADES_KEPT_MS
            if trades and int(trades[0]["time"]) < horizon:
                self._trades[symbol] = [t for t in trades if int(t["time"]) >= horizon]

    def _algo_update(self, order: Mapping[str, Any], when: int) -> None:
        client_id = str(order.get("caid", ""))
        if order.get("X") != OPEN_ALGO_STATUS:
            self._algo.pop(client_id, None)
            return
        self._algo[client_id] = {
            "clientAlgoId": client_id, "algoId": int(order.get("aid") or 0), "orderType": order.get("o"),
            "side": order.get("S"), "symbol": order.get("s"), "triggerPrice": str(order.get("tp", "0")),
            "closePosition": _truthy(order.get("cp")), "reduceOnly": _truthy(order.get("R")),
            "quantity": str(order.get("q", "0")), "algoStatus": OPEN_ALGO_STATUS, "updateTime": when,
        }


async def reported_within(seconds: float, condition: Callable[[], bool], poll_s: float = STREAM_POLL_S) -> bool:
    """Whether ``condition`` holds within ``seconds``: for what the stream reports moments after a REST
    answer (our own fills, a new connection's subscription)."""
    waited = 0.0
    while not condition():
        if waited >= seconds:
            return False
        await asyncio.sleep(poll_s)
        waited += poll_s
    return True
