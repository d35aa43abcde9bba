"""One measured tick: a fresh stack (mongoeco memory, fakes, four services), a seeded population, one cron call.

Everything is started anew for every (population, setting) so no cache,
connection or weight window carries over from the previous run. The fake
Binance server runs in this process (its own thread and loop) so its
request and weight counters can be read directly; the fake OpenAI server is
a child process read through ``/_fake/stats``.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pymongo import MongoClient
from pymongo.database import Database

from bench.population import BotPlan, distinct_strategy_markets, distinct_symbol_intervals, seed
from services.devstack.processes import ChildProcess, free_port, python_module, start_mongo
from services.devstack.stack import Stack, StackConfig, StackPorts
from tests.fakes.binance_market import FakeBinanceMarket

KLINES_PATH = "/fapi/v1/klines"
RSS_POLL_SECONDS = 0.2
# Services whose /metrics the benchmark reads: AI tokens (strategy), MongoDB commands (gateway, executor).
METERED_SERVICES = ("strategy", "gateway", "executor")

# The seed-style baseline, as configuration only: one bot after another, one
# market and one strategy call per bot, no candle/price cache, a one-entry analysis cache,
# no weight planner (the seed had none).
# Its requests (about 4 weight per bot) go past Binance's 2,400 per minute whenever ~10 HOLD bots a
# second run back to back: a full 1,000-bot baseline had a third of its bots refused by the market
# service's weight guard. To time all of them, the baseline's exchange (the fake and the guard)
# allows far more; its row's weight shows what it would have asked of the real one. Likewise it
# takes longer than the 270 s deadline at 1,000 bots: its deadline is raised so every bot is timed.
BASELINE_WEIGHT_LIMIT_1M = 100_000
PROJECT_WEIGHT_LIMIT_1M = 2_400
BASELINE_DEADLINE_SECONDS = 1100   # under RunOptions.tick_timeout_seconds
BASELINE_ENV: dict[str, dict[str, str]] = {
    "gateway": {"TICK_CONCURRENCY": "1", "TICK_GROUPING": "false", "GATEWAY_WEIGHT_BUDGET_PER_TICK": "0",
                "TICK_DEADLINE_SECONDS": str(BASELINE_DEADLINE_SECONDS)},
    "market": {"MARKET_CACHE_TTL_SECONDS": "0", "MARKET_PRICE_TTL_SECONDS": "0", "MARKET_CACHE_MAX_ENTRIES": "1",
               "MARKET_WEIGHT_LIMIT_1M": str(BASELINE_WEIGHT_LIMIT_1M)},
    "strategy": {"ANALYSIS_CACHE_MAX_ENTRIES": "1"},
}


@dataclass(frozen=True)
class RunOptions:
    binance_latency_ms: float = 50.0
    openai_latency_ms: int = 800
    tick_timeout_seconds: float = 1200.0   # far past the gateway's own deadline: measure, never cut
    echo: bool = False


class CountingBinance(FakeBinanceMarket):
    """The fake Binance server, also summing every request's weight (its own 1-minute window resets)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total_weight = 0

    def _spend_weight(self, weight: int) -> int:
        with self._lock:
            self.total_weight += weight
        return super()._spend_weight(weight)

    def reset_all(self) -> None:
        self.reset_counts()
        with self._lock:
            self.total_weight = 0


