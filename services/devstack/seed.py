"""Demo data in the Next.js app's schema: a user, a paper connection, the four preset bots.

``make run`` seeds an EMPTY database with it; the tests build their bots
with ``bot_document`` so every test writes the same, seed-shaped documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from services.common.bot_documents import new_bot_document

DEMO_EMAIL = "demo@tradebot.local"


@dataclass(frozen=True)
class PresetBot:
    bot_id: int
    name: str          # the strategy's name in services/strategy/strategies
    symbol: str
    config: dict[str, Any]


PRESET_BOTS = (
    PresetBot(1, "Bitcoin Pro", "BTCUSDT",
              {"leverage": 10, "stopLossPercent": 3, "takeProfitPercent": 6, "positionSizePercent": 10, "maxDailyLoss": 100}),
    PresetBot(2, "Safe Trader", "ETHUSDT",
              {"leverage": 3, "stopLossPercent": 2, "takeProfitPercent": 4, "positionSizePercent": 5, "maxDailyLoss": 50}),
    PresetBot(3, "Trend Rider", "SOLUSDT",
              {"leverage": 5, "stopLossPercent": 4, "takeProfitPercent": 8, "positionSizePercent": 8, "maxDailyLoss": 80}),
    PresetBot(4, "Range Scalper", "BNBUSDT",
              {"leverage": 5, "stopLossPercent": 1.5, "takeProfitPercent": 3, "positionSizePercent": 5, "maxDailyLoss": 40}),
)  # fmt: skip


def bot_document(
    user_id: ObjectId,
    preset: PresetBot = PRESET_BOTS[0],
    *,
    status: str = "ACTIVE",
    symbol: str | None = None,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A ``botinstances`` document exactly in the seed's BotInstance shape."""
    document = new_bot_document(
        user_id=user_id,
        bot_id=preset.bot_id,
        bot_name=name or preset.name,
        symbol=symbol or preset.symbol,
        config={**preset.config, "interval": "5m", "confidenceThreshold": 70, "maxConsecutiveLosses": 3,
                **(config or {})},
        status=status,
    )
    return {"_id": ObjectId(), **document, **fields}


def user_document(email: str = DEMO_EMAIL, name: str = "Demo Trader") -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"_id": ObjectId(), "email": email, "name": name, "createdAt": now, "updatedAt": now}


def is_empty(db: Database) -> bool:
    return db["botinstances"].estimated_document_count() == 0 and db["users"].estimated_document_count() == 0


def seed_demo(db: Database, credentials_key: str) -> ObjectId:
    """Insert the demo user, its paper connection and the four preset bots; returns the user id."""
    from cryptography.fernet import Fernet

    from services.executor.admin import connection_document

    user = user_document()
    db["users"].insert_one(user)
    # A paper account signs nothing; its key fields are still Fernet tokens like every connection's.
    connection = connection_document(user["_id"], "paper", "", "", Fernet(credentials_key.encode()))
    db["exchangeconnections"].insert_one(connection)
    db["botinstances"].insert_many([bot_document(user["_id"], preset) for preset in PRESET_BOTS])
    return user["_id"]
