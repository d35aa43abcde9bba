"""``make run``: the whole system on this machine, in the foreground, until Ctrl-C.

Starts the embedded MongoDB (unless MONGODB_URI is set), the market
(simulated feed unless MARKET_DATA_SOURCE says otherwise), strategy and
executor gRPC servers and the gateway; seeds an empty database with a demo
user, a paper connection and the four preset bots; then plays Upstash: one
tick at start and one every CRON_LOCAL_INTERVAL seconds (0: no ticks).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from services.common.settings import SettingsError, env_int, env_str
from services.devstack import dev_secrets
from services.devstack.processes import ChildProcess, start_mongo
from services.devstack.scheduler import LocalScheduler
from services.devstack.seed import is_empty, seed_demo
from services.devstack.stack import Stack, StackConfig, StackPorts

_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def echo_child(verbose: bool) -> Callable[[str, str], None]:
    """Children's JSON logs go to data/dev/logs/; the console gets errors (or everything when verbose)."""

    def echo(name: str, line: str) -> None:
        if not verbose:
            try:
                severity = json.loads(line).get("severity", "")
            except (ValueError, AttributeError):
                # Not a JSON log line: a crash or a library complaint (the mongo READY line is expected).
                severity = "INFO" if line.startswith("READY ") else "ERROR"
            if severity not in ("ERROR", "CRITICAL"):
                return
        say(f"[{name}] {line}")

    return echo


def _port_of(variable: str, default: int) -> int:
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    try:
        return int(value.rsplit(":", 1)[-1])
    except ValueError:
        raise SettingsError(f"environment variable {variable} must be host:port, got {value!r}") from None


def read_ports() -> StackPorts:
    return StackPorts(
        market=_port_of("MARKET_ADDR", 50051),
        strategy=_port_of("STRATEGY_ADDR", 50052),
        executor=_port_of("EXECUTOR_ADDR", 50053),
        gateway=env_int("GATEWAY_PORT", 8000, minimum=1, maximum=65535),
    )


def main() -> int:
    data_dir = Path(env_str("DEVSTACK_DATA_DIR", "data/dev"))
    try:
        interval = env_int("CRON_LOCAL_INTERVAL", 300, minimum=0)
        ports = read_ports()
        cron_secret, secret_source = dev_secrets.cron_secret(data_dir)
        if len(cron_secret) < dev_secrets.MIN_CRON_SECRET_LENGTH:
            raise SettingsError("environment variable CRON_SECRET must be at least 32 characters long")
        keys, keys_source = dev_secrets.credentials_keys(data_dir)
        status_token, status_source = dev_secrets.status_token(data_dir)
        dashboard_password, dashboard_source = dev_secrets.dashboard_password(data_dir)
    except SettingsError as error:
        say(f"devstack: {error}")
        return 2
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    echo = echo_child(env_str("DEVSTACK_VERBOSE", "0") == "1")
    database = env_str("MONGODB_DB", "tradebots")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    mongo: ChildProcess | None = None
    stack: Stack | None = None
    scheduler: LocalScheduler | None = None
    exit_code = 0
    try:
        mongo_uri = os.environ.get("MONGODB_URI", "").strip()
        if mongo_uri:
            mongo_label = "MONGODB_URI"
        else:
            mongo_path = data_dir / "mongo.sqlite"
            mongo, mongo_uri = start_mongo("sqlite", path=mongo_path, port=env_int("DEVSTACK_MONGO_PORT", 0),
                                           echo=echo, log_path=log_dir / "mongo.log")  # fmt: skip
            mongo_label = f"embedded, {mongo_path}"
        with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
            if is_empty(client[database]):
                seed_demo(client[database], keys.split(",")[0].strip())
                say("seeded an empty database: demo user, paper connection, the four preset bots")
        config = StackConfig(
            mongodb_uri=mongo_uri,
            cron_secret=cron_secret,
            credentials_keys=keys,
            mongodb_db=database,
            ports=ports,
            env={
                "market": {"MARKET_DATA_SOURCE": env_str("MARKET_DATA_SOURCE", "simulated")},
                # Without an OpenAI key, asking for AI confirmation would only log a fallback per bot.
                "gateway": {"TICK_USE_AI": env_str("TICK_USE_AI", "true" if os.environ.get("OPENAI_API_KEY") else "false"),
                            "STATUS_TOKEN": status_token, "DASHBOARD_PASSWORD": dashboard_password},
            },
            echo=echo,
            log_dir=log_dir,
        )
        stack = Stack(config).start()
        _banner(config, mongo_uri, mongo_label, secret_source, keys_source, log_dir, interval, status_source,
                dashboard_source)
        if interval > 0:
            scheduler = LocalScheduler(config.gateway_url, cron_secret, interval, report=say)
            scheduler.start()
        while not stop.wait(0.5):
            dead = stack.dead() + ([] if mongo is None or mongo.alive() else ["mongo"])
            if dead:
                say(f"devstack: {', '.join(dead)} exited unexpectedly; stopping (logs in {log_dir})")
                exit_code = 1
                break
    except (TimeoutError, RuntimeError, OSError, PyMongoError) as error:
        say(f"devstack: could not start: {type(error).__name__}: {error}")
        exit_code = 1
    finally:
        say("stopping...")
        if scheduler is not None:
            scheduler.stop()
        if stack is not None:
            stack.stop()
        if mongo is not None:
            mongo.stop()
        say("stopped")
    return exit_code


def _banner(
    config: StackConfig,
    mongo_uri: str,
    mongo_label: str,
    secret_source: str,
    keys_source: str,
    log_dir: Path,
    interval: int,
    status_source: str,
    dashboard_source: str,
) -> None:
    bearer = "$CRON_SECRET" if secret_source == "CRON_SECRET" else f"$(cat {secret_source})"
    status_bearer = "$STATUS_TOKEN" if status_source == "STATUS_TOKEN" else f"$(cat {status_source})"
    schedule = (
        f"one tick now, then every {interval}s (CRON_LOCAL_INTERVAL)" if interval > 0 else "off (CRON_LOCAL_INTERVAL=0)"
    )
    say(
        "\n".join(
            [
                "tradebot dev stack is up",
                f"  MongoDB    {_without_password(mongo_uri)} ({mongo_label}), database {config.mongodb_db}",
                f"  market     {config.address('market')}",
                f"  strategy   {config.address('strategy')}",
                f"  executor   {config.address('executor')} (credential keys from {keys_source})",
                f"  gateway    {config.gateway_url}",
                f"  logs       {log_dir}/",
                f"  scheduler  {schedule}",
                "Run a tick yourself:",
                f'  curl -H "Authorization: Bearer {bearer}" {config.gateway_url}/api/cron/run-bots',
                "The monitoring report (its own token, not the cron secret):",
                f'  curl -H "Authorization: Bearer {status_bearer}" {config.gateway_url}/api/status',
                "The operators' dashboard (log in with the password "
                + ("in $DASHBOARD_PASSWORD" if dashboard_source == "DASHBOARD_PASSWORD" else f"in {dashboard_source}")
                + "):",
                f"  {config.gateway_url}/dashboard",
                "Ctrl-C stops everything.",
            ]
        )
    )


def _without_password(uri: str) -> str:
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


if __name__ == "__main__":
    sys.exit(main())
