"""First contact and reconciles: each live account's stream started once, its state loaded once per gap.

Per account, bringing it up costs one listenKey (weight 1), one
``/fapi/v3/account`` snapshot (5) and one ``openAlgoOrders`` read per symbol
with a position (1). After that its reads cost nothing: balances, positions,
stops and fills arrive on the user-data stream. A reconcile (the same
snapshot) follows every gap the hub reports (disconnect, expired key), for
that account alone, and only once its stream is live again, so no event can
fall between the snapshot and the stream.

The snapshot is taken by whoever needs it first: a cycle that finds the
account's stream live but not reconciled takes it if the weight is there
right now (it needs the account anyway), otherwise a worker does, waiting for
weight as long as it takes. Until then the account's bots are served without
decisions (``AccountNotReady``: no entry, the stored position reported, the
stop audit waiting). Snapshots outrank today's-PnL reads, which use the
governor's background share; orders weigh nothing on the IP, so a tick's
protective orders always go out.

Replicas: each executor process holds the streams of the accounts its cycles
touch. Two replicas serving one account both hold a stream on the same
listenKey (Binance hands out one active key per account), costing one more
keepalive per 30 minutes and one more snapshot per gap; orders stay single
because the symbol lease in MongoDB serialises cycles across replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from services.common.errors import ResourceExhausted, TradebotError
from services.common.weight_governor import Priority, deadline_var, priority_var
from services.executor.binance.account import AccountShared
from services.executor.binance.account_state import AccountState, reported_within
from services.executor.binance.rest import AccountRest, RestListenKeys
from services.executor.binance.user_stream import UserStreamHub
from services.executor.binance.records import account_rows, dec, hedge_positions_open

log = logging.getLogger(__name__)

FIRST_CONTACT_WAIT_S = 3.0      # a new account's first cycle waits this long for its stream before using REST
STREAM_FALLBACK_S = 120.0       # a stream not live after this long: the account is read over REST meanwhile
RETRY_DELAY_S = 5.0
RECONCILE_WORKERS = 4


class _Listener:
    """The account's state, plus a reconcile whenever the stream is (again) live and the state is not."""

    def __init__(self, streams: AccountStreams, account_id: str, state: AccountState) -> None:
        self._streams, self._account_id, self._state = streams, account_id, state

    def on_live(self) -> None:
        self._state.on_live()
        if not self._state.live:
            self._streams.schedule(self._account_id)

    def on_event(self, event: Mapping[str, Any]) -> None:
        self._state.on_event(event)

    def on_gap(self, reason: str) -> None:
        log.info("user-data stream gap; the account is reconciled once its stream is back",
                 extra={"account": self._account_id, "reason": reason})
        self._state.on_gap(reason)


