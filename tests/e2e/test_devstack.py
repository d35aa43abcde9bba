"""`make run` as a user sees it: `python -m services.devstack` starts everything, ticks, stops on a signal."""

from __future__ import annotations

import re
import signal
import stat

import httpx
import pytest

from services.devstack.processes import ChildProcess, free_port, python_module

pytestmark = pytest.mark.e2e


def test_devstack_seeds_ticks_and_stops_cleanly(tmp_path):
    ports = {name: free_port() for name in ("market", "strategy", "executor", "gateway")}
    env = {
        "DEVSTACK_DATA_DIR": str(tmp_path / "dev"),
        "MARKET_ADDR": f"127.0.0.1:{ports['market']}",
        "STRATEGY_ADDR": f"127.0.0.1:{ports['strategy']}",
        "EXECUTOR_ADDR": f"127.0.0.1:{ports['executor']}",
        "GATEWAY_PORT": str(ports["gateway"]),
        "CRON_LOCAL_INTERVAL": "3600",  # the start tick only, within this test
        # Force the embedded database and the dev secrets, whatever the outer environment holds.
        "MONGODB_URI": "",
        "CRON_SECRET": "",
        "CREDENTIALS_KEYS": "",
        "OPENAI_API_KEY": "",
    }
    devstack = ChildProcess("devstack", python_module("services.devstack"), env)
    try:
        devstack.wait_for_line(r"seeded an empty database", timeout=20)
        curl = devstack.wait_for_line(r'curl -H "Authorization: Bearer \$\(cat (\S+)\)" (\S+)', timeout=25)
        summary = devstack.wait_for_line(r"tick \S+ 200 in [\d.]+s: 4 bots, 4 ok, 0 failed", timeout=15)
        assert summary is not None

        secret_file, url = curl.group(1), curl.group(2)
        secret_path = tmp_path / "dev" / "cron_secret"
        assert secret_file == str(secret_path)
        assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
        secret = secret_path.read_text().strip()
        assert len(secret) >= 32 and secret not in devstack.output()
        assert (tmp_path / "dev" / "mongo.sqlite").exists()

        # The printed curl command works (and a second tick sees the same four demo bots).
        response = httpx.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        assert response.status_code == 200
        body = response.json()
        assert body["summary"]["totalBots"] == 4
        assert {result["botName"] for result in body["results"]} == {
            "Bitcoin Pro", "Safe Trader", "Trend Rider", "Range Scalper",
        }  # fmt: skip
    finally:
        devstack.process.send_signal(signal.SIGINT)
        code = devstack.process.wait(30)
        devstack.stop()
    assert code == 0, devstack.output()
    assert re.search(r"^stopped$", devstack.output(), re.MULTILINE)
    with pytest.raises(httpx.HTTPError):  # the gateway is gone with it
        httpx.get(f"http://127.0.0.1:{ports['gateway']}/healthz", timeout=1)


def test_scheduler_summary_lines_say_what_happened():
    from services.devstack.scheduler import summary_line

    ok = {"summary": {"totalBots": 4, "successful": 3, "failed": 1, "withPositions": 2, "skipped": 0}}
    assert summary_line(200, ok, 0.42).endswith("200 in 0.42s: 4 bots, 3 ok, 1 failed, 2 with positions, 0 skipped")
    idle = {"message": "No active bots", "summary": {"totalBots": 0}}
    assert summary_line(200, idle, 0.1).endswith("0 bots, 0 ok, 0 failed, 0 with positions, 0 skipped (No active bots)")
    assert summary_line(503, {"success": False, "error": "Database unavailable"}, 5.0).endswith(
        "503 in 5.00s: Database unavailable"
    )
    assert summary_line(502, None, 0.1).endswith(": unreadable response")
