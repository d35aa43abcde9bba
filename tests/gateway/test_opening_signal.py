"""Every closed trade is linked to the signal that opened it, at write time: the entry stores the signal on the
position, the position keeps it while it stays open, and the CLOSE_POSITION TradeLog carries it."""

from __future__ import annotations

from tradebot.v1 import common_pb2, executor_pb2

from services.analytics.trade_signals import from_trade_logs, opening_query

BTC = "BTCUSDT"


async def test_an_entrys_signal_stays_on_its_position_and_is_copied_onto_the_close(gateway):
    [bot_id] = gateway.add_bots(1)
    await gateway.tick()   # opens LONG on a BUY at 82.5 % confirmed by the AI
    stored = gateway.bot(bot_id)["currentPosition"]["openingSignal"]
    assert stored["strategy"] == "Strategy 1" and stored["confidence"] == 82.5 and stored["action"] == "BUY"
    assert stored["aiVerdict"] == "BUY" and stored["stopLoss"] == "98.5"

    gateway.fakes.strategy.signals[1] = (common_pb2.ACTION_SELL, 91.0)   # a later, different signal
    await gateway.tick()   # the position stays open: it keeps the signal that opened it
    assert gateway.bot(bot_id)["currentPosition"]["openingSignal"] == stored

    gateway.fakes.executor.closed_trades[str(bot_id)] = [executor_pb2.ClosedTrade(
        symbol=BTC, side=common_pb2.SIDE_LONG, entry_price="101.5", exit_price="98.5", quantity="0.5",
        realized_pnl="-1.6", fees="0.1", reason="STOP_LOSS", close_time_ms=2_000)]
    await gateway.tick()
    [close] = gateway.logs(bot_id, action="CLOSE_POSITION")
    assert close["data"]["openingSignal"] == stored

    # Calibration links it from the close alone: no opening or analysis has to be found.
    assert opening_query([close])["$or"] == [{"_id": None}]
    linked = from_trade_logs(gateway.db)
    [trade] = linked.trades
    assert linked.unlinked == 0
    assert trade.strategy == "Strategy 1" and trade.confidence == 82.5 and trade.ai_verdict == "BUY"
    assert float(trade.r_multiple) == -1.6 / (3.0 * 0.5)


async def test_a_position_the_gateway_did_not_open_gets_no_invented_signal(gateway):
    [bot_id] = gateway.add_bots(1, currentPosition={
        "symbol": BTC, "side": "LONG", "entryPrice": 100.0, "quantity": 1.0, "leverage": 10, "stopLoss": 95.0,
        "takeProfit": 110.0, "pnl": 0.0, "pnlPercent": 0.0, "openTime": None})
    await gateway.tick()
    assert "openingSignal" not in gateway.bot(bot_id)["currentPosition"]
