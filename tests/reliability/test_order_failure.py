"""Seed scenario 7 through the real processes: Binance refuses the order, the position is untouched,
the error is logged with its details, and the next tick places the order once."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from tradebot.v1 import common_pb2, market_pb2, market_pb2_grpc, strategy_pb2, strategy_pb2_grpc

from tests.reliability.ledger import LEDGER
from tests.reliability.support import check_results_written

pytestmark = pytest.mark.e2e

MARGIN_INSUFFICIENT = "Margin is insufficient."


def _tradeable_on_the_fake_exchange(rstack) -> tuple[int, str, str]:
    """A (strategy, symbol, interval) giving BUY/SELL now, on a symbol the fake futures server lists."""
    config = rstack.stack.config
    with grpc.insecure_channel(config.address("market")) as market_channel, grpc.insecure_channel(
        config.address("strategy")
    ) as strategy_channel:
        market = market_pb2_grpc.MarketDataStub(market_channel)
        strategy = strategy_pb2_grpc.StrategyStub(strategy_channel)
        for interval in ("1d", "4h", "1h"):
            for symbol in ("BTCUSDT", "ETHUSDT"):
                candles = market.GetCandles(market_pb2.GetCandlesRequest(symbol=symbol, interval=interval, limit=300),
                                            timeout=10).candles  # fmt: skip
                for bot_id in (1, 2, 3, 4):
                    signal = strategy.Analyze(strategy_pb2.AnalyzeRequest(
                        bot_id=bot_id, symbol=symbol, interval=interval, candles=candles, use_ai=False), timeout=10
                    ).signal  # fmt: skip
                    if signal.action in (common_pb2.ACTION_BUY, common_pb2.ACTION_SELL):
                        return bot_id, symbol, interval
    pytest.skip("no strategy gives a BUY or SELL on BTCUSDT/ETHUSDT right now")


def test_a_refused_order_is_logged_leaves_no_position_and_is_retried_next_tick(rstack):
    strategy, symbol, interval = _tradeable_on_the_fake_exchange(rstack)
    user_id, _ = rstack.add_testnet_user()
    bot = rstack.add_bot(user_id, strategy, symbol=symbol, config={"interval": interval, "confidenceThreshold": 1})
    futures = rstack.futures
    futures.call(futures.fake.fail_next, "POST", "/fapi/v1/order", code=-2019, msg=MARGIN_INSUFFICIENT, times=1)
    LEDGER.fault("Binance refused the entry order (-2019 margin insufficient)")
    started = datetime.now(UTC)

    body = rstack.tick().json()

    [result] = body["results"]
    assert result["orderPlaced"] is False and result["hasPosition"] is False, result
    assert result["error"] and MARGIN_INSUFFICIENT in result["error"], result
    document = rstack.bot(bot)
    assert document["currentPosition"] is None and document["lastError"] == result["error"], document
    errors = rstack.logs(bot, logType="ERROR")
    assert len(errors) == 1 and MARGIN_INSUFFICIENT in errors[0]["message"], rstack.logs(bot)
    assert futures.call(futures.fake.position, symbol).amount == 0
    check_results_written(rstack.db, body, started)

    again = rstack.tick().json()

    [result] = again["results"]
    assert result["orderPlaced"] is True and result["hasPosition"] is True, result
    assert rstack.bot(bot)["lastError"] is None
    accepted = [order for order in futures.call(futures.fake.orders_sent) if order.status == 200
                and order.params.get("symbol") == symbol]  # fmt: skip
    LEDGER.orders(1, max(0, len(accepted) - 1))
    assert len(accepted) == 1, accepted
    assert futures.call(futures.fake.position, symbol).amount != 0
