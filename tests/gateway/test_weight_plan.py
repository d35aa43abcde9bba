"""The weight planner: the market data a tick costs on one egress IP, and who is deferred when it is too much."""

from __future__ import annotations

import dataclasses

from bson import ObjectId

from services.common.binance_weights import IP_WEIGHT_LIMIT_1M
from services.common.bot_documents import parse_bot
from services.devstack.seed import PRESET_BOTS, bot_document
from services.gateway.settings import GatewaySettings
from services.gateway.weight_plan import (
    DEFAULT_WEIGHT_BUDGET,
    BotWeightInput,
    klines_weight,
    plan_weight,
    weight_inputs,
)
from services.market.settings import MarketSettings
from tests.gateway.conftest import CRON_SECRET

LIMIT = 300  # TICK_CANDLE_LIMIT default: the market asks 301 -> weight 2


def population(bots: int, symbols: int = 50, intervals: tuple[str, ...] = ("5m",),
               with_position_every: int = 4) -> list[BotWeightInput]:  # fmt: skip
    return [
        BotWeightInput(
            key=index,
            symbol=f"SYM{index % symbols}USDT",
            interval=intervals[(index // symbols) % len(intervals)],
            has_position=index % with_position_every == 0,
            order_key=f"{index:06d}",
        )
        for index in range(bots)
    ]


def test_the_default_budget_is_the_market_services_share_of_the_ip():
    # MARKET_WEIGHT_BUDGET_SHARE 0.15 of 2,400 per minute; the market's governor enforces the same share.
    assert DEFAULT_WEIGHT_BUDGET == int(IP_WEIGHT_LIMIT_1M * MarketSettings().weight_budget_share) == 360
    settings = GatewaySettings.from_env({"MONGODB_URI": "mongodb://127.0.0.1:1", "CRON_SECRET": CRON_SECRET})
    assert settings.weight_budget_per_tick == DEFAULT_WEIGHT_BUDGET


def test_only_the_market_side_is_planned():
    # No account, connection or mode reaches the planner: the executor's reads are not its business.
    assert [item.name for item in dataclasses.fields(BotWeightInput)] == [
        "key", "symbol", "interval", "has_position", "order_key"
    ]


def test_a_thousand_bots_on_fifty_symbols_and_two_intervals_fit_the_default_budget():
    plan = plan_weight(population(1000, intervals=("5m", "15m")), DEFAULT_WEIGHT_BUDGET, LIMIT)
    # 50 symbols x 2 intervals: klines 2 each = 200; exchangeInfo 1 + price 1 per symbol = 100.
    assert plan.needed == 100 * 2 + 50 * 2 == 300
    assert plan.deferred == [] and len(plan.kept) == 1000
    assert plan.planned == plan.needed <= DEFAULT_WEIGHT_BUDGET


def test_more_markets_than_the_budget_carries_defer_the_flat_bots_first():
    bots = population(200, symbols=200, with_position_every=20)  # a symbol each; 10 with a position
    plan = plan_weight(list(reversed(bots)), DEFAULT_WEIGHT_BUDGET, LIMIT)  # input order does not matter

    assert plan.needed == 200 * 4
    kept = set(plan.kept)
    assert all(bot.key in kept for bot in bots if bot.has_position)  # risk before opportunity
    assert plan.kept[:10] == [bot.key for bot in bots if bot.has_position]
    # 10 x 4 = 40 for the positions; the 320 left carry 80 flat bots, taken in the stable order.
    flat = [bot.key for bot in bots if not bot.has_position]
    assert plan.kept[10:] == flat[:80]
    assert plan.deferred == flat[80:]
    assert plan.planned == 360


def test_bots_on_a_paid_market_still_fit_after_a_deferral():
    bots = [
        BotWeightInput("a", "BTCUSDT", "5m", False, "1"),    # 2 + 1 + 1
        BotWeightInput("b", "ETHUSDT", "5m", False, "2"),    # a new symbol (4): does not fit
        BotWeightInput("c", "BTCUSDT", "5m", False, "3"),    # costs nothing more
        BotWeightInput("d", "BTCUSDT", "15m", False, "4"),   # a new interval on a paid symbol: klines only (2)
    ]
    plan = plan_weight(bots, 6, LIMIT)
    assert plan.kept == ["a", "c", "d"] and plan.deferred == ["b"]
    assert (plan.needed, plan.planned) == (4 + 4 + 2, 6)


def test_accounts_cost_the_plan_nothing():
    # 500 bots on one market, each on a live connection of its own user: the market is paid once.
    documents = []
    for _ in range(500):
        document = bot_document(ObjectId(), PRESET_BOTS[0], symbol="BTCUSDT")
        document["exchangeConnectionId"] = ObjectId()
        documents.append(document)
    bots = [parse_bot(document) for document in documents]
    inputs = weight_inputs(bots)
    assert [item.key for item in inputs] == [bot.instance_id for bot in bots]
    assert {(item.symbol, item.interval) for item in inputs} == {("BTCUSDT", bots[0].config.interval)}
    plan = plan_weight(inputs, 4, LIMIT)
    assert (plan.needed, plan.planned, plan.deferred, len(plan.kept)) == (4, 4, [], 500)


def test_inputs_carry_the_open_position_and_a_stable_order():
    user = ObjectId()
    position = {"symbol": "BTCUSDT", "side": "LONG", "entryPrice": 100.0, "quantity": 0.5, "leverage": 10}
    flat = parse_bot(bot_document(user, PRESET_BOTS[0], symbol="BTCUSDT"))
    opened = parse_bot(bot_document(user, PRESET_BOTS[0], symbol="BTCUSDT", currentPosition=position))
    assert [(item.has_position, item.order_key) for item in weight_inputs([flat, opened])] == [
        (False, str(flat.instance_id)), (True, str(opened.instance_id))
    ]


def test_a_zero_budget_turns_planning_off():
    plan = plan_weight(population(3000, symbols=3000), 0, LIMIT)
    assert plan.deferred == [] and len(plan.kept) == 3000 and plan.needed == 3000 * 4 > DEFAULT_WEIGHT_BUDGET


def test_a_larger_candle_limit_costs_more():
    bots = population(10, symbols=10)
    assert plan_weight(bots, 0, 1000).needed - plan_weight(bots, 0, 300).needed == 10 * (10 - 2)
    assert klines_weight(1001) == 10 and klines_weight(301) == 2
