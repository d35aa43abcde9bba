"""The weight planner inside a real tick: connection modes read once, risk first, the rest deferred."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from services.devstack.seed import PRESET_BOTS, bot_document

BTC = "BTCUSDT"
POSITION = {"symbol": BTC, "side": "LONG", "entryPrice": 100.0, "quantity": 0.5, "leverage": 10,
            "stopLoss": 97.0, "takeProfit": 106.0, "pnl": 0.0, "pnlPercent": 0.0,
            "openTime": datetime(2025, 1, 1, tzinfo=UTC)}  # fmt: skip


def add_user(gateway, mode: str) -> ObjectId:
    user = ObjectId()
    gateway.db.exchangeconnections.insert_one(
        {"userId": user, "exchange": "binance", "mode": mode, "apiKey": "gAAAA-token-key", "apiSecret": "gAAAA-token-secret",
         "isActive": True}  # fmt: skip
    )
    return user


def add_bot(gateway, user: ObjectId, *, position: bool) -> ObjectId:
    document = bot_document(user, PRESET_BOTS[0], symbol=BTC, currentPosition=POSITION if position else None)
    gateway.db.botinstances.insert_one(document)
    return document["_id"]


async def test_over_budget_bots_with_positions_go_first_and_the_rest_are_skipped(gateway_factory):
    # BTCUSDT 5m: klines 2 + exchangeInfo 1 + price 1 = 4; live account 5; open position +1.
    async with gateway_factory(weight_budget_per_tick=4 + 6 + 6) as gateway:
        live_a, live_b, paper, live_d = (add_user(gateway, mode) for mode in ("live", "testnet", "paper", "live"))
        a_flat = add_bot(gateway, live_a, position=False)       # shares account A with a_open: free
        b_flat = add_bot(gateway, live_b, position=False)       # a new account (5): does not fit
        paper_flat = add_bot(gateway, paper, position=False)     # paper: free
        a_open = add_bot(gateway, live_a, position=True)         # 5 + 1, kept first (open position)
        d_open = add_bot(gateway, live_d, position=True)         # 5 + 1
        gateway.mongo.commands.clear()
        gateway.mongo.bodies.clear()

        body = await gateway.tick()

        statuses = {result["botInstanceId"]: (result["status"], result["error"]) for result in body["results"]}
        assert statuses[str(b_flat)] == ("skipped", "weight budget")
        for kept in (a_flat, paper_flat, a_open, d_open):
            assert statuses[str(kept)][0] == "success"
        assert body["summary"]["skipped"] == 1
        assert {request.bot.bot_instance_id for request, _ in gateway.fakes.executor.calls} == {
            str(a_flat), str(paper_flat), str(a_open), str(d_open)
        }
        [log] = gateway.logs(b_flat)
        assert (log["logType"], log["severity"], log["action"]) == ("SYSTEM", "WARNING", "SKIPPED")
        assert log["data"] == {"reason": "weight budget", "weightNeeded": 4 + (5 + 1) + 5 + (5 + 1), "weightBudget": 16}
        assert "lockOwner" not in gateway.bot(b_flat)  # released: the next tick takes it

        # One read of the connections, for these users, without the credentials.
        [connections_find] = [cmd for cmd in gateway.mongo.bodies if cmd.get("find") == "exchangeconnections"]
        assert connections_find["projection"] == {"_id": 1, "userId": 1, "mode": 1, "isActive": 1}
        # Only what costs weight: active live/testnet connections (paper ones never reach the $in).
        assert connections_find["filter"]["mode"] == {"$in": ["live", "testnet"]}
        assert connections_find["filter"]["isActive"] is True


async def test_positions_are_kept_before_entries_when_not_everyone_fits(gateway_factory):
    async with gateway_factory(weight_budget_per_tick=4 + 6) as gateway:
        flat = add_bot(gateway, add_user(gateway, "live"), position=False)
        opened = add_bot(gateway, add_user(gateway, "live"), position=True)
        body = await gateway.tick()
        statuses = {result["botInstanceId"]: result["status"] for result in body["results"]}
        assert statuses == {str(opened): "success", str(flat): "skipped"}


async def test_zero_budget_plans_nothing_and_reads_no_connections(gateway_factory):
    async with gateway_factory(weight_budget_per_tick=0) as gateway:
        for _ in range(3):
            add_bot(gateway, add_user(gateway, "live"), position=False)
        gateway.mongo.commands.clear()
        body = await gateway.tick()
        assert body["summary"]["successful"] == 3
        assert gateway.mongo.data_commands() == ["update", "find", "update", "insert"]
