"""User-data streams as Binance's USDⓈ-M futures serve them: listenKeys and the WebSocket endpoints.

listenKeys (``/fapi/v1/listenKey``, served by the trading fake through this
class): one active key per account; POST returns it (creating it if needed)
and extends it 60 minutes, PUT extends it or answers -1125, DELETE
invalidates it. A key not extended within 60 minutes of the fake clock
expires: its subscribers get ``listenKeyExpired``, then nothing more. Expiry
is checked on every event and incoming message, and by ``sweep`` (run
periodically while serving).

WebSockets: ``/ws/<listenKey>`` (raw events) and ``/stream?streams=k1/k2``
(each message ``{"stream": <listenKey>, "data": <event>}``); on either a
client may send SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS. Limits from
Binance's docs: 200 streams per connection (the user-data and older market
pages; the current USDⓈ-M market page says 1024, the stricter one is kept),
10 incoming messages per second (more: closed with 1008), 300 connection
attempts per 5 minutes per IP (more: HTTP 429 on the upgrade), 24 h per
connection (fake clock); the server pings (aiohttp heartbeat, real time).
An unknown listenKey in the URL is refused with HTTP 400 -1125, in a
SUBSCRIBE with ``{"error": {"code": 2, ...}}``. DELETE of a key removes it
from every connection without a message (Binance: "closes the stream").

Test hooks: ``expire_listen_key``, ``drop_stream_connections`` (TCP closed,
no close frame), ``pause_events`` / ``resume_events`` / ``drop_next_events``
(events lost, a gap), ``events_sent``. Runs on the serving loop; callers in
other threads go through the owning fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import string
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.binance_events import Event, listen_key_expired
from tests.fakes.binance_limits import Clock, ConnectionAttempts

LISTEN_KEY_VALIDITY_S = 3600.0
MAX_STREAMS_PER_CONNECTION = 200
MAX_INCOMING_PER_S = 10
CONNECTION_LIFETIME_S = 86_400.0
HEARTBEAT_S = 180.0
_KEY_ALPHABET = string.ascii_letters + string.digits


class ListenKeyMissing(Exception):
    """Binance's -1125 "This listenKey does not exist."."""


@dataclass(eq=False)
class ListenKey:
    key: str
    api_key: str
    expires_at: float
    subscribers: set[Connection] = field(default_factory=set)


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    request: web.Request
    combined: bool
    opened_at: float
    keys: dict[str, None] = field(default_factory=dict)     # insertion-ordered set
    inbox: deque[float] = field(default_factory=deque)      # times of recent incoming messages
    outbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    writer: asyncio.Task[None] | None = None
    closing: bool = False

    def send(self, text: str) -> None:
        self.outbox.put_nowait(text)


@dataclass
class _Gate:
    paused: bool = False
    drop_next: int = 0


