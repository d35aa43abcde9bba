"""A service down at tick start: its bots fail with a clear reason, the tick answers, the next tick recovers."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("service", "stage"), [("executor", "Executor failed"), ("market", "Market data for")])
def test_a_dead_service_fails_its_bots_and_a_restart_recovers(stack, service, stage):
    user_id, _ = stack.add_user()
    bots = [stack.add_bot(user_id, 1), stack.add_bot(user_id, 2)]
    stack.stack.processes[service].kill()  # a crash, not a graceful stop
    try:
        started = time.monotonic()
        response = stack.tick()
        assert time.monotonic() - started < 10
        assert response.status_code == 200
        body = response.json()
        assert body["summary"]["failed"] == 2, body
        for result in body["results"]:
            assert result["error"].startswith(stage) and "UNAVAILABLE" in result["error"], result
        for bot_id in bots:
            bot = stack.bot(bot_id)
            assert "UNAVAILABLE" in bot["lastError"] and "lockOwner" not in bot
            assert [log["logType"] for log in stack.logs(bot_id)] == ["ERROR"]
    finally:
        stack.stack.restart(service)

    body = stack.tick().json()
    assert body["summary"]["successful"] == 2, body
    assert all(stack.bot(bot_id)["lastError"] is None for bot_id in bots)
