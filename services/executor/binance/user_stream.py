"""User-data streams: every live account's listenKey on a few shared combined-stream WebSocket connections.

Binance's rules (USDⓈ-M futures), and how they are kept:
* a listenKey lives 60 minutes after creation or its last ``PUT`` (weight 1):
  each is kept alive every ``keepalive_every_s`` (30 min by default), the
  first keepalives spread over that interval so 2,000 keys do not renew at
  once; ``-1125`` (gone) or a ``listenKeyExpired`` event gets a new key;
* at most 200 streams per connection: accounts fill connections up to
  ``streams_per_connection``, so 2,000 accounts need 10 connections;
* at most 10 incoming messages a second per connection: keys are added with
  ``SUBSCRIBE`` messages carrying up to ``subscribe_batch`` keys each, at most
  ``messages_per_second`` (5) a second;
* at most 300 connection attempts per 5 minutes per IP: every (re)connect
  takes a slot of ``connects_per_5_min`` (250, a margin for other replicas),
  and reconnects back off exponentially with jitter;
* connections end after 24 hours: each is replaced before
  ``max_connection_age_s`` (23 h);
* the server pings every 3 minutes: ``websockets`` answers by itself.

Whatever may have lost events (a disconnect, an expired key, a rotation)
is reported to the account's listener as a gap, and ``on_live`` follows once
its key is subscribed again: the account state reconciles over REST then.
listenKeys grant read access to the account's stream: they are registered as
secrets (never logged) and accounts are named by their hash in the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect

from services.common.errors import ResourceExhausted
from services.common.jsonlog import forget_secret, register_secret

log = logging.getLogger(__name__)

CONNECT_WINDOW_S = 300.0


class ListenKeyGone(Exception):
    """Binance answered -1125: the key no longer exists; POST a new one."""


class ListenKeys(Protocol):
    async def create(self) -> str: ...
    async def keepalive(self, listen_key: str) -> None: ...
    async def close(self, listen_key: str) -> None: ...


class StreamListener(Protocol):
    def on_live(self) -> None: ...
    def on_event(self, event: Mapping[str, Any]) -> None: ...
    def on_gap(self, reason: str) -> None: ...


@dataclass
class _Account:
    account_id: str
    keys: ListenKeys
    listener: StreamListener
    key: str | None = None
    connection: _Connection | None = None
    live: bool = False
    keepalive_due: float = 0.0


@dataclass
class _Connection:
    number: int
    accounts: dict[str, _Account] = field(default_factory=dict)   # listenKey -> account
    pending: set[str] = field(default_factory=set)                 # keys to SUBSCRIBE once open
    removed: set[str] = field(default_factory=set)                 # keys to UNSUBSCRIBE
    socket: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: dict[int, list[str]] = field(default_factory=dict)  # SUBSCRIBE id -> keys


class UserStreamHub:
    def __init__(self, ws_root: str, *, streams_per_connection: int = 200, keepalive_every_s: float = 30 * 60,
                 max_connection_age_s: float = 23 * 3600, connects_per_5_min: int = 250,
                 subscribe_batch: int = 50, messages_per_second: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._root = ws_root.rstrip("/")
        self._per_connection = streams_per_connection
        self._keepalive_every = keepalive_every_s
        self._max_age = max_connection_age_s
        self._connects_limit = connects_per_5_min
        self._batch = subscribe_batch
        self._message_gap = 1.0 / messages_per_second
        self._clock = clock
        self._accounts: dict[str, _Account] = {}
        self._connections: list[_Connection] = []
        self._connects: deque[float] = deque()
        self._connect_lock = asyncio.Lock()
        self._next_message_id = 1
        self._keepalive_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.reconnects = 0
        self.gaps = 0

    # ------------------------------------------------------------ public
    async def add(self, account_id: str, keys: ListenKeys, listener: StreamListener) -> None:
        """Start the account's stream (idempotent): its key is created and subscribed in the background."""
        account = self._accounts.get(account_id)
        if account is not None:
            account.keys, account.listener = keys, listener
            return
        account = self._accounts[account_id] = _Account(account_id, keys, listener)
        account.keepalive_due = self._clock() + self._keepalive_every * random.uniform(0.5, 1.0)
        if self._keepalive_task is None:
            self._keepalive_task = self._spawn(self._keepalive_loop())
        await self._new_key(account)

    async def remove(self, account_id: str) -> None:
        account = self._accounts.pop(account_id, None)
        if account is None:
            return
        key = account.key
        self._detach(account)
        if key is not None:
            with contextlib.suppress(Exception):
                await account.keys.close(key)
            forget_secret(key)

    def is_live(self, account_id: str) -> bool:
        account = self._accounts.get(account_id)
        return account is not None and account.live

    def stats(self) -> dict[str, int]:
        now = self._clock()
        return {"connections": sum(1 for c in self._connections if c.socket is not None),
                "streams": sum(len(c.accounts) for c in self._connections),
                "liveAccounts": sum(1 for a in self._accounts.values() if a.live),
                "connectsLast5Min": sum(1 for t in self._connects if now - t < CONNECT_WINDOW_S),
                "reconnects": self.reconnects, "gaps": self.gaps}

    async def close(self) -> None:
        self._closed = True
        for connection in self._connections:
            if connection.socket is not None:
                with contextlib.suppress(Exception):
                    await connection.socket.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ keys
    async def _new_key(self, account: _Account, attempt: int = 0) -> None:
        """Create (or fetch the active) key and put it on a connection; on failure, retry later."""
        try:
            key = await account.keys.create()
        except ResourceExhausted as error:   # the weight budget: room comes back within the minute
            delay = max(error.retry_after, 1.0) + random.uniform(0.0, 5.0)
            self._spawn(self._later(delay, self._new_key(account, attempt)))
            return
        except Exception as error:   # REST trouble (exchange down): try again later, backing off
            delay = min(300.0, 5.0 * 2 ** attempt) * random.uniform(0.5, 1.0)
            log.warning("listenKey creation failed; retrying", extra={"account": account.account_id,
                                                                       "error": str(error)[:200], "retryInSeconds": round(delay)})
            self._spawn(self._later(delay, self._new_key(account, attempt + 1)))
            return
        if self._accounts.get(account.account_id) is not account:
            return   # removed meanwhile
        if account.key == key and account.connection is not None:
            return
        self._detach(account)
        if account.key != key:
            register_secret(key)
            forget_secret(account.key)   # replaced, so dead: the redaction set holds one key per account
        account.key = key
        connection = self._connection_with_room()
        connection.accounts[key] = account
        account.connection = connection
        connection.pending.add(key)
        connection.wake.set()
        if connection.task is None:
            connection.task = self._spawn(self._run(connection))

    def _detach(self, account: _Account) -> None:
        connection, key = account.connection, account.key
        if connection is not None and key is not None:
            connection.accounts.pop(key, None)
            connection.pending.discard(key)
            if connection.socket is not None:
                connection.removed.add(key)
                connection.wake.set()
        account.connection, account.live = None, False

    def _connection_with_room(self) -> _Connection:
        for connection in self._connections:
            if len(connection.accounts) < self._per_connection:
                return connection
        connection = _Connection(len(self._connections) + 1)
        self._connections.append(connection)
        return connection

    def _gap(self, account: _Account, reason: str) -> None:
        account.live = False
        self.gaps += 1
        try:
            account.listener.on_gap(reason)
        except Exception:
            log.exception("stream listener failed on a gap", extra={"account": account.account_id})

    async def _renew(self, account: _Account, reason: str) -> None:
        """The key is gone (expired, -1125): a gap, then a new key subscribed."""
        self._gap(account, reason)
        self._detach(account)
        forget_secret(account.key)
        account.key = None
        await self._new_key(account)

    async def _keepalive_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(60.0, self._keepalive_every / 4))
            now = self._clock()
            due = [a for a in self._accounts.values() if a.key is not None and a.keepalive_due <= now]
            for account in due:
                key = account.key
                assert key is not None
                try:
                    await account.keys.keepalive(key)
                    account.keepalive_due = now + self._keepalive_every
                except ListenKeyGone:
                    await self._renew(account, "listenKey no longer exists")
                except Exception as error:   # try again at the next pass; the key lives 60 min
                    log.warning("listenKey keepalive failed", extra={"account": account.account_id,
                                                                      "error": str(error)[:200]})

    # ------------------------------------------------------------ connections
    async def _connect_slot(self) -> None:
        """One of the IP's connection attempts per 5 minutes (``connects_per_5_min``), waiting if needed."""
        async with self._connect_lock:
            while True:
                now = self._clock()
                while self._connects and now - self._connects[0] >= CONNECT_WINDOW_S:
                    self._connects.popleft()
                if len(self._connects) < self._connects_limit:
                    self._connects.append(now)
                    return
                await asyncio.sleep(CONNECT_WINDOW_S - (now - self._connects[0]) + 0.1)

    async def _run(self, connection: _Connection) -> None:
        failures = 0
        while not self._closed and connection.accounts:
            await self._connect_slot()
            opened = self._clock()
            first = next(iter(connection.accounts))
            try:
                async with connect(f"{self._root}/stream?streams={first}", ping_interval=60, ping_timeout=60,
                                   max_size=2**22, open_timeout=10) as socket:
                    connection.socket = socket
                    failures = 0
                    connection.pending = set(connection.accounts) - {first}
                    connection.removed.clear()
                    self._mark_live([first], connection)
                    await self._serve(connection, socket, opened)
            except asyncio.CancelledError:
                raise
            except (OSError, websockets.WebSocketException, TimeoutError) as error:
                failures += 1
                log.warning("user-data stream connection lost", extra={"connection": connection.number,
                                                                        "error": type(error).__name__})
            finally:
                connection.socket = None
                connection.in_flight.clear()
            for account in list(connection.accounts.values()):
                self._gap(account, "stream disconnected")
            if self._closed:
                return
            self.reconnects += 1
            await asyncio.sleep(min(60.0, 0.5 * 2 ** failures) * random.uniform(0.5, 1.0) if failures else 0.1)

    async def _serve(self, connection: _Connection, socket: ClientConnection, opened: float) -> None:
        reader = asyncio.ensure_future(self._read(connection, socket))
        try:
            while not reader.done():
                if self._clock() - opened >= self._max_age:
                    log.info("rotating a user-data stream connection before Binance's 24 h limit",
                             extra={"connection": connection.number})
                    return
                if connection.removed:
                    keys, connection.removed = sorted(connection.removed), set()
                    await self._send(socket, "UNSUBSCRIBE", keys[: self._batch])
                    connection.removed.update(keys[self._batch:])
                    await asyncio.sleep(self._message_gap)
                    continue
                if connection.pending:
                    keys = sorted(connection.pending)[: self._batch]
                    connection.pending.difference_update(keys)
                    message_id = await self._send(socket, "SUBSCRIBE", keys)
                    connection.in_flight[message_id] = keys
                    await asyncio.sleep(self._message_gap)
                    continue
                connection.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(connection.wake.wait()), timeout=5.0)
            reader.result()   # raises what ended the reading
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _send(self, socket: ClientConnection, method: str, keys: list[str]) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        await socket.send(json.dumps({"method": method, "params": keys, "id": message_id}))
        return message_id

    async def _read(self, connection: _Connection, socket: ClientConnection) -> None:
        async for raw in socket:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "id" in message and ("result" in message or "error" in message):
                keys = connection.in_flight.pop(int(message["id"]), [])
                if "error" in message:
                    log.warning("SUBSCRIBE refused; retrying those keys", extra={"connection": connection.number})
                    connection.pending.update(k for k in keys if k in connection.accounts)
                else:
                    self._mark_live(keys, connection)
                continue
            key, data = message.get("stream"), message.get("data")
            account = connection.accounts.get(str(key)) if key else None
            if account is None or not isinstance(data, dict):
                continue
            if data.get("e") == "listenKeyExpired":
                self._spawn(self._renew(account, "listenKey expired"))
                continue
            try:
                account.listener.on_event(data)
            except Exception:
                log.exception("stream listener failed on an event", extra={"account": account.account_id})
                self._gap(account, "an event could not be applied")
                account.live = True   # still subscribed: a reconcile follows on_live
                self._notify_live(account)

    def _mark_live(self, keys: list[str], connection: _Connection) -> None:
        for key in keys:
            account = connection.accounts.get(key)
            if account is not None and not account.live:
                account.live = True
                self._notify_live(account)

    def _notify_live(self, account: _Account) -> None:
        try:
            account.listener.on_live()
        except Exception:
            log.exception("stream listener failed going live", extra={"account": account.account_id})

    # ------------------------------------------------------------ plumbing
    async def _later(self, delay: float, coroutine: Any) -> None:
        await asyncio.sleep(delay)
        if not self._closed:
            await coroutine

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
