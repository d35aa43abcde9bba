"""Where the paper broker keeps its account, positions, fills and trades.

``PaperStore`` is the small storage seam of ``paper.PaperBroker``: the
broker's rules (fills, fees, SL/TP triggering, margin) are written once, and
the documents they read and write live either in MongoDB
(``MongoPaperStore``, the executor's ``mode: paper``) or in process memory
(``MemoryPaperStore``, used by backtests, which need no database and run
~10^5 cycles). Documents have the same shape in both: amounts are decimal
strings, times epoch milliseconds.
"""

from __future__ import annotations

import bisect
import copy
from decimal import Decimal
from typing import Any, Protocol

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Document = dict[str, Any]


class PaperStore(Protocol):
    async def get_or_create_account(self, account_id: str, initial: Document) -> Document:
        """The account document, created from ``initial`` when missing (a racing creator is fine)."""

    async def compare_and_set_balance(self, account_id: str, version: int, wallet: str, locked: str) -> bool:
        """Write the balances if the account is still at ``version`` (then version + 1); False if it moved on."""

    async def set_symbol_settings(self, account_id: str, symbol: str, settings: Document) -> bool:
        """Store the symbol's leverage and margin type; False when the account does not exist yet."""

    async def get_position(self, key: str) -> Document | None: ...

    async def list_positions(self, connection_id: str) -> list[Document]:
        """Every open position of the account, in one read."""

    async def insert_position(self, doc: Document) -> bool:
        """False when a position with this ``_id`` already exists (the one-position-per-symbol claim)."""

    async def update_position(self, key: str, open_time_ms: int | None, fields: Document) -> None:
        """Set ``fields`` on the position (only the one opened at ``open_time_ms`` when given)."""

    async def unset_position_fields(self, key: str, names: tuple[str, ...]) -> None: ...

    async def take_position(self, key: str, open_time_ms: int) -> Document | None:
        """Delete and return the position opened at ``open_time_ms``; None if someone else took it."""

    async def delete_position(self, key: str, entry_client_order_id: str) -> None: ...

    async def get_fill(self, fill_id: str, kind: str) -> Document | None: ...

    async def insert_fill(self, doc: Document) -> None:
        """Record a fill; an existing ``_id`` is kept (a reused client id)."""

    async def insert_trade(self, doc: Document) -> None: ...

    async def first_trade_opened_since(self, connection_id: str, symbol: str, side: str,
                                       open_time_ms: int) -> Document | None: ...

    async def latest_closed_trade(self, connection_id: str, symbol: str, side: str) -> Document | None: ...

    async def realized_pnl_since(self, connection_id: str, symbol: str, since_ms: int) -> Decimal: ...

    async def realized_pnl_by_symbol_since(self, connection_id: str, since_ms: int) -> dict[str, Decimal]:
        """Every symbol's ``realized_pnl_since`` in one read."""