class UserStreams:
    def __init__(self, clock: Clock, *, connect_limit: ConnectionAttempts | None = None,
                 max_streams: int = MAX_STREAMS_PER_CONNECTION, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.clock = clock
        self.connect_limit = connect_limit or ConnectionAttempts(clock=clock)
        self.max_streams = max_streams
        self.heartbeat_s = heartbeat_s
        self._keys: dict[str, ListenKey] = {}
        self._by_account: dict[str, ListenKey] = {}
        self._connections: set[Connection] = set()
        self._gates: dict[str, _Gate] = {}
        self._sent: dict[str, list[Event]] = {}
        self._dropped: dict[str, list[Event]] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ------------------------------------------------------------ listenKeys
    def start_key(self, api_key: str) -> str:
        """POST: the account's active key (created if none), valid 60 more minutes."""
        current = self._live_key(api_key)
        if current is None:
            current = ListenKey("".join(secrets.choice(_KEY_ALPHABET) for _ in range(64)), api_key, 0.0)
            self._keys[current.key] = current
            self._by_account[api_key] = current
        current.expires_at = self.clock() + LISTEN_KEY_VALIDITY_S
        return current.key

    def keepalive(self, api_key: str, listen_key: str | None) -> None:
        """PUT: extend the account's key (``listenKey`` optional), or -1125."""
        current = self._owned(api_key, listen_key)
        current.expires_at = self.clock() + LISTEN_KEY_VALIDITY_S

    def close_key(self, api_key: str, listen_key: str | None) -> None:
        """DELETE: invalidate the key; connections stop listening to it."""
        self._forget(self._owned(api_key, listen_key))

    def listen_key_of(self, api_key: str) -> str | None:
        current = self._live_key(api_key)
        return current.key if current else None

    def _owned(self, api_key: str, listen_key: str | None) -> ListenKey:
        current = self._live_key(api_key)
        if current is None or (listen_key and listen_key != current.key):
            raise ListenKeyMissing
        return current

    def _live_key(self, api_key: str) -> ListenKey | None:
        current = self._by_account.get(api_key)
        if current is not None and self._expire_if_due(current):
            return None
        return current

    def _valid(self, key: str) -> bool:
        current = self._keys.get(key)
        return current is not None and not self._expire_if_due(current)

    def _expire_if_due(self, current: ListenKey) -> bool:
        if self.clock() < current.expires_at:
            return False
        self._expire(current)
        return True

    def _expire(self, current: ListenKey) -> None:
        text = json.dumps(listen_key_expired(self._now_ms(), current.key))
        for connection in current.subscribers:
            connection.send(self._framed(connection, current.key, text))
        self._forget(current)

    def _forget(self, current: ListenKey) -> None:
        for connection in current.subscribers:
            connection.keys.pop(current.key, None)
        current.subscribers.clear()
        self._keys.pop(current.key, None)
        if self._by_account.get(current.api_key) is current:
            del self._by_account[current.api_key]

    # ---------------------------------------------------------------- events
    def publish(self, api_key: str, event: Event) -> None:
        """Push one event to the account's stream, if it has a live listenKey (else Binance sends nowhere)."""
        current = self._live_key(api_key)
        if current is None:
            return
        gate = self._gates.get(api_key)
        if gate is not None and (gate.paused or gate.drop_next > 0):
            gate.drop_next = max(0, gate.drop_next - 1)
            self._dropped.setdefault(api_key, []).append(event)
            return
        self._sent.setdefault(api_key, []).append(event)
        if not current.subscribers:
            return
        text = json.dumps(event)
        for connection in current.subscribers:
            if self._within_lifetime(connection):
                connection.send(self._framed(connection, current.key, text))

    @staticmethod
    def _framed(connection: Connection, key: str, text: str) -> str:
        return f'{{"stream":"{key}","data":{text}}}' if connection.combined else text

    # ------------------------------------------------------------------ hooks
    def expire_listen_key(self, api_key: str) -> None:
        """Expire the account's key now: subscribers get listenKeyExpired."""
        current = self._by_account.get(api_key)
        if current is not None:
            self._expire(current)

    def drop_stream_connections(self) -> int:
        """Close every connection's TCP socket at once, without a close frame; how many."""
        dropped = list(self._connections)
        for connection in dropped:
            if connection.request.transport is not None:
                connection.request.transport.abort()
        return len(dropped)

    def pause_events(self, api_key: str) -> None:
        self._gates.setdefault(api_key, _Gate()).paused = True

    def resume_events(self, api_key: str) -> None:
        self._gates.setdefault(api_key, _Gate()).paused = False

    def drop_next_events(self, api_key: str, n: int) -> None:
        self._gates.setdefault(api_key, _Gate()).drop_next = n

    def events_sent(self, api_key: str) -> list[Event]:
        """Events pushed to the account's stream (listeners or not), oldest first; dropped ones excluded."""
        return list(self._sent.get(api_key, ()))

    def events_dropped(self, api_key: str) -> list[Event]:
        return list(self._dropped.get(api_key, ()))

    @property
    def ws_connections(self) -> int:
        return len(self._connections)

    @property
    def ws_connection_attempts(self) -> int:
        return self.connect_limit.attempts

    # ------------------------------------------------------------- periodic
    def sweep(self) -> None:
        """Expire keys past their validity; close connections past 24 h (on the serving loop)."""
        for current in list(self._keys.values()):
            self._expire_if_due(current)
        for connection in list(self._connections):
            self._within_lifetime(connection)

    async def close_all(self) -> None:
        for connection in list(self._connections):
            with contextlib.suppress(Exception):
                await connection.ws.close()

    def _within_lifetime(self, connection: Connection) -> bool:
        if self.clock() - connection.opened_at < CONNECTION_LIFETIME_S:
            return True
        self._close_soon(connection, 1000, b"connection lifetime (24 h) reached")
        return False

    def _close_soon(self, connection: Connection, code: int, message: bytes) -> None:
        asyncio.get_running_loop().create_task(self._close(connection, code, message))

    @staticmethod
    async def _close(connection: Connection, code: int, message: bytes) -> None:
        """Send what is queued (answers, a listenKeyExpired), then the close frame."""
        if connection.closing:
            return
        connection.closing = True
        connection.outbox.put_nowait(None)
        if connection.writer is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(connection.writer), 2.0)
        with contextlib.suppress(Exception):
            await connection.ws.close(code=code, message=message)

    # --------------------------------------------------------------- serving
    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/ws", self._raw)
        router.add_get("/ws/{key}", self._raw)
        router.add_get("/stream", self._combined)

    async def _raw(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info.get("key")
        return await self._serve(request, [key] if key else [], combined=False)

    async def _combined(self, request: web.Request) -> web.StreamResponse:
        keys = [k for k in request.query.get("streams", "").split("/") if k]
        return await self._serve(request, keys, combined=True)

    async def _serve(self, request: web.Request, keys: list[str], *, combined: bool) -> web.StreamResponse:
        if not self.connect_limit.attempt():
            return web.json_response({"code": -1003, "msg": "Too many connection attempts; at most "
                                      f"{self.connect_limit.limit} per 5 minutes per IP."}, status=429,
                                     headers={"Retry-After": "60"})
        if len(keys) > self.max_streams:
            return web.json_response({"code": 2, "msg": f"Invalid request: at most {self.max_streams} streams "
                                      "per connection."}, status=400)
        if not all(self._valid(key) for key in keys):
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s)
        await ws.prepare(request)
        connection = Connection(ws, request, combined, self.clock())
        self._connections.add(connection)
        self._subscribe(connection, keys)
        connection.writer = asyncio.get_running_loop().create_task(self._write(connection))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                refusal = self._refusal(connection)
                if refusal is not None:
                    await self._close(connection, *refusal)
                    break
                connection.send(json.dumps(self._control(connection, message.data)))
        finally:
            self._connections.discard(connection)
            for key in connection.keys:
                if key in self._keys:
                    self._keys[key].subscribers.discard(connection)
            connection.writer.cancel()
        return ws

    def _refusal(self, connection: Connection) -> tuple[int, bytes] | None:
        """Why an incoming message ends the connection (past 24 h, or the 11th within a second), if it does."""
        now = self.clock()
        if now - connection.opened_at >= CONNECTION_LIFETIME_S:
            return 1000, b"connection lifetime (24 h) reached"
        connection.inbox.append(now)
        while connection.inbox and now - connection.inbox[0] >= 1.0:
            connection.inbox.popleft()
        if len(connection.inbox) > MAX_INCOMING_PER_S:
            return 1008, b"Too many messages"
        return None

    @staticmethod
    async def _write(connection: Connection) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while (text := await connection.outbox.get()) is not None:
                await connection.ws.send_str(text)

    def _subscribe(self, connection: Connection, keys: list[str]) -> None:
        for key in keys:
            connection.keys[key] = None
            self._keys[key].subscribers.add(connection)

    def _control(self, connection: Connection, text: str) -> dict[str, Any]:
        """One SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS request -> its answer."""
        try:
            request = json.loads(text)
        except ValueError:
            return {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        if not isinstance(request, dict):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected an object"}, "id": None}
        request_id, method, params = request.get("id"), request.get("method"), request.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(connection.keys), "id": request_id}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": request_id}
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return {"error": {"code": 1, "msg": "Invalid value type: params must be a list of strings"},
                    "id": request_id}
        if method == "UNSUBSCRIBE":
            for key in params:
                connection.keys.pop(key, None)
                if key in self._keys:
                    self._keys[key].subscribers.discard(connection)
            return {"result": None, "id": request_id}
        new = [key for key in dict.fromkeys(params) if key not in connection.keys]
        if len(connection.keys) + len(new) > self.max_streams:
            return {"error": {"code": 2, "msg": f"Invalid request: a connection listens to at most "
                              f"{self.max_streams} streams"}, "id": request_id}
        if not all(self._valid(key) for key in new):
            return {"error": {"code": 2, "msg": "Invalid request: unknown listenKey"}, "id": request_id}
        self._subscribe(connection, new)
        return {"result": None, "id": request_id}
