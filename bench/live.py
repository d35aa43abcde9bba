"""Live accounts on one egress IP: several ticks through the real processes against an exchange that enforces
Binance's limits (``tests.fakes.binance_exchange``: one 2,400-a-minute weight pool for every route, 429 then
418, user-data streams).

The population is the paper benchmark's (5 bots an account, one in five with an open position, 50 symbols),
on live connections: every account has its own API key on the exchange, every open position is on the
exchange with its stop-loss and take-profit. Ticks run one weight-minute apart: each starts at least one
second into a minute after the previous one ended, so no tick borrows another's minute. A row per tick:
``bots, accounts, tick, tick_seconds, served, skipped, failed, peak_used_weight_1m, answered_429,
answered_418, sent_after_429, rest_requests, ws_connections``; the exchange's counters cover the time since
the previous tick ended (the background bring-up between ticks included).
"""

from __future__ import annotations

import secrets
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bson import ObjectId
from cryptography.fernet import Fernet
from pymongo.database import Database

from bench.population import BotPlan, insert_chunked, stored_position
from bench.run import backends, call_tick, database_of
from services.devstack.seed import PRESET_BOTS, bot_document, user_document
from services.devstack.stack import Stack, StackConfig, StackPorts
from services.executor.admin import connection_document
from tests.fakes.binance_exchange import FakeBinanceExchange

ROW_KEYS = ("bots", "accounts", "tick", "tick_seconds", "served", "skipped", "failed", "peak_used_weight_1m",
            "answered_429", "answered_418", "sent_after_429", "rest_requests", "ws_connections")
ACCOUNT_BALANCE = Decimal("10000")


@dataclass(frozen=True)
class LiveOptions:
    ticks: int = 3
    binance_latency_ms: float = 20.0
    openai_latency_ms: int = 800
    tick_timeout_seconds: float = 1200.0
    echo: bool = False
    minute_apart: bool = True   # False (tests): ticks back to back, when the population fits one minute anyway


def account_keys(account: int) -> tuple[str, str]:
    return f"bench-live-key-{account:05d}", f"bench-live-secret-{account:05d}-{uuid.uuid4().hex[:8]}"


def seed_live(db: Database, exchange: FakeBinanceExchange, plans: Sequence[BotPlan], credentials_key: str) -> None:
    """Users, live connections (their keys encrypted), bots, and every account and open position on the exchange."""
    fernet = Fernet(credentials_key.encode())
    connections: dict[int, ObjectId] = {}
    users: dict[int, ObjectId] = {}
    keys: dict[int, tuple[str, str]] = {}
    user_docs, connection_docs = [], []
    for account in sorted({bot.account for bot in plans}):
        keys[account] = account_keys(account)
        exchange.add_account(*keys[account], balance=ACCOUNT_BALANCE)
        user = user_document(email=f"bench-live-{account}@example.test", name=f"Live {account}")
        connection = {"_id": ObjectId(), **connection_document(user["_id"], "live", *keys[account], fernet)}
        users[account], connections[account] = user["_id"], connection["_id"]
        user_docs.append(user)
        connection_docs.append(connection)
    bot_docs = []
    for bot in plans:
        preset = PRESET_BOTS[bot.strategy - 1]
        document = bot_document(users[bot.account], preset, symbol=bot.symbol, name=f"{preset.name} #{bot.index}",
                                config={"interval": bot.interval}, exchangeConnectionId=connections[bot.account])
        if bot.with_position:
            leverage = int(preset.config["leverage"])
            stored = stored_position(bot, leverage)
            document["currentPosition"] = stored
            exchange.seed_position(keys[bot.account][0], bot.symbol, stored["side"], str(stored["quantity"]),
                                   str(stored["entryPrice"]), leverage, str(preset.config.get("marginType", "ISOLATED")),
                                   str(stored["stopLoss"]), str(stored["takeProfit"]),
                                   stop_loss_client_id=f"bench-sl-{bot.index}",
                                   take_profit_client_id=f"bench-tp-{bot.index}")
        bot_docs.append(document)
    insert_chunked(db, "users", user_docs)
    insert_chunked(db, "exchangeconnections", connection_docs)
    insert_chunked(db, "botinstances", bot_docs)


