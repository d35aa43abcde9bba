"""Bot documents from the shared database: defaults, tolerated encodings, precise errors."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bson import Decimal128, ObjectId

from services.devstack.seed import PRESET_BOTS, bot_document
from services.common.bot_documents import InvalidBotDocument, parse_bot


def document(**config_overrides):
    doc = bot_document(ObjectId(), PRESET_BOTS[0])
    doc["config"] = {"leverage": 10, "stopLossPercent": 3, "takeProfitPercent": 6, "positionSizePercent": 10,
                     "maxDailyLoss": 100, **config_overrides}  # fmt: skip
    return doc


def test_seed_fields_with_documented_defaults():
    bot = parse_bot(document())
    assert bot.bot_id == 1 and bot.symbol == "BTCUSDT" and bot.bot_name == "Bitcoin Pro"
    assert bot.config.interval == "5m"
    assert bot.config.confidence_threshold == 70.0
    assert bot.config.max_consecutive_losses == 3
    assert bot.config.stop_loss_percent == Decimal("3")
    assert bot.exchange_connection_id is None and bot.position is None
    assert bot.statistics.total_trades == 0 and bot.statistics.stored_as_object


def test_javascript_doubles_and_decimal128_are_read_exactly():
    bot = parse_bot(document(leverage=5.0, stopLossPercent=1.1, maxDailyLoss=Decimal128("99.95")))
    assert bot.config.leverage == 5
    assert bot.config.stop_loss_percent == Decimal("1.1")  # not 1.100000000000000088817841970012523
    assert bot.config.max_daily_loss == Decimal("99.95")


def test_stored_position_is_parsed():
    doc = document()
    doc["currentPosition"] = {"symbol": "BTCUSDT", "side": "SHORT", "entryPrice": 64250.1, "quantity": 0.015,
                              "leverage": 10, "stopLoss": 66177.6, "takeProfit": 60395.1, "pnl": -1.5,
                              "pnlPercent": -1.2, "openTime": datetime(2025, 10, 7, 12, tzinfo=UTC)}  # fmt: skip
    position = parse_bot(doc).position
    assert position is not None
    assert (position.side, position.entry_price, position.quantity) == ("SHORT", Decimal("64250.1"), Decimal("0.015"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(botId=True), "botId must be an integer, got True"),
        (lambda d: d.update(botId=0), "botId must be one of 1, 2, 3, 4, got 0"),
        (lambda d: d.update(botName=""), "botName must be a non-empty string"),
        (lambda d: d.update(symbol="btcusdt"), "symbol must be a Binance"),
        (lambda d: d.update(config=[1, 2]), "config must be an object, got [1, 2]"),
        (lambda d: d["config"].update(leverage=2.5), "config.leverage must be an integer, got 2.5"),
        (lambda d: d["config"].update(leverage=0), "config.leverage must be between 1 and 125, got 0"),
        (lambda d: d["config"].pop("takeProfitPercent"), "config.takeProfitPercent is missing"),
        (lambda d: d["config"].update(stopLossPercent=100), "config.stopLossPercent must be below 100, got 100"),
        (lambda d: d["config"].update(takeProfitPercent=150), "config.takeProfitPercent must be below 100, got 150"),
        (lambda d: d["config"].update(stopLossPercent=0.01), "config.stopLossPercent must be at least 0.05, got 0.01"),
        (lambda d: d["config"].update(positionSizePercent=float("nan")), "config.positionSizePercent must be a finite number"),
        (lambda d: d["config"].update(confidenceThreshold=101), "config.confidenceThreshold must be between 0 and 100"),
        (lambda d: d["config"].update(maxConsecutiveLosses=0), "config.maxConsecutiveLosses must be between 1 and 1000"),
        (lambda d: d.update(exchangeConnectionId="abc"), "exchangeConnectionId must be an ObjectId, got 'abc'"),
        (lambda d: d.update(currentPosition={"side": "UP"}), "currentPosition.side must be LONG or SHORT, got 'UP'"),
        (lambda d: d.update(currentPosition={"symbol": "ETHUSDT"}), "currentPosition.symbol must be the bot's symbol"),
        (lambda d: d.update(statistics={"totalTrades": -1}), "statistics.totalTrades must not be negative"),
        # Liquidated about 1 % from entry at 50x: a 3 % stop would never fire.
        (lambda d: d["config"].update(leverage=50, stopLossPercent=3),
         "config.stopLossPercent 3 at leverage 50 is at or beyond liquidation: the position is liquidated about 1% "
         "from its entry"),
    ],
)
def test_broken_documents_name_the_field_and_value(mutate, message):
    doc = document()
    mutate(doc)
    with pytest.raises(InvalidBotDocument) as caught:
        parse_bot(doc)
    assert message in caught.value.message


def test_strategy_params_margin_type_notional_cap_and_use_ai_are_read():
    bot = parse_bot(document(strategyParams={"rsiOversold": 25, "emaFast": 9.5}, maxPositionNotional="2500.50",
                             marginType="crossed", useAi=False))  # fmt: skip
    assert bot.config.strategy_params == (("emaFast", 9.5), ("rsiOversold", 25.0))  # sorted: a stable group key
    assert bot.config.max_position_notional == Decimal("2500.50")
    assert bot.config.margin_type == "CROSSED"
    assert bot.config.use_ai is False


def test_new_config_fields_have_safe_defaults():
    bot = parse_bot(document(strategyParams=None, maxPositionNotional=None))
    assert bot.config.strategy_params == ()
    assert bot.config.max_position_notional is None
    assert bot.config.margin_type == "ISOLATED"
    assert bot.config.use_ai is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategyParams": [1, 2]}, "config.strategyParams must be an object of name -> number, got [1, 2]"),
        ({"strategyParams": {"rsiOversold": "25"}}, "config.strategyParams.rsiOversold must be a number, got '25'"),
        ({"strategyParams": {"rsiOversold": float("nan")}}, "config.strategyParams.rsiOversold must be a finite number"),
        ({"strategyParams": {"rsiOversold": float("inf")}}, "config.strategyParams.rsiOversold must be a finite number"),
        ({"strategyParams": {"rsi": {"oversold": 25}}}, "config.strategyParams.rsi must be a number, got {'oversold': 25}"),
        ({"strategyParams": {"rsiOversold": True}}, "config.strategyParams.rsiOversold must be a number, got True"),
        ({"strategyParams": {"$where": 1}}, "config.strategyParams has an invalid parameter name '$where'"),
        ({"maxPositionNotional": 0}, "config.maxPositionNotional must be greater than 0, got 0"),
        ({"maxPositionNotional": -5}, "config.maxPositionNotional must be greater than 0, got -5"),
        ({"maxPositionNotional": "lots"}, "config.maxPositionNotional must be a number, got 'lots'"),
        ({"marginType": "PORTFOLIO"}, "config.marginType must be ISOLATED or CROSSED, got 'PORTFOLIO'"),
        ({"useAi": "yes"}, "config.useAi must be true or false, got 'yes'"),
    ],
)
def test_bad_new_config_fields_name_the_field_and_value(overrides, message):
    with pytest.raises(InvalidBotDocument) as raised:
        parse_bot(document(**overrides))
    assert raised.value.message.startswith(message)
