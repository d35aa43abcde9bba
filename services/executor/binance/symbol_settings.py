"""Leverage and margin type set on Binance, remembered per (account, symbol) in MongoDB.

Setting them costs weight (1 each) and only changes when a bot's config does:
one ``exchangesymbolsettings`` document per (account hash, symbol) lets every
replica and every restart skip the calls. Kept in memory too; the document is
written only after Binance accepted both changes, so a crash in between only
costs one more setting call.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "exchangesymbolsettings"


class SymbolSettings:
    def __init__(self, db: AsyncDatabase | None) -> None:
        self._db = db
        self._known: dict[str, dict[str, tuple[int, str]]] = {}   # account -> symbol -> (leverage, margin)

    async def get(self, account_id: str, symbol: str) -> tuple[int, str] | None:
        known = self._known.get(account_id, {}).get(symbol)
        if known is not None or self._db is None:
            return known
        document = await self._db[COLLECTION].find_one({"_id": f"{account_id}:{symbol}"},
                                                       {"leverage": 1, "marginType": 1})
        if document is None:
            return None
        known = self._known.setdefault(account_id, {})[symbol] = (int(document["leverage"]),
                                                                  str(document["marginType"]))
        return known

    async def put(self, account_id: str, symbol: str, leverage: int, margin_type: str) -> None:
        key = f"{account_id}:{symbol}"
        self._known.setdefault(account_id, {})[symbol] = (leverage, margin_type)
        if self._db is not None:
            await self._db[COLLECTION].update_one(
                {"_id": key},
                {"$set": {"account": account_id, "symbol": symbol, "leverage": leverage, "marginType": margin_type,
                          "setAt": datetime.now(UTC)}},
                upsert=True,
            )

    def leverage(self, account_id: str, symbol: str) -> int | None:
        known = self._known.get(account_id, {}).get(symbol)
        return None if known is None else known[0]

    def leverages(self, account_id: str) -> dict[str, int]:
        return {symbol: value[0] for symbol, value in self._known.get(account_id, {}).items()}
