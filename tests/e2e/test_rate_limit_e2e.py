"""Seed scenario 4 for real: Binance answers 429, the market service backs off, the bots sit the cycle out."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackPorts
from tests.fakes.binance_market import FakeBinanceMarket, too_many_requests

pytestmark = pytest.mark.e2e


def test_exchange_rate_limit_skips_the_bots_with_a_warning_and_the_backoff_holds(stack):
    user_id, _ = stack.add_user()
    bots = [stack.add_bot(user_id, 1, symbol="BTCUSDT"), stack.add_bot(user_id, 2, symbol="BTCUSDT")]
    shared = stack.stack.config
    with FakeBinanceMarket() as binance:
        # A market service on the (fake) exchange, and a gateway using it; strategy and executor are shared.
        config = dataclasses.replace(
            shared,
            ports=StackPorts(market=free_port(), strategy=shared.ports.strategy, executor=shared.ports.executor,
                             gateway=free_port()),
            env={**shared.env, "market": {"MARKET_DATA_SOURCE": "binance", "BINANCE_FUTURES_URL": binance.url,
                                          "BINANCE_SPOT_URL": binance.url}},
        )  # fmt: skip
        exchange_stack = Stack(config)
        try:
            exchange_stack.start_services(("market",))
            exchange_stack.start_gateway()
            binance.fail_next("/fapi/v1/klines", too_many_requests(retry_after=30), times=10)

            response = _tick(stack, config.gateway_url)

            body = response.json()
            assert response.status_code == 200
            assert body["summary"] == {"totalBots": 2, "successful": 0, "failed": 0, "withPositions": 0, "skipped": 2}
            for result in body["results"]:
                assert result["status"] == "skipped" and "rate limited" in result["error"], result
            for bot_id in bots:
                [warning] = stack.logs(bot_id)
                assert (warning["logType"], warning["severity"]) == ("SYSTEM", "WARNING")
                bot = stack.bot(bot_id)
                assert bot["lastError"] is None and "lockOwner" not in bot and bot["status"] == "ACTIVE"
            # The back-off holds: the next delivery does not hammer the exchange either.
            klines_before = binance.count("/fapi/v1/klines")
            again = _tick(stack, config.gateway_url).json()
            assert again["summary"]["skipped"] == 2
            assert binance.count("/fapi/v1/klines") == klines_before
        finally:
            exchange_stack.stop()


def _tick(stack, gateway_url: str) -> httpx.Response:
    return httpx.get(f"{gateway_url}/api/cron/run-bots", headers={"Authorization": f"Bearer {stack.cron_secret}"},
                     timeout=60)  # fmt: skip
