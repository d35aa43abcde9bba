"""Builds the broker for an exchange connection: paper, or live/testnet Binance.

This is the one place credentials are decrypted. Live brokers hold an HTTP
client, so they are kept for a short while per connection (keyed by the
connection id and its encrypted tokens, so edited keys take effect at once)
and closed when they expire or the server stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from services.common.errors import FailedPrecondition
from services.executor.binance.bring_up import AccountStreams
from services.executor.binance.symbol_settings import SymbolSettings
from services.executor.binance.user_stream import UserStreamHub
from services.executor.brokers.base import Broker
from services.executor.brokers.paper import PaperBroker, ensure_paper_indexes
from services.executor.connections import ExchangeConnection
from services.executor.credentials import CredentialVault
from services.executor.settings import ExecutorSettings

log = logging.getLogger(__name__)

LIVE_BROKER_TTL_SECONDS = 600.0
EXPIRY_SCAN_EVERY_SECONDS = 30.0   # scanning thousands of cached brokers on every cycle cost real CPU


@dataclass
class _CachedBroker:
    broker: Broker
    fingerprint: tuple[str | None, str | None]
    expires_at: float


class BrokerFactory:
    def __init__(self, db: AsyncDatabase, vault: CredentialVault, settings: ExecutorSettings) -> None:
        self._db = db
        self._vault = vault
        self._settings = settings
        self._live: dict[str, _CachedBroker] = {}
        self._lock = asyncio.Lock()
        self._paper_indexes_ready = False
        self._paper_indexes_lock = asyncio.Lock()
        self._symbol_settings = SymbolSettings(db)
        self._streams: dict[str, AccountStreams] = {}   # by stream root: live and testnet are separate
        self._next_expiry_scan = 0.0

    async def broker_for(self, connection: ExchangeConnection) -> Broker:
        if connection.mode == "paper":
            if not self._paper_indexes_ready:
                async with self._paper_indexes_lock:   # the first concurrent bots: one createIndexes each
                    if not self._paper_indexes_ready:
                        await ensure_paper_indexes(self._db)
                        self._paper_indexes_ready = True
            # Decrypting proves the stored tokens are sound even though paper never signs.
            if connection.api_key_token and connection.api_secret_token:
                self._vault.decrypt_pair(connection.api_key_token, connection.api_secret_token)
            return PaperBroker(
                self._db,
                connection.id,
                initial_balance=self._settings.paper_initial_balance,
                taker_fee=self._settings.paper_taker_fee,
            )
        return await self._live_broker(connection)

    async def _live_broker(self, connection: ExchangeConnection) -> Broker:
        fingerprint = (connection.api_key_token, connection.api_secret_token)
        async with self._lock:
            await self._expire(time.monotonic())
            cached = self._live.get(connection.id)
            if cached is not None and cached.fingerprint == fingerprint:
                # Sliding expiry: only a broker idle for the whole TTL is closed, never one in use.
                cached.expires_at = time.monotonic() + LIVE_BROKER_TTL_SECONDS
                return cached.broker
            replaced = None
            if cached is not None:   # the connection's keys were edited
                self._live.pop(connection.id)
                replaced = cached.broker
            broker: Broker | None = None
            try:
                broker, futures_url = await self._new_live_broker(connection)
                self._live[connection.id] = _CachedBroker(broker, fingerprint,
                                                          time.monotonic() + LIVE_BROKER_TTL_SECONDS)
            finally:
                if replaced is not None:
                    await self._retire(replaced, broker)
        if self._settings.user_streams:
            streams = self._streams_for(self._settings.ws_url_for(futures_url))
            broker.streams = streams
            await streams.watch(broker.rest)
        return broker

    async def _new_live_broker(self, connection: ExchangeConnection) -> tuple[Broker, str]:
        if not connection.api_key_token or not connection.api_secret_token:
            raise FailedPrecondition("exchange connection has no API key")
        credentials = self._vault.decrypt_pair(connection.api_key_token, connection.api_secret_token)
        try:
            from services.executor.binance.broker import create_binance_broker
        except ImportError:
            raise FailedPrecondition("live trading not available") from None
        futures_url = (
            self._settings.binance_futures_url
            if connection.mode == "live"
            else self._settings.binance_futures_testnet_url
        )
        broker = await create_binance_broker(
            api_key=credentials.api_key,
            api_secret=credentials.api_secret,
            futures_url=futures_url,
            spot_url=self._settings.binance_spot_url,
            settings=self._symbol_settings,
        )
        return broker, futures_url

    @staticmethod
    async def _retire(replaced: Broker, successor: Broker | None) -> None:
        """Close a broker that expired (``successor`` None) or whose connection's keys were edited. Unless the
        successor serves the same account (a new secret for the same key: its watch() takes the stream over),
        the account's stream is closed first, while the client can still delete the listenKey; else the
        keepalives would go on through a closed client."""
        streams = getattr(replaced, "streams", None)
        account = replaced.shared.account_id   # type: ignore[attr-defined]
        if streams is not None and (successor is None or successor.shared.account_id != account):  # type: ignore[attr-defined]
            await streams.forget(account)
        await _close_quietly(replaced)

    def _streams_for(self, ws_root: str) -> AccountStreams:
        streams = self._streams.get(ws_root)
        if streams is None:
            streams = self._streams[ws_root] = AccountStreams(UserStreamHub(ws_root))
        return streams

    def stream_stats(self) -> dict[str, dict[str, int]]:
        return {root: streams.stats() for root, streams in self._streams.items()}

    async def _expire(self, now: float) -> None:
        """Close brokers idle for the TTL (their bots stopped), and their accounts' streams with them: a stream
        left behind would keep its key alive through a closed client."""
        if now < self._next_expiry_scan:
            return
        self._next_expiry_scan = now + EXPIRY_SCAN_EVERY_SECONDS
        for connection_id, cached in list(self._live.items()):
            if cached.expires_at <= now:
                self._live.pop(connection_id)
                await self._retire(cached.broker, None)

    async def close(self) -> None:
        async with self._lock:
            brokers = [cached.broker for cached in self._live.values()]
            self._live.clear()
            streams = list(self._streams.values())
            self._streams.clear()
        for hub in streams:
            try:
                await hub.close()
            except Exception:  # closing must not stop the shutdown
                log.warning("closing the user-data streams failed", exc_info=True)
        for broker in brokers:
            await _close_quietly(broker)


async def _close_quietly(broker: Broker) -> None:
    try:
        await broker.close()
    except Exception:  # closing must not fail a cycle; the client is dropped either way
        log.warning("closing a broker failed", exc_info=True)
