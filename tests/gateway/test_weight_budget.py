"""The weight planner inside a real tick: market data only, risk first, the rest deferred, no connection read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from services.devstack.seed import PRESET_BOTS, bot_document

BTC, ETH, SOL = "BTCUSDT", "ETHUSDT", "SOLUSDT"
MARKET = 2 + 1 + 1  # one (symbol, 5m) at 300 candles: klines 2 + exchangeInfo 1 + price 1


def position(symbol: str) -> dict[str, Any]:
    return {"symbol": symbol, "side": "LONG", "entryPrice": 100.0, "quantity": 0.5, "leverage": 10,
            "stopLoss": 97.0, "takeProfit": 106.0, "pnl": 0.0, "pnlPercent": 0.0,
            "openTime": datetime(2025, 1, 1, tzinfo=UTC)}  # fmt: skip


def add_user(gateway, mode: str) -> ObjectId:
    user = ObjectId()
    gateway.db.exchangeconnections.insert_one({
        "userId": user, "exchange": "binance", "mode": mode, "isActive": True,
        "apiKey": "gAAAA-token-key", "apiSecret": "gAAAA-token-secret",
    })
    return user


def add_bot(gateway, user: ObjectId, symbol: str = BTC, *, open_position: bool = False) -> ObjectId:
    document = bot_document(user, PRESET_BOTS[0], symbol=symbol, currentPosition=position(symbol) if open_position else None)
    gateway.db.botinstances.insert_one(document)
    return document["_id"]


def statuses(body: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {result["botInstanceId"]: (result["status"], result["error"]) for result in body["results"]}


async def test_a_tick_whose_market_fits_keeps_every_bot_whatever_its_accounts(gateway_factory):
    # Twelve bots on twelve live/testnet/paper accounts, one market: the budget of that one market carries them all.
    async with gateway_factory(weight_budget_per_tick=MARKET) as gateway:
        bots = [
            add_bot(gateway, add_user(gateway, mode), open_position=index % 2 == 0)
            for index, mode in enumerate(("live", "testnet", "paper") * 4)
        ]
        gateway.mongo.commands.clear()
        gateway.mongo.bodies.clear()

        body = await gateway.tick()

        assert {bot: status for bot, (status, _) in statuses(body).items()} == {str(bot): "success" for bot in bots}
        assert body["summary"]["skipped"] == 0
        assert {request.bot.bot_instance_id for request, _ in gateway.fakes.executor.calls} == {str(bot) for bot in bots}
        assert gateway.db.tradelogs.count_documents({"action": "SKIPPED"}) == 0
        # The gateway reads no exchange connection: claim, read back, bulk_write, insert_many.
        assert not [cmd for cmd in gateway.mongo.bodies if cmd.get("find") == "exchangeconnections"]
        assert gateway.mongo.data_commands() == ["update", "find", "update", "insert"]


async def test_more_markets_than_the_budget_carries_defer_the_flat_bots_first(gateway_factory):
    async with gateway_factory(weight_budget_per_tick=2 * MARKET) as gateway:
        live = add_user(gateway, "live")
        btc_flat = add_bot(gateway, live, BTC)                          # BTC paid by btc_open: free
        eth_flat = add_bot(gateway, live, ETH)                          # a third market: does not fit
        sol_open = add_bot(gateway, live, SOL, open_position=True)      # kept first (open position)
        btc_open = add_bot(gateway, live, BTC, open_position=True)      # kept first (open position)

        body = await gateway.tick()

        assert statuses(body) == {
            str(btc_flat): ("success", None), str(sol_open): ("success", None), str(btc_open): ("success", None),
            str(eth_flat): ("skipped", "weight budget"),
        }
        assert body["summary"]["skipped"] == 1
        assert {request.bot.bot_instance_id for request, _ in gateway.fakes.executor.calls} == {
            str(btc_flat), str(sol_open), str(btc_open)
        }
        candles = {request.symbol for name, request, _ in gateway.fakes.market.calls if name == "GetCandles"}
        assert candles == {BTC, SOL}  # ETH's market is never asked
        [log] = gateway.logs(eth_flat)
        assert (log["logType"], log["severity"], log["action"]) == ("SYSTEM", "WARNING", "SKIPPED")
        assert log["data"] == {"reason": "weight budget", "weightNeeded": 3 * MARKET, "weightBudget": 2 * MARKET}
        assert "lockOwner" not in gateway.bot(eth_flat)  # released: the next tick takes it


async def test_positions_are_kept_before_entries_when_not_every_market_fits(gateway_factory):
    async with gateway_factory(weight_budget_per_tick=MARKET) as gateway:
        flat = add_bot(gateway, add_user(gateway, "paper"), ETH)
        opened = add_bot(gateway, add_user(gateway, "live"), BTC, open_position=True)
        body = await gateway.tick()
        assert statuses(body) == {str(opened): ("success", None), str(flat): ("skipped", "weight budget")}


async def test_zero_budget_plans_nothing(gateway_factory):
    async with gateway_factory(weight_budget_per_tick=0) as gateway:
        live = add_user(gateway, "live")
        for symbol in (BTC, ETH, SOL):
            add_bot(gateway, live, symbol)
        gateway.mongo.commands.clear()
        body = await gateway.tick()
        assert body["summary"]["successful"] == 3
        assert gateway.mongo.data_commands() == ["update", "find", "update", "insert"]