def run_live(plans: Sequence[BotPlan], options: LiveOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seed, start everything, run ``options.ticks`` ticks; (rows, details per tick)."""
    echo = (lambda name, line: print(f"[{name}] {line}", flush=True)) if options.echo else None
    cron_secret = "bench-cron-" + secrets.token_urlsafe(32)
    credentials_key = Fernet.generate_key().decode()
    database = f"bench_live_{uuid.uuid4().hex[:10]}"
    accounts = len({bot.account for bot in plans})
    rows: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    exchange = FakeBinanceExchange(latency_ms=options.binance_latency_ms, record_requests=False)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as scratch, exchange.in_thread(), \
            backends(options.openai_latency_ms, echo) as (_, mongo_uri, openai_url):
        stack: Stack | None = None
        try:
            with database_of(mongo_uri, database) as db:
                seed_live(db, exchange, plans, credentials_key)
            config = StackConfig(
                mongodb_uri=mongo_uri, cron_secret=cron_secret, credentials_keys=credentials_key,
                mongodb_db=database, ports=StackPorts.free(), env=live_environment(exchange, openai_url),
                echo=echo, log_dir=Path(scratch),
            )
            stack = Stack(config).start()
            exchange.reset_counters()
            ended = 0.0
            for tick in range(1, options.ticks + 1):
                if tick > 1 and options.minute_apart:
                    _wait_for_next_minute(exchange, ended)
                response, wall = call_tick(config, options.tick_timeout_seconds)
                ended = exchange.clock.now()
                response.raise_for_status()
                body = response.json()
                summary = body.get("summary", {})
                stats = exchange.stats()
                exchange.reset_counters()
                rows.append(_row(len(plans), accounts, tick, wall, summary, stats))
                details.append({"bots": len(plans), "accounts": accounts, "tick": tick,
                                "weight_used": sum(stats["weight_by_path"].values()),
                                "weight_by_path": stats["weight_by_path"], "summary": summary,
                                "ws_connection_attempts": stats["ws_connection_attempts"],
                                "not_served": _reasons(body.get("results", [])),
                                "decisions": _decisions(body.get("results", []))})
                details[-1]["duplicate_client_order_ids"] = exchange.duplicate_client_order_ids()
                print(f"   tick {tick}: {wall:.1f} s, served {rows[-1]['served']}/{len(plans)}, "
                      f"peak weight {stats['peak_used_1m']}, REST {stats['rest_requests']}", flush=True)
        finally:
            if stack is not None:
                stack.stop()
    return rows, details


def _reasons(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Why bots were not served, by status and the first words of the reason (digits dropped)."""
    counts: Counter[str] = Counter()
    for result in results:
        if result.get("status") != "success":
            reason = "".join("#" if ch.isdigit() else ch for ch in str(result.get("error") or ""))[:90]
            counts[f"{result.get('status')}: {reason}"] += 1
    return dict(counts.most_common(8))


def _decisions(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """What the served bots did, from the response alone (counting TradeLogs would load the database):
    signals by action, and the orders placed."""
    counts: Counter[str] = Counter(f"signal {result.get('action') or 'none'}" for result in results)
    counts["orders placed"] = sum(1 for result in results if result.get("orderPlaced"))
    return dict(counts)


def live_environment(exchange: FakeBinanceExchange, openai_url: str) -> dict[str, dict[str, str]]:
    return {
        "market": {"MARKET_DATA_SOURCE": "binance", "BINANCE_FUTURES_URL": exchange.url},
        "executor": {"BINANCE_FUTURES_URL": exchange.url, "BINANCE_FUTURES_WS_URL": exchange.ws_url,
                     "BINANCE_SPOT_URL": exchange.url},
        "strategy": {"OPENAI_API_KEY": "sk-bench-" + secrets.token_urlsafe(16), "OPENAI_BASE_URL": openai_url,
                     "OPENAI_MODEL": "gpt-4o"},
        "gateway": {"TICK_USE_AI": "true"},
    }


def _wait_for_next_minute(exchange: FakeBinanceExchange, ended: float) -> None:
    """Until at least one second into the exchange's next minute after ``ended``: a fresh weight minute."""
    start_of_next = (int(ended // 60) + 1) * 60 + 1
    while exchange.clock.now() < start_of_next:
        time.sleep(min(1.0, start_of_next - exchange.clock.now()))


def _row(bots: int, accounts: int, tick: int, wall: float, summary: dict[str, Any],
         stats: dict[str, Any]) -> dict[str, Any]:
    row = {
        "bots": bots, "accounts": accounts, "tick": tick, "tick_seconds": round(wall, 2),
        "served": int(summary.get("successful", 0)), "skipped": int(summary.get("skipped", 0)),
        "failed": int(summary.get("failed", 0)), "peak_used_weight_1m": int(stats["peak_used_1m"]),
        "answered_429": int(stats["answered_429"]), "answered_418": int(stats["answered_418"]),
        "sent_after_429": int(stats["sent_after_429"]), "rest_requests": int(stats["rest_requests"]),
        "ws_connections": int(stats["ws_connections"]),
    }
    assert tuple(row) == ROW_KEYS
    return row