class AccountStreams:
    """Every live account's stream and reconciles in this process."""

    def __init__(self, hub: UserStreamHub, *, workers: int = RECONCILE_WORKERS) -> None:
        self.hub = hub
        self._accounts: dict[str, tuple[AccountShared, AccountRest]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._first_contact: dict[str, asyncio.Event] = {}   # set once a new account's stream had its chance
        self._watched_at: dict[str, float] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers = workers
        self.reconciles = 0

    # ------------------------------------------------------------ accounts
    async def watch(self, rest: AccountRest) -> None:
        """Start the account's stream (once per process) and give its first cycle a moment to see it live."""
        shared = rest.shared
        account_id = shared.account_id
        known = self._accounts.get(account_id)
        if known is not None:
            if known[1] is not rest and shared.state is not None:
                # A rebuilt broker (edited secret) takes over, its keepalives too: the old client is closed.
                self._accounts[account_id] = (shared, rest)
                await self.hub.add(account_id, RestListenKeys(rest), _Listener(self, account_id, shared.state))
            return
        self._start_workers()
        offset = rest.client.server_clock
        state = shared.state or AccountState(clock=lambda: time.time() + offset.offset_ms / 1000)
        shared.state = state
        self._accounts[account_id] = (shared, rest)
        first_contact = self._first_contact[account_id] = asyncio.Event()
        self._watched_at[account_id] = time.monotonic()
        self._spawn(self._add(account_id, rest, state))
        try:
            await reported_within(FIRST_CONTACT_WAIT_S, lambda: self.hub.is_live(account_id), poll_s=0.05)
        finally:
            first_contact.set()

    async def _add(self, account_id: str, rest: AccountRest, state: AccountState) -> None:
        _bringing_up()
        await self.hub.add(account_id, RestListenKeys(rest), _Listener(self, account_id, state))

    async def ensure_reconciled(self, shared: AccountShared) -> bool:
        """For a cycle: reconcile now if the stream is live and the state is not; True when the state is live."""
        state = shared.state
        if state is None:
            return False
        if state.live:
            return True
        first_contact = self._first_contact.get(shared.account_id)
        if first_contact is not None and not first_contact.is_set():
            # Another bot of this account is giving its new stream a moment: one snapshot serves both,
            # where reading now would cost a REST read and then the reconcile's.
            await first_contact.wait()
        if not self.hub.is_live(shared.account_id):
            return False
        await self._reconcile(shared.account_id)
        return state.live

    async def forget(self, account_id: str) -> None:
        """The account's broker is gone (its bots stopped): close its stream; a later ``watch`` starts afresh."""
        entry = self._accounts.pop(account_id, None)
        if entry is None:
            return
        if entry[0].state is not None:
            entry[0].state.on_gap("stream closed with its broker")   # never trusted again without a stream
        for table in (self._locks, self._first_contact, self._watched_at):
            table.pop(account_id, None)
        await self.hub.remove(account_id)

    # ------------------------------------------------------------ reconcile
    def coming_up(self, account_id: str) -> bool:
        """The account's stream is not live yet but still has time to come up (a WebSocket that cannot
        come up at all must not leave the account unread: past ``STREAM_FALLBACK_S`` REST serves it)."""
        since = self._watched_at.get(account_id)
        return (since is not None and not self.hub.is_live(account_id)
                and time.monotonic() - since < STREAM_FALLBACK_S)

    def queued(self) -> int:
        return len(self._queued)

    def schedule(self, account_id: str) -> None:
        if account_id not in self._queued:
            self._queued.add(account_id)
            self._queue.put_nowait(account_id)

    def _start_workers(self) -> None:
        if not any(not task.done() for task in self._tasks):
            for _ in range(self._workers):
                self._spawn(self._work())

    async def _work(self) -> None:
        _bringing_up()
        while True:
            account_id = await self._queue.get()
            self._queued.discard(account_id)
            try:
                await self._reconcile(account_id)
            except ResourceExhausted as error:
                await asyncio.sleep(max(error.retry_after, 1.0))
                self.schedule(account_id)
            except TradebotError as error:
                log.warning("reconcile failed; trying again", extra={"account": account_id, "error": error.message})
                await asyncio.sleep(RETRY_DELAY_S)
                self.schedule(account_id)
            except Exception:
                log.exception("reconcile failed unexpectedly", extra={"account": account_id})
                await asyncio.sleep(RETRY_DELAY_S)
                self.schedule(account_id)

    async def _reconcile(self, account_id: str) -> None:
        """Snapshot the account over REST while its stream buffers events (single-flight per account)."""
        entry = self._accounts.get(account_id)
        if entry is None:
            return   # forgotten while queued
        shared, rest = entry
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            state = shared.state
            if state is None or state.live or not self.hub.is_live(account_id):
                return
            begun = state.begin_reconcile()
            client = rest.client
            answer = await rest.read("account snapshot", lambda: client.futures_account(version=3))
            _, rows = account_rows(answer)
            if hedge_positions_open(rows):
                shared.hedge_mode = True
            symbols = sorted({str(row["symbol"]) for row in rows if dec(row, "positionAmt") != 0})
            algo: list[dict[str, Any]] = []
            for symbol in symbols:
                found = await rest.read(f"open algo orders of {symbol}",
                                        lambda s=symbol: client.futures_get_open_algo_orders(symbol=s))
                algo.extend(row for row in found or [] if row.get("symbol", symbol) == symbol)
            if not state.load_snapshot(answer, algo, algo_symbols=symbols, begun=begun):
                # The stream had a gap while this snapshot was read: it may predate what the gap lost.
                self.schedule(account_id)
                return
            shared.forget_account()
            self.reconciles += 1

    # ------------------------------------------------------------ plumbing
    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int]:
        live = sum(1 for shared, _ in self._accounts.values() if shared.state is not None and shared.state.live)
        return {**self.hub.stats(), "accounts": len(self._accounts), "reconciledAccounts": live,
                "reconciles": self.reconciles, "queued": len(self._queued)}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close()


def _bringing_up() -> None:
    """This task's requests bring accounts up: no caller deadline (it waits for weight on its own clock,
    ``BINANCE_WEIGHT_MAX_WAIT_SECONDS``), and only the governor's bring-up share, so the entries and
    protective orders of accounts already up are never starved by thousands of snapshots."""
    deadline_var.set(None)
    priority_var.set(Priority.BRING_UP)