class MongoPaperStore:
    """Collections ``paperaccounts``, ``paperpositions``, ``paperfills``, ``papertrades``."""

    def __init__(self, db: AsyncDatabase) -> None:
        self._accounts = db["paperaccounts"]
        self._positions = db["paperpositions"]
        self._fills = db["paperfills"]
        self._trades = db["papertrades"]

    async def get_or_create_account(self, account_id: str, initial: Document) -> Document:
        try:
            return await self._upsert_account(account_id, initial)
        except DuplicateKeyError:  # two first-ever reads raced on the upsert: the other one created it
            return await self._upsert_account(account_id, initial)

    async def _upsert_account(self, account_id: str, initial: Document) -> Document:
        doc = await self._accounts.find_one_and_update(
            {"_id": account_id}, {"$setOnInsert": initial}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert doc is not None
        return doc

    async def compare_and_set_balance(self, account_id: str, version: int, wallet: str, locked: str) -> bool:
        updated = await self._accounts.find_one_and_update(
            {"_id": account_id, "version": version},
            {"$set": {"walletBalance": wallet, "lockedMargin": locked, "version": version + 1}},
        )
        return updated is not None

    async def set_symbol_settings(self, account_id: str, symbol: str, settings: Document) -> bool:
        result = await self._accounts.update_one({"_id": account_id}, {"$set": {f"symbols.{symbol}": settings}})
        return result.matched_count == 1

    async def get_position(self, key: str) -> Document | None:
        return await self._positions.find_one({"_id": key})

    async def list_positions(self, connection_id: str) -> list[Document]:
        return await self._positions.find({"connectionId": connection_id}).to_list(None)

    async def insert_position(self, doc: Document) -> bool:
        try:
            await self._positions.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def update_position(self, key: str, open_time_ms: int | None, fields: Document) -> None:
        query: Document = {"_id": key} if open_time_ms is None else {"_id": key, "openTimeMs": open_time_ms}
        await self._positions.update_one(query, {"$set": fields})

    async def unset_position_fields(self, key: str, names: tuple[str, ...]) -> None:
        await self._positions.update_one({"_id": key}, {"$unset": dict.fromkeys(names, "")})

    async def take_position(self, key: str, open_time_ms: int) -> Document | None:
        return await self._positions.find_one_and_delete({"_id": key, "openTimeMs": open_time_ms})

    async def delete_position(self, key: str, entry_client_order_id: str) -> None:
        await self._positions.delete_one({"_id": key, "entryClientOrderId": entry_client_order_id})

    async def get_fill(self, fill_id: str, kind: str) -> Document | None:
        return await self._fills.find_one({"_id": fill_id, "kind": kind})

    async def insert_fill(self, doc: Document) -> None:
        try:
            await self._fills.insert_one(doc)
        except DuplicateKeyError:
            pass

    async def insert_trade(self, doc: Document) -> None:
        await self._trades.insert_one(doc)

    async def first_trade_opened_since(self, connection_id: str, symbol: str, side: str,
                                       open_time_ms: int) -> Document | None:
        query = {"connectionId": connection_id, "symbol": symbol, "side": side, "openTimeMs": {"$gte": open_time_ms}}
        docs = await self._trades.find(query).sort("openTimeMs", 1).limit(1).to_list(length=1)
        return docs[0] if docs else None

    async def latest_closed_trade(self, connection_id: str, symbol: str, side: str) -> Document | None:
        query = {"connectionId": connection_id, "symbol": symbol, "side": side}
        docs = await self._trades.find(query).sort("closeTimeMs", -1).limit(1).to_list(length=1)
        return docs[0] if docs else None

    async def realized_pnl_since(self, connection_id: str, symbol: str, since_ms: int) -> Decimal:
        total = Decimal(0)
        cursor = self._trades.find(
            {"connectionId": connection_id, "symbol": symbol, "closeTimeMs": {"$gte": since_ms}},
            {"realizedPnl": 1},
        )
        async for trade in cursor:
            total += Decimal(str(trade["realizedPnl"]))
        return total

    async def realized_pnl_by_symbol_since(self, connection_id: str, since_ms: int) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        cursor = self._trades.find(
            {"connectionId": connection_id, "closeTimeMs": {"$gte": since_ms}}, {"symbol": 1, "realizedPnl": 1}
        )
        async for trade in cursor:
            totals[trade["symbol"]] = totals.get(trade["symbol"], Decimal(0)) + Decimal(str(trade["realizedPnl"]))
        return totals


class MemoryPaperStore:
    """The same documents in dictionaries; one process, one event loop (no concurrent writers).

    Trades are kept sorted by close time so the per-cycle daily-loss sum
    looks only at today's trades, not the whole history.
    """

    def __init__(self) -> None:
        self._accounts: dict[str, Document] = {}
        self._positions: dict[str, Document] = {}
        self._fills: dict[str, Document] = {}
        self._trades: list[Document] = []
        self._trade_close_times: list[int] = []

    @property
    def trades(self) -> list[Document]:
        """Every closed trade, in close-time order (copies)."""
        return [dict(trade) for trade in self._trades]

    async def get_or_create_account(self, account_id: str, initial: Document) -> Document:
        doc = self._accounts.get(account_id)
        if doc is None:
            doc = {"_id": account_id, **copy.deepcopy(initial)}
            self._accounts[account_id] = doc
        return dict(doc)

    async def compare_and_set_balance(self, account_id: str, version: int, wallet: str, locked: str) -> bool:
        doc = self._accounts.get(account_id)
        if doc is None or doc["version"] != version:
            return False
        doc.update(walletBalance=wallet, lockedMargin=locked, version=version + 1)
        return True

    async def set_symbol_settings(self, account_id: str, symbol: str, settings: Document) -> bool:
        doc = self._accounts.get(account_id)
        if doc is None:
            return False
        doc["symbols"] = {**doc.get("symbols", {}), symbol: dict(settings)}
        return True

    async def get_position(self, key: str) -> Document | None:
        doc = self._positions.get(key)
        return dict(doc) if doc is not None else None

    async def list_positions(self, connection_id: str) -> list[Document]:
        return [dict(doc) for doc in self._positions.values() if doc["connectionId"] == connection_id]

    async def insert_position(self, doc: Document) -> bool:
        if doc["_id"] in self._positions:
            return False
        self._positions[doc["_id"]] = dict(doc)
        return True

    async def update_position(self, key: str, open_time_ms: int | None, fields: Document) -> None:
        doc = self._positions.get(key)
        if doc is not None and (open_time_ms is None or doc["openTimeMs"] == open_time_ms):
            doc.update(fields)

    async def unset_position_fields(self, key: str, names: tuple[str, ...]) -> None:
        doc = self._positions.get(key)
        if doc is not None:
            for name in names:
                doc.pop(name, None)

    async def take_position(self, key: str, open_time_ms: int) -> Document | None:
        doc = self._positions.get(key)
        if doc is None or doc["openTimeMs"] != open_time_ms:
            return None
        return self._positions.pop(key)

    async def delete_position(self, key: str, entry_client_order_id: str) -> None:
        doc = self._positions.get(key)
        if doc is not None and doc.get("entryClientOrderId") == entry_client_order_id:
            del self._positions[key]

    async def get_fill(self, fill_id: str, kind: str) -> Document | None:
        doc = self._fills.get(fill_id)
        return dict(doc) if doc is not None and doc.get("kind") == kind else None

    async def insert_fill(self, doc: Document) -> None:
        self._fills.setdefault(doc["_id"], dict(doc))

    async def insert_trade(self, doc: Document) -> None:
        close_time = int(doc["closeTimeMs"])
        where = bisect.bisect_right(self._trade_close_times, close_time)
        self._trade_close_times.insert(where, close_time)
        self._trades.insert(where, dict(doc))

    def _matching(self, connection_id: str, symbol: str | None, since_close_ms: int) -> list[Document]:
        start = bisect.bisect_left(self._trade_close_times, since_close_ms)
        return [trade for trade in self._trades[start:]
                if trade["connectionId"] == connection_id and symbol in (None, trade["symbol"])]

    async def first_trade_opened_since(self, connection_id: str, symbol: str, side: str,
                                       open_time_ms: int) -> Document | None:
        # A trade opened at or after open_time_ms also closed at or after it.
        found = [trade for trade in self._matching(connection_id, symbol, open_time_ms)
                 if trade["side"] == side and int(trade["openTimeMs"]) >= open_time_ms]
        return dict(min(found, key=lambda trade: int(trade["openTimeMs"]))) if found else None

    async def latest_closed_trade(self, connection_id: str, symbol: str, side: str) -> Document | None:
        for trade in reversed(self._trades):
            if trade["connectionId"] == connection_id and trade["symbol"] == symbol and trade["side"] == side:
                return dict(trade)
        return None

    async def realized_pnl_since(self, connection_id: str, symbol: str, since_ms: int) -> Decimal:
        return sum((Decimal(trade["realizedPnl"]) for trade in self._matching(connection_id, symbol, since_ms)),
                   Decimal(0))

    async def realized_pnl_by_symbol_since(self, connection_id: str, since_ms: int) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for trade in self._matching(connection_id, None, since_ms):
            totals[trade["symbol"]] = totals.get(trade["symbol"], Decimal(0)) + Decimal(trade["realizedPnl"])
        return totals