@dataclass
class RssMonitor:
    """Peak resident memory of each process, sampled while the tick runs."""

    pids: Mapping[str, int]
    peaks_mb: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssMonitor:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)
        self._thread.start()
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each process has used so far."""
        used = {}
        for name, pid in self.pids.items():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            used[name] = times.user + times.system
        return used

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        return {name: round(mb, 1) for name, mb in self.peaks_mb.items()}

    def _loop(self) -> None:
        while not self._stop.wait(RSS_POLL_SECONDS):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                mb = psutil.Process(pid).memory_info().rss / 1_048_576
            except psutil.Error:
                continue
            self.peaks_mb[name] = max(self.peaks_mb.get(name, 0.0), mb)


def measure_tick(plans: Sequence[BotPlan], setting: str, options: RunOptions) -> dict[str, Any]:
    """Start everything, seed ``plans``, run one tick, and return its figures."""
    echo = (lambda name, line: print(f"[{name}] {line}", flush=True)) if options.echo else None
    cron_secret = "bench-cron-" + secrets.token_urlsafe(32)
    credentials_key = Fernet.generate_key().decode()
    database = f"bench_{uuid.uuid4().hex[:10]}"
    weight_limit = BASELINE_WEIGHT_LIMIT_1M if setting == "baseline" else PROJECT_WEIGHT_LIMIT_1M
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, CountingBinance(
        latency_ms=options.binance_latency_ms, weight_limit_1m=weight_limit
    ) as binance, backends(options.openai_latency_ms, echo) as (mongo, mongo_uri, openai_url):
        stack: Stack | None = None
        try:
            seeded = time.perf_counter()
            with database_of(mongo_uri, database) as db:
                seed(db, plans, credentials_key)
            seed_seconds = time.perf_counter() - seeded
            metrics_ports = {name: free_port() for name in METERED_SERVICES}
            config = StackConfig(
                mongodb_uri=mongo_uri,
                cron_secret=cron_secret,
                credentials_keys=credentials_key,
                mongodb_db=database,
                ports=StackPorts.free(),
                env=_environment(setting, binance.url, openai_url, metrics_ports),
                echo=echo,
                log_dir=Path(scratch),
            )
            stack = Stack(config).start()
            load_before = round(psutil.getloadavg()[0], 2)
            binance.reset_all()
            pids = {name: process.process.pid for name, process in stack.processes.items()}
            pids["mongo"] = mongo.process.pid
            monitor = RssMonitor(pids).start()
            cpu_before = monitor.cpu_seconds()
            response, wall = call_tick(config, options.tick_timeout_seconds)
            cpu_after = monitor.cpu_seconds()
            peaks = monitor.stop()
            cpu = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after}
            response.raise_for_status()
            body = response.json()
            timings = _tick_timings(stack.processes["gateway"].lines)
            ai = _openai_stats(openai_url)
            samples = {name: _scrape(port) for name, port in metrics_ports.items()}
            signals = _technical_signals(stack.processes["strategy"].lines)
        finally:
            if stack is not None:
                stack.stop()
    summary = body.get("summary", {})
    bots = len(plans)
    tick_seconds = timings.get("tickSeconds", wall)
    return {
        "bots": bots,
        "symbols": len({bot.symbol for bot in plans}),
        "accounts": len({bot.account for bot in plans}),
        "bots_with_positions": sum(bot.with_position for bot in plans),
        "setting": setting,
        "estimated": False,
        "load_average_1m_before": load_before,
        "tick_seconds": round(tick_seconds, 3),
        "http_seconds": round(wall, 3),
        "bots_per_second": round(bots / tick_seconds, 1) if tick_seconds else None,
        "db_seconds": round(timings.get("claimSeconds", 0.0) + timings.get("writeSeconds", 0.0), 3),
        "claim_seconds": timings.get("claimSeconds"),
        "services_seconds": timings.get("servicesSeconds"),
        "write_seconds": timings.get("writeSeconds"),
        "kline_requests": binance.count(KLINES_PATH),
        "binance_requests": binance.total_requests(),
        "distinct_symbol_intervals": distinct_symbol_intervals(plans),
        "distinct_strategy_symbol_intervals": distinct_strategy_markets(plans),
        "distinct_buy_sell_groups": len(set(signals)),
        "buy_sell_analyses": len(signals),
        "ai_calls": ai,
        "ai_tokens": _ai_tokens(samples["strategy"]),
        "weight_used": binance.total_weight,
        "peak_rss_mb": max(peaks.values()) if peaks else None,
        "peak_rss_mb_by_process": peaks,
        # Where the tick's CPU went (2 cores shared by all processes).
        "cpu_seconds_by_process": cpu,
        # Counted by each service's MongoDB command listener (tradebot_mongo_commands_total).
        "mongo_round_trips": {name: _mongo_commands(samples[name]) for name in ("gateway", "executor")},
        # Each bot's executor cycle as the gateway timed it (market data and analysis are shared per group).
        **{f"latency_p{p}_ms": _milliseconds(timings.get(f"botCycleP{p}Seconds")) for p in (50, 95, 99)},
        "summary": summary,
        "seed_seconds": round(seed_seconds, 2),
    }


@contextmanager
def backends(openai_latency_ms: int, echo: Callable[[str, str], None] | None
             ) -> Iterator[tuple[ChildProcess, str, str]]:
    """The embedded MongoDB (memory engine) and the fake OpenAI server a measurement runs against:
    (the MongoDB process, its URI, the OpenAI URL); both stopped afterwards."""
    mongo, mongo_uri = start_mongo("memory")
    openai = ChildProcess("openai", python_module("tests.fakes.openai_server", "--mode", "success",
                                                  "--latency-ms", str(openai_latency_ms)), {}, echo=echo)
    try:
        yield mongo, mongo_uri, openai.wait_for_line(r"READY (\S+)", timeout=30).group(1)
    finally:
        openai.stop()
        mongo.stop()


@contextmanager
def database_of(mongo_uri: str, name: str) -> Iterator[Database]:
    """A synchronous handle on the benchmark's database, for seeding and counting."""
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    try:
        yield client[name]
    finally:
        client.close()


