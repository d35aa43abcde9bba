"""The benchmark's bot population: seed-shaped documents, spread over accounts, some with open positions.

Bot ``i`` belongs to user/connection ``i // BOTS_PER_ACCOUNT`` (a paper
connection each), trades ``SYMBOLS[i % 50]`` (so an account's bots never share
a symbol, like the paper broker's one-position-per-symbol rule requires),
runs preset strategy ``(i // 50) % 4 + 1`` on interval ``5m`` or ``15m``.
Consecutive bots always differ in symbol: the baseline's one-entry analysis
cache therefore never serves a bot from its predecessor's work.

Open positions are seeded through the paper store's own documents
(``paperpositions``, keyed ``connection:symbol``) and the bot's
``currentPosition``, so the executor sees a live position it must monitor;
stops and targets are far from the price so no position closes during the
benchmark (the tick's work stays the same between runs).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo.database import Database

from services.devstack.seed import PRESET_BOTS, bot_document, user_document
from services.executor.admin import connection_document
from services.market.sources.universe import SIMULATED_UNIVERSE

SYMBOL_COUNT = 50
SYMBOLS: tuple[str, ...] = tuple(SIMULATED_UNIVERSE)[:SYMBOL_COUNT]
INTERVALS = ("5m", "15m")
BOTS_PER_ACCOUNT = 5
POSITION_SHARE = 0.2          # one bot in five holds an open position
POSITION_NOTIONAL = Decimal("100")


@dataclass(frozen=True)
class BotPlan:
    index: int
    account: int
    strategy: int       # preset bot id 1..4
    symbol: str
    interval: str
    with_position: bool


def plan(bots: int, symbols: int = SYMBOL_COUNT) -> list[BotPlan]:
    """``bots`` bots over the first ``symbols`` symbols (at least BOTS_PER_ACCOUNT, at most 50)."""
    if not BOTS_PER_ACCOUNT <= symbols <= SYMBOL_COUNT:
        raise ValueError(f"symbols must be between {BOTS_PER_ACCOUNT} and {SYMBOL_COUNT}")
    return [_plan_one(index, symbols) for index in range(bots)]


def _plan_one(index: int, symbols: int) -> BotPlan:
    return BotPlan(
        index=index,
        account=index // BOTS_PER_ACCOUNT,
        strategy=(index // symbols) % len(PRESET_BOTS) + 1,
        symbol=SYMBOLS[index % symbols],
        interval=INTERVALS[(index // (symbols * len(PRESET_BOTS))) % len(INTERVALS)],
        # Spread deterministically: every fifth bot, offset so accounts differ in which one.
        with_position=(index * 7) % round(1 / POSITION_SHARE) == 0,
    )


def sample(plans: Sequence[BotPlan], size: int, seed: int = 7) -> list[BotPlan]:
    """A reproducible random sample, in population order (the baseline's measured subset)."""
    if size >= len(plans):
        return list(plans)
    chosen = sorted(random.Random(seed).sample(range(len(plans)), size))
    return [plans[index] for index in chosen]


def distinct_symbol_intervals(plans: Sequence[BotPlan]) -> int:
    return len({(bot.symbol, bot.interval) for bot in plans})


def distinct_strategy_markets(plans: Sequence[BotPlan]) -> int:
    return len({(bot.strategy, bot.symbol, bot.interval) for bot in plans})


def seed(db: Database, plans: Sequence[BotPlan], credentials_key: str) -> None:
    """Users, paper connections, bots and paper positions, written in bulk."""
    fernet = Fernet(credentials_key.encode())
    users: dict[int, ObjectId] = {}
    connections: dict[int, ObjectId] = {}
    user_docs, connection_docs = [], []
    for account in sorted({bot.account for bot in plans}):
        user = user_document(email=f"bench-{account}@example.test", name=f"Bench {account}")
        connection = {"_id": ObjectId(), **connection_document(user["_id"], "paper", "", "", fernet)}
        users[account], connections[account] = user["_id"], connection["_id"]
        user_docs.append(user)
        connection_docs.append(connection)
    bot_docs, position_docs = [], []
    opened = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    for bot in plans:
        preset = PRESET_BOTS[bot.strategy - 1]
        document = bot_document(users[bot.account], preset, symbol=bot.symbol, name=f"{preset.name} #{bot.index}",
                                config={"interval": bot.interval}, exchangeConnectionId=connections[bot.account])
        if bot.with_position:
            stored, paper = _position(bot, preset.config["leverage"], str(connections[bot.account]), opened)
            document["currentPosition"] = stored
            position_docs.append(paper)
        bot_docs.append(document)
    insert_chunked(db, "users", user_docs)
    insert_chunked(db, "exchangeconnections", connection_docs)
    insert_chunked(db, "botinstances", bot_docs)
    insert_chunked(db, "paperpositions", position_docs)


def insert_chunked(db: Database, name: str, documents: list[dict[str, Any]], chunk: int = 250) -> None:
    # Small batches: mongoeco's insert cost grows with the collection, and it cancels long operations.
    for start in range(0, len(documents), chunk):
        db[name].insert_many(documents[start : start + chunk], ordered=False)


def stored_position(bot: BotPlan, leverage: int, opened: datetime | None = None) -> dict[str, Any]:
    """The bot's ``currentPosition``: far from any price the simulated feed reaches, so it stays open."""
    opened = opened or datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    return _position(bot, leverage, "", opened)[0]


def _position(bot: BotPlan, leverage: int, connection_id: str, opened: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = SIMULATED_UNIVERSE[bot.symbol]
    price = Decimal(str(spec.reference_price))
    tick, step = spec.rules.tick_size, spec.rules.step_size
    quantity = max((POSITION_NOTIONAL / price).quantize(step, rounding=ROUND_DOWN), spec.rules.min_qty)
    long = bot.index % 2 == 0
    # Far from any price the simulated feed reaches: the position stays open through the run.
    stop_loss = (price * Decimal("0.3" if long else "3")).quantize(tick)
    take_profit = (price * Decimal("3" if long else "0.3")).quantize(tick)
    side = "LONG" if long else "SHORT"
    stored = {
        "symbol": bot.symbol, "side": side, "entryPrice": float(price), "quantity": float(quantity),
        "leverage": leverage, "stopLoss": float(stop_loss), "takeProfit": float(take_profit),
        "pnl": 0, "pnlPercent": 0, "openTime": opened,
    }  # fmt: skip
    paper = {
        "_id": f"{connection_id}:{bot.symbol}", "connectionId": connection_id, "symbol": bot.symbol,
        "side": side, "quantity": str(quantity), "entryPrice": str(price),
        "markPrice": str(price), "leverage": leverage, "margin": str((price * quantity / leverage).normalize()),
        "entryFee": "0", "openTimeMs": int(opened.timestamp() * 1000),
        "entryClientOrderId": f"bench-{bot.index}", "entryOrderId": f"paper-bench-{bot.index}",
        "stopLoss": str(stop_loss), "stopLossId": f"bench-sl-{bot.index}",
        "takeProfit": str(take_profit), "takeProfitId": f"bench-tp-{bot.index}",
    }  # fmt: skip
    return stored, paper
