"""A real Prometheus (Debian's binary) scrapes the processes of a local stack and raises a real alert.

The shipped missed-tick rule, with its two 300-s intervals shortened to seconds: a tick, then none, and
Prometheus's own API reports TickMissed going from inactive to firing. The same run checks that every
service is scraped (``up``), which is what the ServiceDown alert stands on."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackConfig, StackPorts
from tests.support.processes import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
SERVICES = ("gateway", "market", "strategy", "executor")
MISSED_AFTER_S = 4


def short_missed_tick_rule() -> dict:
    """alerts.yml's TickMissed as shipped, but two 'intervals' of 2 s instead of 300 s and no `for`."""
    rules = yaml.safe_load(RULES.read_text())
    [rule] = [rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == "TickMissed"]
    assert "> 600" in rule["expr"]
    rule = {**rule, "expr": rule["expr"].replace("> 600", f"> {MISSED_AFTER_S}"), "for": "0s"}
    return {"groups": [{"name": "short-interval", "interval": "1s", "rules": [rule]}]}


@pytest.fixture
def monitored_stack(mongo_uri: str) -> Iterator[tuple[Stack, dict[str, int]]]:
    metrics_ports = {name: free_port() for name in SERVICES}
    config = StackConfig(
        mongodb_uri=mongo_uri, cron_secret="prom-cron-" + secrets.token_urlsafe(32),
        credentials_keys=Fernet.generate_key().decode(), mongodb_db=f"prom_{uuid.uuid4().hex[:10]}",
        ports=StackPorts.free(),
        env={name: {"METRICS_PORT": str(port)} for name, port in metrics_ports.items()},
    )
    stack = Stack(config).start()
    try:
        yield stack, metrics_ports
    finally:
        stack.stop()


@pytest.fixture
def prometheus(monitored_stack: tuple[Stack, dict[str, int]], tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs Debian's prometheus"
    _, metrics_ports = monitored_stack
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(short_missed_tick_rule()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [{"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for name, port in metrics_ports.items()],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 30, "Prometheus ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def until(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for: {what}")


def alert_state(url: str, name: str) -> str:
    alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    states = {alert["state"] for alert in alerts if alert["labels"]["alertname"] == name}
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


def scraped_up(url: str) -> dict[str, float]:
    result = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=5).json()["data"]["result"]
    return {item["metric"]["job"]: float(item["value"][1]) for item in result}


def test_a_real_prometheus_fires_the_missed_tick_alert_when_ticks_stop(monitored_stack, prometheus) -> None:
    stack, _ = monitored_stack
    until(lambda: scraped_up(prometheus) == dict.fromkeys(SERVICES, 1.0), 30, "every service scraped and up")

    response = httpx.get(stack.config.gateway_url + "/api/cron/run-bots",
                         headers={"Authorization": f"Bearer {stack.config.cron_secret}"}, timeout=60)
    assert response.status_code == 200
    ticked = time.monotonic()
    until(lambda: httpx.get(f"{prometheus}/api/v1/query",
                            params={"query": "tradebot_last_tick_timestamp_seconds > 0"}, timeout=5)
          .json()["data"]["result"], 15, "the tick's timestamp scraped")
    if time.monotonic() - ticked < MISSED_AFTER_S - 1:
        assert alert_state(prometheus, "TickMissed") == "inactive"   # a tick just happened

    until(lambda: alert_state(prometheus, "TickMissed") == "firing", 30, "TickMissed firing")
    assert time.monotonic() - ticked >= MISSED_AFTER_S   # not before two (short) intervals without a tick