def call_tick(config: StackConfig, timeout: float) -> tuple[httpx.Response, float]:
    """One cron call as Upstash makes it; the response and its wall time."""
    started = time.perf_counter()
    response = httpx.get(config.gateway_url + "/api/cron/run-bots",
                         headers={"Authorization": f"Bearer {config.cron_secret}"}, timeout=timeout)
    return response, time.perf_counter() - started


def _environment(setting: str, binance_url: str, openai_url: str,
                 metrics_ports: dict[str, int]) -> dict[str, dict[str, str]]:
    env: dict[str, dict[str, str]] = {
        "market": {"MARKET_DATA_SOURCE": "binance", "BINANCE_FUTURES_URL": binance_url},
        "strategy": {"OPENAI_API_KEY": "sk-bench-" + secrets.token_urlsafe(16), "OPENAI_BASE_URL": openai_url,
                     "OPENAI_MODEL": "gpt-4o"},
        "gateway": {"TICK_USE_AI": "true"},
    }  # fmt: skip
    for name, port in metrics_ports.items():
        env.setdefault(name, {})["METRICS_PORT"] = str(port)
    if setting == "baseline":
        for name, extra in BASELINE_ENV.items():
            env[name] = {**env.get(name, {}), **extra}
    return env


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _json_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def _tick_timings(lines: Sequence[str]) -> dict[str, float]:
    """claim/services/write/tick seconds from the gateway's own "tick finished" log line."""
    for record in reversed(_json_lines(lines)):
        if record.get("message") == "tick finished":
            return {key: float(value) for key, value in record.items() if key.endswith("Seconds")}
    return {}


def _technical_signals(lines: Sequence[str]) -> list[tuple[str, str, str]]:
    """(strategy, symbol, interval) of every analysis computed with a BUY or SELL technical signal.

    Distinct entries are the AI's ceiling; all entries (one per computation) are what an
    uncached, ungrouped tick asks the AI.
    """
    return [
        (record["strategy"], record["symbol"], record["interval"])
        for record in _json_lines(lines)
        if record.get("message") == "analysis computed" and record.get("technicalAction") in ("BUY", "SELL")
    ]


def _openai_stats(openai_url: str) -> int:
    with urllib.request.urlopen(openai_url.removesuffix("/v1") + "/_fake/stats", timeout=5) as reply:  # noqa: S310
        return int(json.load(reply)["requests"])


def _scrape(port: int) -> list[Sample]:
    """Every sample one service's /metrics endpoint exposes (none if it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:  # noqa: S310
            text = reply.read().decode()
    except OSError:
        return []
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _ai_tokens(samples: Sequence[Sample]) -> int | None:
    tokens = [sample.value for sample in samples if sample.name == "tradebot_strategy_ai_tokens_total"]
    return int(sum(tokens)) if tokens else None


def _mongo_commands(samples: Sequence[Sample]) -> dict[str, Any]:
    """{"total": n, "by_command": {"find paperpositions": n, ...}} from one service's samples."""
    by_command = {
        f"{sample.labels['command']} {sample.labels['collection']}".strip(): int(sample.value)
        for sample in samples
        if sample.name == "tradebot_mongo_commands_total"
    }
    return {"total": sum(by_command.values()), "by_command": dict(sorted(by_command.items()))}
