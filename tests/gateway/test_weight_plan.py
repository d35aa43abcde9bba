"""The weight planner: what a tick costs on one egress IP, and who is deferred when it is too much."""

from __future__ import annotations

from bson import ObjectId

from services.devstack.seed import PRESET_BOTS, bot_document
from services.common.bot_documents import parse_bot
from services.gateway.weight_plan import (
    ACCOUNT_READ_WEIGHT,
    DEFAULT_WEIGHT_BUDGET,
    POSITION_CHECK_WEIGHT,
    BotWeightInput,
    klines_weight,
    plan_weight,
    weighed_account,
    weight_inputs,
)

LIMIT = 300  # TICK_CANDLE_LIMIT default: the market asks 301 -> weight 2


def population(bots: int, accounts: int, symbols: int = 50, with_position_every: int = 4) -> list[BotWeightInput]:
    return [
        BotWeightInput(
            key=index,
            symbol=f"SYM{index % symbols}USDT",
            interval="5m",
            account=f"acct-{index % accounts}",
            has_position=index % with_position_every == 0,
            order_key=f"{index:06d}",
        )
        for index in range(bots)
    ]


def test_thousand_bots_on_two_hundred_live_accounts_fit_the_default_budget():
    plan = plan_weight(population(1000, 200), DEFAULT_WEIGHT_BUDGET, LIMIT)
    # 50 (symbol, 5m): klines 2 + exchangeInfo 1 + price 1 = 200; 200 accounts x one /fapi/v3/account
    # read (5) = 1000; 250 positions x their protective-order audit (1) = 250. Income refreshes are not per tick.
    assert plan.needed == 50 * 4 + 200 * ACCOUNT_READ_WEIGHT + 250 * POSITION_CHECK_WEIGHT == 1450
    assert plan.deferred == [] and len(plan.kept) == 1000
    assert plan.planned == plan.needed <= DEFAULT_WEIGHT_BUDGET


def test_three_thousand_accounts_do_not_fit_and_open_positions_come_first():
    bots = population(3000, 3000, with_position_every=20)  # 150 bots with a position, one account each
    plan = plan_weight(list(reversed(bots)), DEFAULT_WEIGHT_BUDGET, LIMIT)  # input order does not matter

    assert plan.needed == 50 * 4 + 3000 * 5 + 150 * 1
    kept = set(plan.kept)
    assert all(bot.key in kept for bot in bots if bot.has_position)  # risk before opportunity
    # 200 market + 150 x 6 = 1100; the 820 left carry 164 more accounts, taken in the stable order.
    without = [bot.key for bot in bots if not bot.has_position]
    assert [key for key in plan.kept if not bots[key].has_position] == without[:164]
    assert sorted(plan.deferred) == sorted(without[164:])
    assert plan.planned == 1920


def test_bots_sharing_a_paid_account_and_market_still_fit_after_a_deferral():
    bots = [
        BotWeightInput("a", "BTCUSDT", "5m", "acct-1", False, "1"),
        BotWeightInput("b", "ETHUSDT", "5m", "acct-2", False, "2"),   # a new symbol and account: too much
        BotWeightInput("c", "BTCUSDT", "5m", "acct-1", False, "3"),   # costs nothing more
        BotWeightInput("d", "BTCUSDT", "5m", None, False, "4"),       # paper on a paid market: free
    ]
    plan = plan_weight(bots, 4 + 5, LIMIT)
    assert plan.kept == ["a", "c", "d"] and plan.deferred == ["b"]
    assert plan.planned == 9


def test_paper_bots_cost_only_market_data():
    bots = [BotWeightInput(index, "BTCUSDT", "5m", None, True, str(index)) for index in range(500)]
    plan = plan_weight(bots, DEFAULT_WEIGHT_BUDGET, LIMIT)
    assert plan.needed == 4 and plan.deferred == []


def test_a_zero_budget_turns_planning_off():
    plan = plan_weight(population(3000, 3000), 0, LIMIT)
    assert plan.deferred == [] and len(plan.kept) == 3000 and plan.needed > DEFAULT_WEIGHT_BUDGET


def test_a_larger_candle_limit_costs_more():
    bots = population(10, 10)
    assert plan_weight(bots, 0, 1000).needed - plan_weight(bots, 0, 300).needed == 10 * (10 - 2)



def _bot(user, connection_id=None):
    document = bot_document(user, PRESET_BOTS[0])
    if connection_id is not None:
        document["exchangeConnectionId"] = connection_id
    return parse_bot(document)


def test_connections_resolve_like_the_executor():
    user = ObjectId()
    live, paper, inactive = ObjectId(), ObjectId(), ObjectId()
    connections = [
        {"_id": live, "userId": user, "mode": "live", "isActive": True},
        {"_id": paper, "userId": str(user), "mode": "paper", "isActive": True},  # the app may store a string
        {"_id": inactive, "userId": user, "mode": "live", "isActive": False},
    ]
    assert weighed_account(_bot(user, live), connections) == live
    assert weighed_account(_bot(user, paper), connections) is None       # paper: free
    assert weighed_account(_bot(user, inactive), connections) is None    # refused before any exchange call
    assert weighed_account(_bot(user), connections) is None              # two active: ambiguous, refused
    assert weighed_account(_bot(user), connections[:1]) == live          # the single active one
    assert weighed_account(_bot(ObjectId(), live), connections) is None  # another user's connection
    # Unreadable connections: every bot is planned as live on an account of its own.
    assert weighed_account(_bot(user), None) == ("user", user)


def test_indexed_inputs_resolve_exactly_like_the_per_bot_rule():
    users = [ObjectId() for _ in range(3)]
    connections = [
        {"_id": ObjectId(), "userId": users[0], "mode": "live", "isActive": True},
        {"_id": ObjectId(), "userId": str(users[1]), "mode": "testnet", "isActive": True},
        {"_id": ObjectId(), "userId": users[1], "mode": "live", "isActive": True},   # two active: ambiguous
    ]
    bots = [_bot(user) for user in users] + [_bot(users[1], connections[1]["_id"])]
    inputs = weight_inputs(bots, connections)
    assert [item.account for item in inputs] == [weighed_account(bot, connections) for bot in bots]
    assert [item.account for item in inputs] == [connections[0]["_id"], None, None, connections[1]["_id"]]
    assert [item.account for item in weight_inputs(bots, None)] == [weighed_account(bot, None) for bot in bots]
