"""The trading fake's exchange state: accounts, fills, conditional orders, and the events they push.

MARKET orders fill at the mark price with a taker fee; one position per
symbol (one-way mode); userTrades and income rows are booked per fill. Every
state change is pushed on the account's user-data stream (``UserStreams``)
in Binance's formats, built from the same rows REST answers with.

Conditional orders (``/fapi/v1/algoOrder``) trigger when the mark price
crosses them: ALGO_UPDATE TRIGGERING, TRIGGERED (``ai`` = the new order's
id), the MARKET order's ORDER_TRADE_UPDATE NEW / TRADE (``ot`` = the algo
type) and ACCOUNT_UPDATE, then ALGO_UPDATE FINISHED.

When a position goes flat, the symbol's other working ``closePosition``
orders end EXPIRED (ALGO_UPDATE "EXPIRED"). Binance's ALGO_UPDATE page
defines EXPIRED as a system cancel, its example being a conditional order
whose position on the symbol was closed; close-all orders carry Binance's
position-bound time in force (GTE_GTC), so the fake expires them at once
rather than leaving them to fire on no position. Orders with a quantity
(reduce-only) stay working, as on Binance.

Open conditional orders are indexed by symbol, so a mark price move looks
only at that symbol's orders, never at every account.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol

from tests.fakes.binance_events import Event, account_config_update, account_update, algo_update, order_trade_update
from tests.fakes.binance_futures_model import (
    ORDER_LIMIT_1M,
    ORDER_LIMIT_10S,
    TAKER_FEE_RATE,
    Account,
    ApiError,
    Position,
    SymbolSpec,
    decimals,
    fmt,
)
from tests.fakes.binance_user_stream import UserStreams

CLIENT_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CONDITIONAL_TYPES = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
DEFAULT_LEVERAGE = 20

Answer = tuple[Any, dict[str, str]]


class MarkFeed(Protocol):
    def mark_price(self, symbol: str) -> Decimal: ...


class FuturesBook:
    def __init__(self, *, clock: Callable[[], float], symbols: Iterable[SymbolSpec],
                 mark_prices: dict[str, Decimal], feed: MarkFeed | None, streams: UserStreams) -> None:
        self.clock = clock
        self.feed = feed
        self.streams = streams
        self.symbols = {spec.symbol: spec for spec in symbols}
        self.mark_prices = mark_prices          # pinned prices; the feed answers for the others
        self.accounts: dict[str, Account] = {}
        self.partial_fill_remaining = 0
        self.partial_fill_fraction = Decimal(1)
        self.clock_skew_ms = 0
        self.order_count_bias = 0
        self._ids = itertools.count(1_000_001)
        self._open_algos: dict[str, dict[int, tuple[Account, dict[str, Any]]]] = {}

    # ---------------------------------------------------------------- basics
    def add_account(self, api_key: str, api_secret: str, balance: Decimal = Decimal("10000")) -> Account:
        account = Account(api_key=api_key, api_secret=api_secret, wallet_balance=balance)
        self.accounts[api_key] = account
        return account

    def server_time_ms(self) -> int:
        return int(self.clock() * 1000) + self.clock_skew_ms

    def mark(self, symbol: str) -> Decimal:
        pinned = self.mark_prices.get(symbol)
        if pinned is not None or self.feed is None:
            return self.mark_prices[symbol]
        return self.feed.mark_price(symbol)

    def set_mark_price(self, symbol: str, price: Decimal | str) -> None:
        """Pin the mark price and trigger every conditional order it crosses."""
        self.mark_prices[symbol] = Decimal(str(price))
        self.check_triggers([symbol])

    def unpin_mark_price(self, symbol: str) -> None:
        """Back to the feed's price (with a feed only)."""
        self.mark_prices.pop(symbol, None)
        self.check_triggers([symbol])

    def _publish(self, account: Account, *events: Event) -> None:
        for event in events:
            self.streams.publish(account.api_key, event)

    def _spec(self, params: dict[str, str]) -> SymbolSpec:
        symbol = params.get("symbol")
        if not symbol:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        spec = self.symbols.get(symbol)
        if spec is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return spec

    # ------------------------------------------------------- account settings
    def _change_position_mode(self, account: Account, params: dict[str, str]) -> Answer:
        dual = params.get("dualSidePosition", "").lower() == "true"
        if dual == account.dual_side:
            raise ApiError(400, -4059, "No need to change position side.")
        if any(p.amount != 0 for p in account.positions.values()):
            raise ApiError(400, -4068, "Position side cannot be changed if there exists position.")
        account.dual_side = dual
        return {"code": 200, "msg": "success"}, {}

    def _change_leverage(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        leverage = int(params.get("leverage", "0"))
        if not 1 <= leverage <= 125:
            raise ApiError(400, -4028, f"Leverage {leverage} is not valid")
        if self._leverage(account, spec.symbol) != leverage:
            self._publish(account, account_config_update(self.server_time_ms(), spec.symbol, leverage))
        account.leverage[spec.symbol] = leverage
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": spec.symbol}, {}

    def _change_margin_type(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        margin_type = params.get("marginType", "").upper()
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -4044, "The margin type is not valid.")
        if account.margin_type.get(spec.symbol, "CROSSED") == margin_type:
            raise ApiError(400, -4046, "No need to change margin type.")
        if account.positions.get(spec.symbol, Position()).amount != 0:
            raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
        account.margin_type[spec.symbol] = margin_type
        return {"code": 200, "msg": "success"}, {}

    # ------------------------------------------------------ account reading
    def _leverage(self, account: Account, symbol: str) -> int:
        return account.leverage.get(symbol, DEFAULT_LEVERAGE)

    def _position_margin(self, account: Account, symbol: str, position: Position) -> Decimal:
        return abs(position.amount) * position.entry_price / self._leverage(account, symbol)

    def _unrealized(self, symbol: str, position: Position) -> Decimal:
        if position.amount == 0:
            return Decimal(0)
        return (self.mark(symbol) - position.entry_price) * position.amount

    def _available(self, account: Account) -> Decimal:
        used = sum((self._position_margin(account, s, p) for s, p in account.positions.items()), Decimal(0))
        losses = sum((min(Decimal(0), self._unrealized(s, p)) for s, p in account.positions.items()), Decimal(0))
        return account.wallet_balance - used + losses

    def _isolated(self, account: Account, symbol: str) -> bool:
        return account.margin_type.get(symbol, "CROSSED") == "ISOLATED"

    def _position_risk(self, account: Account, params: dict[str, str]) -> Answer:
        wanted = self._spec(params).symbol if "symbol" in params else None
        rows = []
        for symbol, position in account.positions.items():
            if position.amount == 0 or (wanted and symbol != wanted):
                continue
            mark = self.mark(symbol)
            notional = position.amount * mark
            initial = abs(notional) / self._leverage(account, symbol)
            isolated = self._isolated(account, symbol)
            isolated_wallet = self._position_margin(account, symbol, position) if isolated else Decimal(0)
            unrealized = self._unrealized(symbol, position)
            rows.append({
                "symbol": symbol, "positionSide": "BOTH", "positionAmt": fmt(position.amount),
                "entryPrice": fmt(position.entry_price), "breakEvenPrice": fmt(position.entry_price),
                "markPrice": fmt(mark), "unRealizedProfit": fmt(unrealized), "liquidationPrice": "0",
                "isolatedMargin": fmt(isolated_wallet + unrealized if isolated else Decimal(0)),
                "notional": fmt(notional), "marginAsset": "USDT", "isolatedWallet": fmt(isolated_wallet),
                "initialMargin": fmt(initial), "maintMargin": fmt(initial / 10),
                "positionInitialMargin": fmt(initial), "openOrderInitialMargin": "0", "adl": 1,
                "bidNotional": "0", "askNotional": "0", "updateTime": self.server_time_ms(),
            })
        return rows, {}

    def _balance(self, account: Account, params: dict[str, str]) -> Answer:
        unrealized = sum((self._unrealized(s, p) for s, p in account.positions.items()), Decimal(0))
        available = self._available(account)
        return [{
            "accountAlias": "SgsR", "asset": "USDT", "balance": fmt(account.wallet_balance),
            "crossWalletBalance": fmt(account.wallet_balance), "crossUnPnl": fmt(unrealized),
            "availableBalance": fmt(available), "maxWithdrawAmount": fmt(max(available, Decimal(0))),
            "marginAvailable": True, "updateTime": self.server_time_ms(),
        }], {}

    def _account_info(self, account: Account, params: dict[str, str]) -> Answer:
        balance = self._balance(account, params)[0][0]
        return {
            "totalWalletBalance": balance["balance"], "availableBalance": balance["availableBalance"],
            "totalUnrealizedProfit": balance["crossUnPnl"], "assets": [
                {"asset": "USDT", "walletBalance": balance["balance"], "availableBalance": balance["availableBalance"],
                 "unrealizedProfit": balance["crossUnPnl"]}],
            "positions": self._position_risk(account, {})[0],
        }, {}

    def _account_info_v3(self, account: Account, params: dict[str, str]) -> Answer:
        """GET /fapi/v3/account as Binance shapes it: USDT asset row; position rows without entry or mark price."""
        balance = self._balance(account, params)[0][0]
        risk = self._position_risk(account, {})[0]
        initial = sum((Decimal(r["initialMargin"]) for r in risk), Decimal(0))
        maint = sum((Decimal(r["maintMargin"]) for r in risk), Decimal(0))
        margin_balance = fmt(account.wallet_balance + Decimal(balance["crossUnPnl"]))
        asset = {
            "asset": "USDT", "walletBalance": balance["balance"], "unrealizedProfit": balance["crossUnPnl"],
            "marginBalance": margin_balance, "maintMargin": fmt(maint), "initialMargin": fmt(initial),
            "positionInitialMargin": fmt(initial), "openOrderInitialMargin": "0",
            "crossWalletBalance": balance["balance"], "crossUnPnl": balance["crossUnPnl"],
            "availableBalance": balance["availableBalance"], "maxWithdrawAmount": balance["maxWithdrawAmount"],
            "updateTime": self.server_time_ms(),
        }
        positions = [{
            "symbol": r["symbol"], "positionSide": r["positionSide"], "positionAmt": r["positionAmt"],
            "unrealizedProfit": r["unRealizedProfit"], "isolatedMargin": r["isolatedMargin"],
            "notional": r["notional"], "isolatedWallet": r["isolatedWallet"], "initialMargin": r["initialMargin"],
            "maintMargin": r["maintMargin"], "updateTime": r["updateTime"],
        } for r in risk]
        return {
            "totalInitialMargin": fmt(initial), "totalMaintMargin": fmt(maint),
            "totalWalletBalance": balance["balance"], "totalUnrealizedProfit": balance["crossUnPnl"],
            "totalMarginBalance": margin_balance, "totalPositionInitialMargin": fmt(initial),
            "totalOpenOrderInitialMargin": "0", "totalCrossWalletBalance": balance["balance"],
            "totalCrossUnPnl": balance["crossUnPnl"], "availableBalance": balance["availableBalance"],
            "maxWithdrawAmount": balance["maxWithdrawAmount"], "assets": [asset], "positions": positions,
        }, {}

    def _account_update(self, account: Account, symbol: str) -> Event:
        """ACCOUNT_UPDATE after a fill: the wallet, and the symbol's position as positionRisk would show it."""
        position = account.positions.get(symbol, Position())
        isolated = self._isolated(account, symbol)
        row = {
            "s": symbol, "pa": fmt(position.amount), "ep": fmt(position.entry_price),
            "bep": fmt(position.entry_price), "cr": fmt(position.realized),
            "up": fmt(self._unrealized(symbol, position)), "mt": "isolated" if isolated else "cross",
            "iw": fmt(self._position_margin(account, symbol, position) if isolated else Decimal(0)), "ps": "BOTH",
        }
        wallet = fmt(account.wallet_balance)
        return account_update(self.server_time_ms(), wallet, wallet, [row])

    # ---------------------------------------------------------------- checks
    def _order_count_headers(self, account: Account) -> dict[str, str]:
        now = self.clock()
        account.order_times.append(now)
        while account.order_times and now - account.order_times[0] > 60:
            account.order_times.popleft()
        last_10s = sum(1 for t in account.order_times if now - t <= 10) + self.order_count_bias
        last_1m = len(account.order_times) + self.order_count_bias
        headers = {"X-MBX-ORDER-COUNT-10S": str(last_10s), "X-MBX-ORDER-COUNT-1M": str(last_1m)}
        if last_10s > ORDER_LIMIT_10S or last_1m > ORDER_LIMIT_1M:
            raise ApiError(429, -1015, f"Too many new orders; current limit is {ORDER_LIMIT_10S} orders per TEN_SECONDS.",
                           {**headers, "Retry-After": "10"})
        return headers

    def _check_position_side(self, account: Account, params: dict[str, str]) -> None:
        position_side = params.get("positionSide", "BOTH").upper()
        if account.dual_side != (position_side in ("LONG", "SHORT")):
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")

    def _check_client_id(self, client_id: str, existing: list[dict[str, Any]], key: str) -> None:
        if not CLIENT_ID_PATTERN.match(client_id):
            raise ApiError(400, -4015, "Client order id is not valid.")
        if any(order[key] == client_id for order in existing):
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")

    def _check_step(self, value: Decimal, step: Decimal, precision: int, code: int, what: str) -> None:
        if decimals(value) > precision:
            raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
        if value % step != 0:
            raise ApiError(400, code, f"{what} not increased by {'tick' if code == -4014 else 'step'} size.")

    # ---------------------------------------------------------------- orders
    def _new_order(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        order_type = params.get("type", "").upper()
        if order_type in CONDITIONAL_TYPES:
            raise ApiError(400, -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.")
        if order_type != "MARKET":
            raise ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        self._check_position_side(account, params)
        client_id = params.get("newClientOrderId") or f"fake{next(self._ids)}"
        self._check_client_id(client_id, account.orders, "clientOrderId")
        try:
            quantity = Decimal(params["quantity"])
        except (KeyError, ArithmeticError):
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.") from None
        if quantity <= 0:
            raise ApiError(400, -4003, "Quantity less than or equal to zero.")
        self._check_step(quantity, spec.step_size, spec.quantity_precision, -4023, "Qty")
        if quantity < spec.min_qty or quantity > spec.max_qty:
            raise ApiError(400, -1013, "Filter failure: MARKET_LOT_SIZE")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        mark = self.mark(spec.symbol)
        position = account.positions.get(spec.symbol, Position())
        signed = quantity if side == "BUY" else -quantity
        if reduce_only:
            if position.amount == 0 or (position.amount > 0) == (signed > 0):
                raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
            quantity = min(quantity, abs(position.amount))
        elif quantity * mark < spec.min_notional:
            raise ApiError(400, -4164, f"Order's notional must be no smaller than {fmt(spec.min_notional)} (unless you choose reduce only).")
        opening = quantity if position.amount == 0 or (position.amount > 0) == (signed > 0) else max(Decimal(0), quantity - abs(position.amount))
        required = opening * mark / self._leverage(account, spec.symbol) + quantity * mark * TAKER_FEE_RATE
        if opening > 0 and required > self._available(account):
            raise ApiError(400, -2019, "Margin is insufficient.")
        headers = self._order_count_headers(account)
        ordered = quantity
        if self.partial_fill_remaining > 0:
            self.partial_fill_remaining -= 1
            quantity = (quantity * self.partial_fill_fraction // spec.step_size) * spec.step_size
        order = self._execute(account, spec.symbol, side, quantity, client_id, reduce_only, "MARKET", ordered=ordered)
        self._expire_close_orders_if_flat(account, spec.symbol)
        if params.get("newOrderRespType", "ACK").upper() == "ACK":
            return {**order, "status": "NEW", "executedQty": "0", "cumQuote": "0", "avgPrice": "0.00"}, headers
        return order, headers

    def manual_order(self, symbol: str, side: str, quantity: Decimal, api_key: str) -> dict[str, Any]:
        """A MARKET order placed outside the bot (Binance's app), filled at the mark price."""
        account = self.accounts[api_key]
        order = self._execute(account, symbol, side, quantity, f"web_{next(self._ids)}", False, "MARKET")
        self._expire_close_orders_if_flat(account, symbol)
        return order

    def _execute(self, account: Account, symbol: str, side: str, quantity: Decimal, client_id: str,
                 reduce_only: bool, order_type: str, close_position: bool = False, *,
                 ordered: Decimal | None = None, orig_type: str | None = None, stop_price: str = "0",
                 working_type: str = "CONTRACT_PRICE", order_id: int | None = None) -> dict[str, Any]:
        """Fill ``quantity`` (of ``ordered``) at the mark: position, wallet, trade and income rows, events."""
        price = self.mark(symbol)
        now = self.server_time_ms()
        order_id = next(self._ids) if order_id is None else order_id
        ordered = quantity if ordered is None else ordered
        trade = self._fill(account, symbol, side, quantity, price, now, order_id) if quantity > 0 else None
        order = {
            "orderId": order_id, "symbol": symbol, "status": "FILLED" if quantity == ordered else "EXPIRED",
            "clientOrderId": client_id, "price": "0", "avgPrice": fmt(price), "origQty": fmt(ordered),
            "executedQty": fmt(quantity), "cumQty": fmt(quantity), "cumQuote": fmt(quantity * price),
            "timeInForce": "GTC", "type": order_type, "reduceOnly": reduce_only, "closePosition": close_position,
            "side": side, "positionSide": "BOTH", "stopPrice": stop_price, "workingType": working_type,
            "priceProtect": False, "origType": orig_type or order_type, "priceMatch": "NONE",
            "selfTradePreventionMode": "NONE", "goodTillDate": 0, "time": now, "updateTime": now,
        }
        account.orders.append(order)
        self._publish(account, order_trade_update(now, order, execution="NEW", status="NEW"))
        if trade is not None:
            status = "FILLED" if quantity == ordered else "PARTIALLY_FILLED"
            self._publish(account, order_trade_update(now, order, execution="TRADE", status=status,
                                                      cumulative=fmt(quantity), trade=trade),
                          self._account_update(account, symbol))
        if quantity < ordered:
            self._publish(account, order_trade_update(now, order, execution="EXPIRED", status="EXPIRED",
                                                      cumulative=fmt(quantity)))
        return order

    def _fill(self, account: Account, symbol: str, side: str, quantity: Decimal, price: Decimal, now: int,
              order_id: int) -> dict[str, Any]:
        """Move the position and the wallet; book the trade and income rows; the trade row."""
        position = account.positions.setdefault(symbol, Position())
        signed = quantity if side == "BUY" else -quantity
        realized = Decimal(0)
        if position.amount != 0 and (position.amount > 0) != (signed > 0):
            closing = min(quantity, abs(position.amount))
            direction = 1 if position.amount > 0 else -1
            realized = (price - position.entry_price) * closing * direction
            remainder = position.amount + signed
            if remainder == 0 or (remainder > 0) == (position.amount > 0):
                position.amount = remainder
            else:
                position.amount, position.entry_price = remainder, price
        else:
            new_amount = position.amount + signed
            position.entry_price = (abs(position.amount) * position.entry_price + quantity * price) / abs(new_amount)
            position.amount = new_amount
        if position.amount == 0:
            position.entry_price = Decimal(0)
        position.realized += realized
        fee = quantity * price * TAKER_FEE_RATE
        account.wallet_balance += realized - fee
        trade_id = next(self._ids)
        trade = {
            "buyer": side == "BUY", "commission": fmt(fee), "commissionAsset": "USDT", "id": trade_id,
            "maker": False, "orderId": order_id, "price": fmt(price), "qty": fmt(quantity),
            "quoteQty": fmt(quantity * price), "realizedPnl": fmt(realized), "side": side,
            "positionSide": "BOTH", "symbol": symbol, "time": now,
        }
        account.trades.append(trade)
        if realized != 0:
            self._add_income(account, symbol, "REALIZED_PNL", realized, now, trade_id)
        self._add_income(account, symbol, "COMMISSION", -fee, now, trade_id)
        return trade

    def _add_income(self, account: Account, symbol: str, kind: str, amount: Decimal, now: int, trade_id: int) -> None:
        account.income.append({"symbol": symbol, "incomeType": kind, "income": fmt(amount), "asset": "USDT",
                               "info": "", "time": now, "tranId": next(self._ids), "tradeId": str(trade_id)})

    def _query_order(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        for order in account.orders:
            if order["symbol"] == spec.symbol and (
                str(order["orderId"]) == params.get("orderId") or order["clientOrderId"] == params.get("origClientOrderId")
            ):
                return order, {}
        raise ApiError(400, -2013, "Order does not exist.")

    def _all_orders(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        return [o for o in account.orders if o["symbol"] == spec.symbol], {}

    # ------------------------------------------------------------ algo orders
    def _new_algo_order(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        if params.get("algoType") != "CONDITIONAL":
            raise ApiError(400, -1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        order_type = params.get("type", "").upper()
        if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        self._check_position_side(account, params)
        client_id = params.get("clientAlgoId") or f"fakealgo{next(self._ids)}"
        self._check_client_id(client_id, account.algo_orders, "clientAlgoId")
        close_position = params.get("closePosition", "false").lower() == "true"
        if close_position and "quantity" in params:
            raise ApiError(400, -1106, "Parameter 'quantity' sent when not required.")
        if not close_position and "quantity" not in params:
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        try:
            trigger = Decimal(params["triggerPrice"])
        except (KeyError, ArithmeticError):
            raise ApiError(400, -1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.") from None
        self._check_step(trigger, spec.tick_size, spec.price_precision, -4014, "Price")
        if self._crossed(order_type, side, trigger, self.mark(spec.symbol)):
            raise ApiError(400, -2021, "Order would immediately trigger.")
        headers = self._order_count_headers(account)
        algo = self._algo_row(spec.symbol, side, order_type, trigger, client_id, close_position,
                              quantity=params.get("quantity", "0"),
                              working_type=params.get("workingType", "CONTRACT_PRICE").upper(),
                              price_protect=params.get("priceProtect", "false").lower() == "true",
                              reduce_only=params.get("reduceOnly", "false").lower() == "true")
        self._register_algo(account, algo)
        self._publish(account, algo_update(self.server_time_ms(), algo))
        return algo, headers

    def _algo_row(self, symbol: str, side: str, order_type: str, trigger: Decimal, client_id: str,
                  close_position: bool, *, quantity: str = "0", working_type: str = "MARK_PRICE",
                  price_protect: bool = False, reduce_only: bool = False) -> dict[str, Any]:
        now = self.server_time_ms()
        return {
            "algoId": next(self._ids), "clientAlgoId": client_id, "algoType": "CONDITIONAL", "orderType": order_type,
            "symbol": symbol, "side": side, "positionSide": "BOTH", "timeInForce": "GTC",
            "quantity": quantity, "algoStatus": "NEW", "triggerPrice": fmt(trigger),
            "price": "0", "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": working_type, "priceMatch": "NONE", "closePosition": close_position,
            "priceProtect": price_protect, "reduceOnly": reduce_only, "activatePrice": "",
            "callbackRate": "", "createTime": now, "updateTime": now, "triggerTime": 0, "goodTillDate": 0,
            "actualOrderId": "", "actualPrice": "0",
        }

    def _register_algo(self, account: Account, algo: dict[str, Any]) -> None:
        account.algo_orders.append(algo)
        self._open_algos.setdefault(algo["symbol"], {})[algo["algoId"]] = (account, algo)

    def _end_algo(self, account: Account, algo: dict[str, Any], status: str) -> None:
        """A working algo order ends (CANCELED / EXPIRED): its row, the index, and its ALGO_UPDATE."""
        algo.update(algoStatus=status, updateTime=self.server_time_ms())
        self._open_algos.get(algo["symbol"], {}).pop(algo["algoId"], None)
        self._publish(account, algo_update(self.server_time_ms(), algo))

    @staticmethod
    def _crossed(order_type: str, side: str, trigger: Decimal, mark: Decimal) -> bool:
        """Whether a conditional order's trigger is reached at ``mark``."""
        falling = (order_type == "STOP_MARKET") == (side == "SELL")   # SELL stops and BUY take-profits fire on the way down
        return mark <= trigger if falling else mark >= trigger

    def check_triggers(self, symbols: Iterable[str] | None = None) -> int:
        """Trigger every working conditional order its symbol's mark price has crossed; how many fired."""
        fired = 0
        for symbol in list(self._open_algos if symbols is None else symbols):
            working = self._open_algos.get(symbol)
            if not working:
                continue
            mark = self.mark(symbol)
            for algo_id, (account, algo) in list(working.items()):
                if algo["algoStatus"] != "NEW":     # changed by hand in a test: no longer working
                    working.pop(algo_id, None)
                elif self._crossed(algo["orderType"], algo["side"], Decimal(algo["triggerPrice"]), mark):
                    self._trigger(account, algo)
                    fired += 1
        return fired

    def check_account_triggers(self, account: Account) -> None:
        """With a moving feed: fire this account's crossed orders before answering it (REST sees them at once)."""
        symbols = {a["symbol"] for a in account.algo_orders if a["algoStatus"] == "NEW"}
        if symbols:
            self.check_triggers(symbols)

    def _trigger(self, account: Account, algo: dict[str, Any]) -> None:
        symbol = algo["symbol"]
        position = account.positions.get(symbol, Position())
        closes = position.amount != 0 and (position.amount > 0) == (algo["side"] == "SELL")
        now = self.server_time_ms()
        algo.update(triggerTime=now, updateTime=now)
        if algo["closePosition"] and not closes:
            self._end_algo(account, algo, "EXPIRED")
            return
        self._open_algos.get(symbol, {}).pop(algo["algoId"], None)
        algo["algoStatus"] = "TRIGGERING"
        self._publish(account, algo_update(now, algo))
        order_id = next(self._ids)
        algo.update(algoStatus="TRIGGERED", actualOrderId=str(order_id))
        self._publish(account, algo_update(now, algo))
        quantity = abs(position.amount) if algo["closePosition"] else Decimal(algo["quantity"])
        order = self._execute(account, symbol, algo["side"], quantity, algo["clientAlgoId"], True, "MARKET",
                              close_position=algo["closePosition"], orig_type=algo["orderType"],
                              stop_price=algo["triggerPrice"], working_type=algo["workingType"], order_id=order_id)
        algo.update(algoStatus="FINISHED", actualPrice=order["avgPrice"], updateTime=self.server_time_ms())
        self._publish(account, algo_update(self.server_time_ms(), algo, executed_qty=order["executedQty"]))
        self._expire_close_orders_if_flat(account, symbol)

    def _expire_close_orders_if_flat(self, account: Account, symbol: str) -> None:
        if account.positions.get(symbol, Position()).amount != 0:
            return
        for algo in account.algo_orders:
            if algo["symbol"] == symbol and algo["algoStatus"] == "NEW" and algo["closePosition"]:
                self._end_algo(account, algo, "EXPIRED")

    def _find_algo(self, account: Account, params: dict[str, str]) -> dict[str, Any]:
        for algo in account.algo_orders:
            if str(algo["algoId"]) == params.get("algoId") or algo["clientAlgoId"] == params.get("clientAlgoId"):
                return algo
        raise ApiError(400, -2013, "Order does not exist.")

    def _query_algo_order(self, account: Account, params: dict[str, str]) -> Answer:
        return self._find_algo(account, params), {}

    def _cancel_algo_order(self, account: Account, params: dict[str, str]) -> Answer:
        try:
            algo = self._find_algo(account, params)
        except ApiError:
            raise ApiError(400, -2011, "Unknown order sent.") from None
        if algo["algoStatus"] != "NEW":
            raise ApiError(400, -2011, "Unknown order sent.")
        self._end_algo(account, algo, "CANCELED")
        return {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"], "code": "200", "msg": "success"}, {}

    def _open_algo_orders(self, account: Account, params: dict[str, str]) -> Answer:
        symbol = self._spec(params).symbol if "symbol" in params else None
        return [a for a in account.algo_orders if a["algoStatus"] == "NEW" and symbol in (None, a["symbol"])], {}

    def _all_algo_orders(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        start = int(params.get("startTime", "0"))
        return [a for a in account.algo_orders if a["symbol"] == spec.symbol and a["createTime"] >= start], {}

    def _cancel_all_algo_orders(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        for algo in account.algo_orders:
            if algo["symbol"] == spec.symbol and algo["algoStatus"] == "NEW":
                self._end_algo(account, algo, "CANCELED")
        return {"code": 200, "msg": "The operation of cancel all open order is done."}, {}

    # --------------------------------------------------------------- seeding
    def seed_position(self, api_key: str, symbol: str, side: str, quantity: Decimal | str,
                      entry_price: Decimal | str, leverage: int = DEFAULT_LEVERAGE, margin_type: str = "CROSSED",
                      stop_loss: Decimal | str | None = None, take_profit: Decimal | str | None = None, *,
                      stop_loss_client_id: str | None = None,
                      take_profit_client_id: str | None = None) -> list[dict[str, Any]]:
        """A position already open (and its close-all stop / take-profit), without weight, fills or events."""
        account = self.accounts[api_key]
        long = side.upper() in ("LONG", "BUY")
        amount = Decimal(str(quantity))
        account.positions[symbol] = Position(amount if long else -amount, Decimal(str(entry_price)))
        account.leverage[symbol] = leverage
        account.margin_type[symbol] = "ISOLATED" if margin_type.upper() == "ISOLATED" else "CROSSED"
        exit_side = "SELL" if long else "BUY"
        seeded = []
        for order_type, trigger, client_id in (("STOP_MARKET", stop_loss, stop_loss_client_id),
                                               ("TAKE_PROFIT_MARKET", take_profit, take_profit_client_id)):
            if trigger is not None:
                algo = self._algo_row(symbol, exit_side, order_type, Decimal(str(trigger)),
                                      client_id or f"seed{next(self._ids)}", True)
                self._register_algo(account, algo)
                seeded.append(algo)
        return seeded

    # --------------------------------------------------------------- history
    def _user_trades(self, account: Account, params: dict[str, str]) -> Answer:
        spec = self._spec(params)
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        limit = min(int(params.get("limit", "500")), 1000)
        rows = [
            t for t in account.trades
            if t["symbol"] == spec.symbol and start <= t["time"] <= end
            and ("orderId" not in params or str(t["orderId"]) == params["orderId"])
            and ("fromId" not in params or t["id"] >= int(params["fromId"]))
        ]
        return rows[:limit], {}

    def _income(self, account: Account, params: dict[str, str]) -> Answer:
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        limit = min(int(params.get("limit", "100")), 1000)
        rows = [
            i for i in account.income
            if start <= i["time"] <= end
            and ("symbol" not in params or i["symbol"] == params["symbol"])
            and ("incomeType" not in params or i["incomeType"] == params["incomeType"])
        ]
        return rows[:limit], {}
