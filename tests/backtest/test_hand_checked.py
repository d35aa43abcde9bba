"""Hand-checked trades on crafted series, through the live executor cycle and paper broker.

Common numbers (balance 10000 USDT, leverage 10, position size 10 %, stop-loss 2 %,
take-profit 4 %, taker fee 0.0005, tick 0.01, step 0.001):

LONG at 100.50 (the close of the BUY candle is the step's price):
  margin budget 10000 * 10 % = 1000, notional 1000 * 10 = 10000,
  quantity = floor(10000 / 100.50 = 99.50248.., step 0.001) = 99.502,
  entry fee = 99.502 * 100.50 * 0.0005 = 9999.951 * 0.0005 = 4.9999755,
  stop-loss = 100.50 * 0.98 = 98.49, take-profit = 100.50 * 1.04 = 104.52.
  Stopped out at 98.49: gross = (98.49 - 100.50) * 99.502 = -2.01 * 99.502 = -199.99902,
  exit fee = 98.49 * 99.502 * 0.0005 = 9799.95198 * 0.0005 = 4.89997599,
  net = -199.99902 - 4.9999755 - 4.89997599 = -209.89897149.

SHORT at 99.50:
  quantity = floor(10000 / 99.50 = 100.50251.., 0.001) = 100.502,
  entry fee = 100.502 * 99.50 * 0.0005 = 9999.949 * 0.0005 = 4.9999745,
  stop-loss = 99.50 * 1.02 = 101.49, take-profit = 99.50 * 0.96 = 95.52.
  Target hit at 95.52: gross = (99.50 - 95.52) * 100.502 = 399.99796,
  exit fee = 95.52 * 100.502 * 0.0005 = 9599.95104 * 0.0005 = 4.79997552,
  net = 399.99796 - 4.9999745 - 4.79997552 = 390.19800998.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from services.backtest.engine import run_backtest
from services.backtest.report import summary
from tests.backtest.scenario import (
    ScriptedStrategy,
    buy_signal,
    crafted,
    open_ms,
    params,
    sell_signal,
    step_after,
)

LONG_STOPPED_NET = "-209.89897149"
SHORT_TARGET_NET = "390.19800998"


async def test_long_entry_then_stop_loss_on_the_candle_low() -> None:
    history = crafted(260, {210: buy_signal(), 215: ("100.00", "100.00", "98.00", "98.60")})
    result = await run_backtest(params(), history, strategy=ScriptedStrategy())

    assert len(result.trades) == 1
    trade = result.trades[0]
    assert (trade["side"], trade["entryPrice"], trade["quantity"]) == ("LONG", "100.5", "99.502")
    assert (trade["exitPrice"], trade["reason"]) == ("98.49", "STOP_LOSS")
    assert trade["grossPnl"] == "-199.99902"
    assert Decimal(trade["fees"]) == Decimal("4.9999755") + Decimal("4.89997599")
    assert Decimal(trade["realizedPnl"]) == Decimal(LONG_STOPPED_NET)
    # Opened at the step after the signal candle closed; closed when candle 215 closed.
    assert trade["openTimeMs"] == step_after(210)
    assert trade["closeTimeMs"] == open_ms(215) + 299_999
    assert result.equity[-1] == Decimal("10000") + Decimal(LONG_STOPPED_NET)


async def test_short_entry_then_take_profit_on_the_candle_low() -> None:
    history = crafted(260, {220: sell_signal(), 230: ("100.00", "100.00", "95.00", "96.00")})
    result = await run_backtest(params(), history, strategy=ScriptedStrategy())

    assert len(result.trades) == 1
    trade = result.trades[0]
    assert (trade["side"], trade["entryPrice"], trade["quantity"]) == ("SHORT", "99.5", "100.502")
    assert (trade["exitPrice"], trade["reason"]) == ("95.52", "TAKE_PROFIT")
    assert trade["grossPnl"] == "399.99796"
    assert Decimal(trade["realizedPnl"]) == Decimal(SHORT_TARGET_NET)
    assert result.equity[-1] == Decimal("10000") + Decimal(SHORT_TARGET_NET)


async def test_a_candle_touching_both_stop_and_target_counts_as_the_stop() -> None:
    # High 105 reaches the 104.52 target, low 98 the 98.49 stop: the stop is assumed first.
    history = crafted(260, {210: buy_signal(), 212: ("100.00", "105.00", "98.00", "101.00")})
    result = await run_backtest(params(), history, strategy=ScriptedStrategy())

    assert [(t["reason"], t["exitPrice"]) for t in result.trades] == [("STOP_LOSS", "98.49")]
    assert Decimal(result.trades[0]["realizedPnl"]) == Decimal(LONG_STOPPED_NET)


async def test_summary_of_one_win_and_one_loss() -> None:
    history = crafted(280, {
        210: buy_signal(), 215: ("100.00", "100.00", "98.00", "98.60"),
        240: sell_signal(), 250: ("100.00", "100.00", "95.00", "96.00"),
    })
    result = await run_backtest(params(), history, strategy=ScriptedStrategy())
    report = summary(result)

    # The short is sized from the balance after the loss: 10000 - 209.89897149 = 9790.10102851,
    # notional 9790.10102851, quantity floor(9790.10102851 / 99.50 = 98.39297.., 0.001) = 98.392.
    assert [t["quantity"] for t in result.trades] == ["99.502", "98.392"]
    # short: gross (99.50 - 95.52) * 98.392 = 391.60016; fees 98.392 * 99.50 * 0.0005 = 4.895002
    # + 98.392 * 95.52 * 0.0005 = 4.69920192; net 391.60016 - 9.59420392 = 382.00595608.
    assert result.trades[1]["realizedPnl"] == "382.00595608"
    assert report["trades"] == 2 and report["winningTrades"] == 1 and report["winRatePercent"] == 50.0
    # total = -209.89897149 + 382.00595608 = 172.10698459; average = 86.053492295 -> 86.0534923 (8 places)
    assert report["totalPnl"] == "172.10698459"
    assert report["averagePnl"] == "86.0534923"
    # profit factor = 382.00595608 / 209.89897149 = 1.8199515.. -> 1.82 (4 places)
    assert report["profitFactor"] == 1.82
    assert report["finalEquity"] == "10172.10698459"
    assert report["openPositionAtEnd"] is None


async def test_daily_loss_pause_holds_the_rest_of_the_utc_day_and_resumes_the_next() -> None:
    # maxDailyLoss 100: the 209.9 stop-loss at candle 215 trips DAILY_LOSS in that cycle.
    # A BUY at candle 250 (same day, 20:50 UTC) is ignored; the BUY at candle 290 (Jan 2) trades
    # and takes profit at candle 295 (high 105 >= 104.52).
    history = crafted(300, {
        210: buy_signal(), 215: ("100.00", "100.00", "98.00", "98.60"),
        250: buy_signal(), 290: buy_signal(), 295: ("100.00", "105.00", "100.00", "101.00"),
    })
    result = await run_backtest(params(max_daily_loss="100"), history, strategy=ScriptedStrategy())

    assert [(trip.rule, trip.time_ms, trip.paused) for trip in result.safety_trips] == [
        ("DAILY_LOSS", step_after(215), True)
    ]
    assert [trade["openTimeMs"] for trade in result.trades] == [step_after(210), step_after(290)]
    paused_steps = [t for t, paused in zip(result.step_times_ms, result.paused, strict=True) if paused]
    assert paused_steps[0] == step_after(215)
    assert paused_steps[-1] == open_ms(287)              # 23:55, the last step of Jan 1
    assert open_ms(288) not in paused_steps                # Jan 2 00:00: resumed


async def test_consecutive_loss_pause_stays_unless_asked_to_resume_next_day() -> None:
    history = crafted(300, {210: buy_signal(), 215: ("100.00", "100.00", "98.00", "98.60"), 290: buy_signal()})
    # Without a stop or target after candle 290, a resumed bot's trade is still open at the end.
    stays = await run_backtest(params(max_consecutive_losses=1), history, strategy=ScriptedStrategy())
    resumes = await run_backtest(params(max_consecutive_losses=1, resume_after_losses="next-day"), history,
                                 strategy=ScriptedStrategy())

    assert [trip.rule for trip in stays.safety_trips] == ["CONSECUTIVE_LOSSES"]
    assert len(stays.trades) == 1 and stays.paused[-1] is True and stays.open_position is None
    assert len(resumes.trades) == 1 and resumes.paused[-1] is False
    assert resumes.open_position is not None and resumes.open_position.side == "LONG"
    assert summary(resumes)["openPositionAtEnd"]["entryPrice"] == "100.5"


async def test_a_15_minute_cadence_sees_only_the_latest_candle_but_triggers_stops_on_every_candle() -> None:
    # Steps every 15 minutes fall when candles 2, 5, 8, ... have just closed (213 * 5 min = 71 * 15 min).
    # The BUY candle 212 is the latest at the 17:45 step; the BUY candle 210 closes between steps and,
    # as live, is never seen. The stop is hit inside candle 214, between steps: the next cycle still
    # gets candles 213-215 and books the stop at 98.49, stamped with candle 214's close.
    history = crafted(260, {210: buy_signal(), 212: buy_signal(), 214: ("100.00", "100.00", "98.00", "99.00")})
    result = await run_backtest(replace(params(), step_ms=15 * 60_000), history, strategy=ScriptedStrategy())

    assert [(t["openTimeMs"], t["reason"], t["exitPrice"]) for t in result.trades] == [
        (step_after(212), "STOP_LOSS", "98.49")
    ]
    assert result.trades[0]["closeTimeMs"] == open_ms(214) + 299_999
    assert [t for t in result.step_times_ms if step_after(209) <= t <= step_after(216)] == [
        step_after(209), step_after(212), step_after(215)
    ]
