"""Live (or testnet) Binance USDⓈ-M Futures account behind the ``Broker`` seam.

One broker per exchange connection, built by ``create_binance_broker``. It
composes the adapter's parts (see ``services.executor.binance``): reads come
from the account's user-data stream when it is live and reconciled, else over
REST (one ``/fapi/v3/account`` read per tick, weight 5); orders and protection
go over REST through the process's weight governor. What it guarantees:

* reads (balance, position, orders, history) either answer or raise; a
  failed lookup is never "flat";
* order POSTs are never sent twice blindly (``orders``);
* every stop and target is a conditional order with our client ids (``protection``);
* leverage and margin type are set once per (account, symbol) and remembered
  in MongoDB (``symbol_settings``), again when the stream reports a leverage
  changed on Binance;
* the position mode is learnt without the weight-30 ``positionSide/dual``
  read: an order in hedge mode is refused with -4061 (nothing executes) and
  the account is remembered as hedge mode; so is a snapshot row with a side.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from services.common.binance_client import ConfiguredAsyncClient
from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from services.common.jsonlog import register_secret
from services.common.weight_governor import Priority, priority_var, waiting_at_most
from services.executor.binance import errors as errs
from services.executor.binance.account import AccountShared, shared_state
from services.executor.binance.account_state import AccountState, reported_within
from services.executor.binance.bring_up import AccountStreams
from services.executor.binance.history import History
from services.executor.binance.orders import Orders
from services.executor.binance.protection import Protection
from services.executor.binance.rest import AccountRest, BrokerTuning
from services.executor.binance.symbol_settings import SymbolSettings
from services.executor.brokers.base import (
    AccountNotReady,
    AccountSnapshot,
    ClosedTradeRecord,
    EntryOrder,
    ExchangePosition,
    Fill,
    MarketView,
    PositionSide,
    ProtectiveOrders,
)
from services.executor.binance.records import (
    QUOTE_ASSET,
    account_rows,
    hedge_positions_open,
    dec,
    parse_account_positions,
    parse_position,
)

logger = logging.getLogger(__name__)

MARGIN_TYPES = {"ISOLATED": "ISOLATED", "CROSSED": "CROSSED", "CROSS": "CROSSED"}
EXECUTOR_WEIGHT_SHARE = 0.8   # of the IP's weight, by default; the market service takes 0.15
BRING_UP_WAIT_S = 0.0         # a cycle takes its account's first snapshot only if the weight is there now


def account_id_of(futures_url: str, api_key: str) -> str:
    """The process-local key of an account: a hash, never the API key itself."""
    return hashlib.sha256(f"{futures_url}\n{api_key}".encode()).hexdigest()[:16]


class BinanceFuturesBroker:
    """The ``Broker`` protocol over one Binance USDⓈ-M Futures account."""

    def __init__(self, client: ConfiguredAsyncClient, shared: AccountShared, tuning: BrokerTuning | None = None,
                 settings: SymbolSettings | None = None) -> None:
        self.rest = AccountRest(client, shared, tuning or BrokerTuning())
        self._shared = shared
        self._orders = Orders(self.rest)
        self._protection = Protection(self.rest)
        self._history = History(self.rest)
        self._settings = settings or SymbolSettings(None)
        self.streams: AccountStreams | None = None   # set by the factory when user-data streams are on

    @property
    def shared(self) -> AccountShared:
        return self._shared

    @property
    def tuning(self) -> BrokerTuning:
        return self.rest.tuning

    async def sync_clock(self) -> None:
        await self.rest.sync_clock()

    # ------------------------------------------------------------ reads
    async def observe(self, market: MarketView) -> bool:
        """Binance triggers SL/TP itself; nothing to simulate."""
        return False

    async def _account_info(self, use: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``GET /fapi/v3/account`` (weight 5): balances and positions in one answer, shared by the two reads."""
        client = self.rest.client
        answer = await self._shared.account_info(
            use, lambda: self.rest.read("account read", lambda: client.futures_account(version=3))
        )
        assets, rows = account_rows(answer)
        if hedge_positions_open(rows):
            self._shared.hedge_mode = True
        return assets, rows

    @contextlib.asynccontextmanager
    async def _bringing_up(self) -> AsyncIterator[None]:
        """With streams on, an account not reconciled yet is being brought up: its reads wait at most
        ``BRING_UP_WAIT_S`` for weight, else ``AccountNotReady`` (the background bring-up takes the
        snapshot, spread over the budget, and the cycle defers) rather than holding the tick for a minute;
        an IP ban (418) is raised as it is.
        Its snapshot is bring-up work for the governor too: after a restart, thousands of first cycles must
        not take the room that the entries of accounts already up need (today's PnL, orders)."""
        if self.streams is None:
            yield
            return
        token = priority_var.set(Priority.BRING_UP)
        try:
            with waiting_at_most(BRING_UP_WAIT_S):
                yield
        except ResourceExhausted as error:
            self.streams.schedule(self._shared.account_id)
            if errs.is_ip_ban(error):
                # Not a wait for weight but the exchange's ban, blinding every account behind the IP: the cycle
                # fails with it as any cycle does during the ban (CRITICAL EXCHANGE_BANNED at the gateway,
                # evidence for the circuit breaker), not as a WARNING wait for this account's bring-up.
                raise
            raise AccountNotReady(f"account being brought up, its snapshot waits for exchange weight "
                                  f"({self.streams.queued()} accounts queued): {error.message}",
                                  retry_after=error.retry_after) from None
        finally:
            priority_var.reset(token)

    async def _reconciled_state(self) -> AccountState | None:
        """The stream's state for a whole-account read: reconciled now if the stream is live and the
        state is not (the snapshot this read would take anyway), else None and the read goes to REST.
        A stream still coming up is given ``STREAM_FALLBACK_S`` before REST is read instead: reading
        now would cost the REST read and, moments later, the reconcile's."""
        state = self._shared.live_state()
        if state is None and self.streams is not None:
            if await self.streams.ensure_reconciled(self._shared):
                return self._shared.live_state()
            if self.streams.coming_up(self._shared.account_id):
                raise ResourceExhausted("its user-data stream is coming up")
        return state

    async def account(self) -> AccountSnapshot:
        async with self._bringing_up():
            state = await self._reconciled_state()
            if state is not None:
                return state.account()
            assets, _ = await self._account_info("balances")
        for row in assets:
            if row.get("asset") == QUOTE_ASSET:
                return AccountSnapshot(available_balance=dec(row, "availableBalance"),
                                       wallet_balance=dec(row, "walletBalance"))
        return AccountSnapshot(available_balance=Decimal(0), wallet_balance=Decimal(0))

    async def positions(self) -> dict[str, ExchangePosition]:
        """Every open position: from the stream when live, else the same ``/fapi/v3/account`` answer as
        ``account()`` (one request per tick; its rows give entry and mark price exactly, see
        ``parse_account_positions``)."""
        async with self._bringing_up():
            state = await self._reconciled_state()
            if state is not None:
                return state.positions(self._settings.leverages(self._shared.account_id))
            _, rows = await self._account_info("positions")
        return parse_account_positions(rows, self._settings.leverages(self._shared.account_id))

    async def position(self, symbol: str) -> ExchangePosition | None:
        """The symbol's position. Shortly after our own order on it the stream may still lag the REST
        answer, so positionRisk (weight 5) is asked then; otherwise the stream's state when it is live."""
        state = self._shared.live_state()
        leverage = self._settings.leverage(self._shared.account_id, symbol) or 1
        if state is not None and await self._caught_up(state, symbol):
            return state.position(symbol, leverage)
        client = self.rest.client
        rows = await self.rest.read(f"position read for {symbol}",
                                    lambda: client.futures_position_information(symbol=symbol))
        if not isinstance(rows, list):
            raise Unavailable(f"Binance position answer for {symbol} is not a list")
        return parse_position(rows, symbol, leverage)

    async def _caught_up(self, state: AccountState, symbol: str) -> bool:
        """No recent order of ours on the symbol, or the stream has reported them and what they moved
        (awaited up to ``stream_wait_s``: Binance pushes both within milliseconds of the fill)."""
        pending = self._shared.recent_own_orders(symbol)
        if not self._shared.recent_own_order(symbol):
            return True
        if not pending:
            return False   # a cancel or the like: nothing to wait for, ask REST
        return await reported_within(self.tuning.stream_wait_s, lambda: state.caught_up_with(symbol, pending)) \
            and state.live

    # ------------------------------------------------------------ settings
    async def prepare_symbol(self, symbol: str, leverage: int, margin_type: str) -> None:
        """Margin type and leverage, set once per (account, symbol) and remembered in MongoDB (weight 1
        each); set again when they differ from what was remembered, when the stream reports a leverage
        changed on Binance, or when no live stream could have reported one, so no entry goes in at a
        leverage the bot was not configured for."""
        margin = MARGIN_TYPES.get(margin_type.upper())
        if margin is None:
            raise InvalidArgument(f"margin type must be ISOLATED or CROSSED, got {margin_type!r}")
        if not 1 <= leverage <= 125:
            raise InvalidArgument(f"leverage must be between 1 and 125, got {leverage}")
        if self._shared.hedge_mode:
            raise errs.hedge_mode_error(f"entry on {symbol}")
        account_id = self._shared.account_id
        state = self._shared.live_state()
        remembered = await self._settings.get(account_id, symbol)
        # Only a live stream would tell us of a leverage changed by hand (ACCOUNT_CONFIG_UPDATE); without
        # one, the settings are sent again before the entry (2 weight; entries are rare).
        if state is not None and remembered == (leverage, margin) and state.leverage(symbol) in (None, leverage):
            return
        client = self.rest.client
        await self.rest.read(
            f"margin type change for {symbol}",
            lambda: client.futures_change_margin_type(symbol=symbol, marginType=margin),
            accept_codes=frozenset({errs.NO_NEED_TO_CHANGE_MARGIN_TYPE}),
        )
        await self.rest.read(f"leverage change for {symbol}",
                             lambda: client.futures_change_leverage(symbol=symbol, leverage=leverage))
        await self._settings.put(account_id, symbol, leverage, margin)
        logger.info("prepared %s: leverage %d, margin %s", symbol, leverage, margin)

    # ------------------------------------------------------------ orders
    async def find_entry(self, symbol: str, client_order_id: str) -> Fill | None:
        return await self._orders.find_entry(symbol, client_order_id)

    async def open_position(self, order: EntryOrder) -> Fill:
        self._shared.order_sent(order.symbol, order.client_order_id)
        return await self._orders.open_position(order)

    async def close_position(self, symbol: str, client_order_id: str, reason: str) -> Fill | None:
        current = await self.position(symbol)
        if current is None:
            return None
        self._shared.order_sent(symbol, client_order_id)
        return await self._orders.close_position(current, client_order_id, reason)

    # ------------------------------------------------------------ protection
    async def protect(self, symbol: str, side: PositionSide, stop_loss: Decimal, take_profit: Decimal,
                      stop_loss_client_id: str, take_profit_client_id: str) -> ProtectiveOrders:
        return await self._protection.protect(symbol, side, stop_loss, take_profit,
                                              stop_loss_client_id, take_profit_client_id)

    async def protective_orders(self, position: ExchangePosition) -> ProtectiveOrders:
        return await self._protection.protective_orders(position)

    async def place_take_profit(self, symbol: str, side: PositionSide, take_profit: Decimal,
                                client_id: str) -> ProtectiveOrders:
        return await self._protection.place_take_profit(symbol, side, take_profit, client_id)

    async def cancel_protective_orders(self, symbol: str) -> None:
        await self._protection.cancel_protective_orders(symbol)

    # ------------------------------------------------------------ records
    async def closed_trade(self, symbol: str, side: PositionSide, open_time_ms: int) -> ClosedTradeRecord | None:
        return await self._history.closed_trade(symbol, side, open_time_ms)

    async def realized_pnl_since(self, symbol: str, since_ms: int) -> Decimal:
        return await self._history.realized_pnl_since(symbol, since_ms)

    async def realized_pnl_by_symbol_since(self, since_ms: int) -> dict[str, Decimal] | None:
        """None: there is no cheaper account-wide read; ask per symbol (in memory when the stream is live)."""
        return None

    async def close(self) -> None:
        await self.rest.close()


async def create_binance_broker(*, api_key: str, api_secret: str, futures_url: str, spot_url: str,
                                settings: SymbolSettings | None = None) -> BinanceFuturesBroker:
    """A broker for one connection: client built at the one seam; the process's server clock synced once."""
    register_secret(api_key)
    register_secret(api_secret)
    if not api_key or not api_secret:
        raise FailedPrecondition("exchange connection has no API key or secret")
    client = ConfiguredAsyncClient(futures_url=futures_url, spot_url=spot_url, api_key=api_key,
                                   api_secret=api_secret, weight_share=EXECUTOR_WEIGHT_SHARE)
    broker = BinanceFuturesBroker(client, shared_state(account_id_of(futures_url, api_key)), settings=settings)
    try:
        await broker.sync_clock()
    except BaseException:
        await client.close_connection()
        raise
    return broker
