"""Per-bot configuration through a real tick: strategy overrides, AI choice, notional cap, margin type."""

from __future__ import annotations

from collections import Counter


BTC = "BTCUSDT"


def analyze_calls(gateway):
    return [request for request, _ in gateway.fakes.strategy.calls]


async def test_bots_with_different_params_get_their_own_analysis(gateway):
    plain = gateway.add_bots(2, symbol=BTC)
    tuned = gateway.add_bots(3, symbol=BTC, config={"strategyParams": {"rsiOversold": 25}})
    other = gateway.add_bots(1, symbol=BTC, config={"strategyParams": {"rsiOversold": 20.5}})

    body = await gateway.tick()

    assert body["summary"]["successful"] == 6
    params = Counter(tuple(sorted(request.params.items())) for request in analyze_calls(gateway))
    assert params == {(): 1, (("rsiOversold", 25.0),): 1, (("rsiOversold", 20.5),): 1}
    assert gateway.fakes.market.count("GetCandles") == 1  # the candles are still fetched once
    assert len(plain) + len(tuned) + len(other) == len(gateway.fakes.executor.calls)


async def test_params_the_strategy_rejects_fail_only_their_bots(gateway):
    good = gateway.add_bots(2, symbol=BTC)
    unknown = gateway.add_bots(1, symbol=BTC, config={"strategyParams": {"rsiOverbought": 80}})
    out_of_range = gateway.add_bots(1, symbol=BTC, config={"strategyParams": {"rsiOversold": 90}})

    body = await gateway.tick()

    assert body["summary"] == {"totalBots": 4, "successful": 2, "failed": 2, "withPositions": 2, "skipped": 0}
    expected = {
        unknown[0]: "Invalid config.strategyParams: Strategy 1 has no parameter rsiOverbought",
        out_of_range[0]: "Invalid config.strategyParams: Strategy 1 parameter rsiOversold must be between 5 and 45, got 90",
    }
    for bot_id, message in expected.items():
        assert gateway.bot(bot_id)["lastError"] == message
        [log] = gateway.logs(bot_id)
        assert (log["logType"], log["severity"], log["action"], log["message"]) == (
            "ERROR", "ERROR", "INVALID_STRATEGY_PARAMS", message,
        )  # fmt: skip
    for bot_id in good:
        assert gateway.bot(bot_id)["lastError"] is None
    assert len(gateway.fakes.executor.calls) == 2  # no executor cycle for a bot without an analysis


async def test_malformed_params_fail_the_bot_before_any_call(gateway):
    [bad] = gateway.add_bots(1, symbol=BTC, config={"strategyParams": {"rsiOversold": "low"}})
    [nested] = gateway.add_bots(1, symbol=BTC, config={"strategyParams": {"rsi": {"oversold": 25}}})
    [good] = gateway.add_bots(1, symbol=BTC)

    body = await gateway.tick()

    assert body["summary"]["failed"] == 2 and body["summary"]["successful"] == 1
    assert gateway.bot(bad)["lastError"] == (
        "Invalid bot document: config.strategyParams.rsiOversold must be a number, got 'low'"
    )
    assert gateway.bot(nested)["lastError"] == (
        "Invalid bot document: config.strategyParams.rsi must be a number, got {'oversold': 25}"
    )
    assert all(not request.params for request in analyze_calls(gateway))
    assert gateway.bot(good)["lastError"] is None


async def test_use_ai_is_per_bot_and_anded_with_the_setting(gateway_factory):
    async with gateway_factory() as gateway:
        with_ai = gateway.add_bots(2, symbol=BTC)
        without_ai = gateway.add_bots(2, symbol=BTC, config={"useAi": False})
        await gateway.tick()
        assert Counter(request.use_ai for request in analyze_calls(gateway)) == {True: 1, False: 1}
        assert len(with_ai) + len(without_ai) == len(gateway.fakes.executor.calls)

    gateway.fakes.reset()
    async with gateway_factory(use_ai=False) as gateway:
        gateway.add_bots(2, symbol=BTC, config={"useAi": True})
        await gateway.tick()
        assert [request.use_ai for request in analyze_calls(gateway)] == [False]


async def test_invalid_margin_type_fails_that_bot_alone(gateway):
    [bad] = gateway.add_bots(1, symbol=BTC, config={"marginType": "cross"})
    [good] = gateway.add_bots(1, symbol=BTC)
    body = await gateway.tick()
    assert body["summary"]["failed"] == 1 and body["summary"]["successful"] == 1
    assert gateway.bot(bad)["lastError"] == "Invalid bot document: config.marginType must be ISOLATED or CROSSED, got 'cross'"
    assert gateway.bot(good)["lastError"] is None
