"""One tick: claim the bots, work in groups, fan out per bot, write in bulk.

    claim (update_many + find) -> parse each document
      -> weight plan (arithmetic, no I/O): defer the bots whose market data the budget cannot carry
      -> per (symbol, interval): candles, once
        -> per (strategy, symbol, interval, params): one Analyze
          -> per bot, bounded concurrency: executor RunCycle (the bot's id, the tick's id, the signal;
             the executor reads the bot from MongoDB and the price and filters from the market)
    -> one bulk_write of bot updates (lease released), insert_many of TradeLogs

Only the executor step is per bot. Every gRPC call carries a deadline taken
from the tick's time left; a bot that cannot start in time is skipped with
reason "deadline", and the results are written before the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from tradebot.v1 import common_pb2, executor_pb2, market_pb2, strategy_pb2

from services.common.circuit_breaker import BreakerSettings, BreakerTrips, process_name
from services.common.grpc_client import retry_after as retry_after_trailer
from services.common.grpc_server import BOT_INSTANCE_ID_METADATA_KEY, TICK_ID_METADATA_KEY
from services.common.jsonlog import bot_instance_id_var, tick_id_var
from services.gateway import records
from services.gateway.clients import ServiceClients
from services.common.public_errors import without_addresses
from services.gateway.conversions import action_name
from services.gateway.flash_crash import FlashCrashWatch
from services.common.bot_documents import BotDocument, BotIdentity, InvalidBotDocument, identity_of, parse_bot
from services.gateway.repository import BotRepository, BotUpdate, DatabaseUnavailable
from services.gateway.results import BotResult, BotStatus
from services.gateway.settings import GatewaySettings
from services.gateway.slots import PrioritySlots
from services.gateway.weight_plan import DEFAULT_WEIGHT_BUDGET, WeightPlan, plan_weight, weight_inputs

log = logging.getLogger(__name__)

MIN_CALL_SECONDS = 1.0            # no call starts with less time than this left
RESPONSE_MARGIN_SECONDS = 0.5    # kept after the writes for building and sending the response
CONNECT_WAIT_SECONDS = 3.0        # at most this long for a (re)starting service's channel to connect


@dataclass(frozen=True)
class TickConfig:
    deadline_seconds: float = 270.0
    concurrency: int = 32
    lease_seconds: float = 300.0
    candle_limit: int = 300
    use_ai: bool = True
    write_reserve_seconds: float = 10.0
    group_work: bool = True
    weight_budget: int = DEFAULT_WEIGHT_BUDGET   # 0: no planning
    breaker: BreakerSettings = BreakerSettings()   # the flash-crash trigger of the fleet circuit breaker

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TickConfig:
        return cls(
            deadline_seconds=settings.tick_deadline_seconds,
            concurrency=settings.tick_concurrency,
            lease_seconds=settings.lease_seconds,
            candle_limit=settings.candle_limit,
            use_ai=settings.use_ai,
            write_reserve_seconds=settings.write_reserve_seconds,
            group_work=settings.group_work,
            weight_budget=settings.weight_budget_per_tick,
            breaker=settings.breaker,
        )


@dataclass
class TickOutcome:
    tick_id: str
    started_at: datetime
    results: list[BotResult]
    no_active_bots: bool = False
    persist_error: str | None = None
    weight_plan: WeightPlan | None = None   # None: planning off or nothing to plan
    # Where the time went (logged; the benchmark separates database time from the rest).
    timings: dict[str, float] = field(default_factory=dict)
    # The TradeLogs as written (with their _id) when every write succeeded; the webhooks' source.
    stored_logs: Sequence[dict[str, Any]] = ()
    # AI confirmations of this tick's analyses: asked for, answered, fallen back to indicators alone.
    ai_calls: dict[str, int] = field(default_factory=dict)


@dataclass
class _BotOutcome:
    result: BotResult
    update: dict[str, Any] | None   # None: nothing of ours to write (another tick's bot)
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Market:
    candles: list[common_pb2.Candle]   # closed, oldest first


class _Skip(Exception):
    """Rate limited upstream: the affected bots sit this cycle out."""


class TickRunner:
    def __init__(self, config: TickConfig, repository: BotRepository, clients: ServiceClients,
                 flash_watch: FlashCrashWatch | None = None) -> None:
        self.config = config
        self.repository = repository
        self.clients = clients
        # Kept across ticks: each candle is judged once.
        self.flash_watch = flash_watch or FlashCrashWatch(
            BreakerTrips(repository.database, config.breaker, process_name("gateway")), config.breaker)

        self._late_writes: set[asyncio.Task[Any]] = set()

    def finish_later(self, write: asyncio.Task[Any], tick_id: str) -> None:
        """A results write the deadline cut off goes on after the response: its updates are guarded by the
        lease owner and its TradeLogs carry their ids, so finishing late is safe, and it releases the leases
        the next tick would otherwise find held ("in progress") until they expire."""
        self._late_writes.add(write)

        def done(task: asyncio.Task[Any]) -> None:
            self._late_writes.discard(task)
            if task.cancelled():
                return
            if task.exception() is not None:
                log.error("late results write failed; the leases expire on their own",
                          extra={"tickId": tick_id, "error": type(task.exception()).__name__})
            else:
                log.warning("late results write finished", extra={"tickId": tick_id})

        write.add_done_callback(done)

    async def close(self, grace_seconds: float) -> None:
        """At shutdown: give late results writes ``grace_seconds``, then cancel them."""
        if self._late_writes:
            await asyncio.wait(set(self._late_writes), timeout=grace_seconds)
        for task in list(self._late_writes):
            task.cancel()

    async def run(self, tick_id: str | None = None) -> TickOutcome:
        tick = _Tick(self, tick_id or uuid.uuid4().hex)
        token = tick_id_var.set(tick.tick_id)
        try:
            return await tick.run()
        finally:
            tick_id_var.reset(token)


class _Tick:
    def __init__(self, runner: TickRunner, tick_id: str) -> None:
        self.config = runner.config
        self.repository = runner.repository
        self.clients = runner.clients
        self.flash_watch = runner.flash_watch
        self.runner = runner
        self.tick_id = tick_id
        self.now = datetime.now(UTC)
        self.started = time.monotonic()
        # The work must end early enough to leave time for the writes and the response.
        self.work_ends = self.started + self.config.deadline_seconds - self.config.write_reserve_seconds
        self.outcomes: dict[Any, _BotOutcome] = {}
        self.identities: dict[Any, BotIdentity] = {}
        self.started_bots: set[Any] = set()
        self.cycle_seconds: list[float] = []   # each bot's RunCycle round trip, for the latency percentiles
        self.upstream_slots = asyncio.Semaphore(self.config.concurrency)
        self.executor_slots = PrioritySlots(self.config.concurrency)
        self.metadata = ((TICK_ID_METADATA_KEY, tick_id),)
        self.weight_plan: WeightPlan | None = None
        self.stored_logs: list[dict[str, Any]] = []
        self.ai_calls = {"requested": 0, "used": 0, "fallbacks": 0, "cached": 0}

    def time_left(self) -> float:
        return self.work_ends - time.monotonic()

    async def run(self) -> TickOutcome:
        timings: dict[str, float] = {}
        mark = time.monotonic()
        try:
            claimed = await asyncio.wait_for(
                self.repository.claim_active_bots(self.tick_id, self.now, self.config.lease_seconds),
                max(self.time_left(), 0.1),
            )
        except TimeoutError as error:  # a database that accepts and never answers
            raise DatabaseUnavailable("claiming the bots timed out") from error
        timings["claimSeconds"], mark = time.monotonic() - mark, time.monotonic()
        if not claimed.claimed and not claimed.in_progress:
            return TickOutcome(self.tick_id, self.now, [], no_active_bots=True, timings=timings)
        order = [document.get("_id") for document in claimed.claimed]
        bots = self._parse(claimed.claimed)
        bots = self._plan_weight(bots)
        if bots:
            await self.clients.wait_until_connected(min(CONNECT_WAIT_SECONDS, self.time_left() / 4))
        await self._run_groups(bots)
        self._settle_unfinished(order)
        timings["servicesSeconds"], mark = time.monotonic() - mark, time.monotonic()
        persist_error = await self._write(order)
        timings["writeSeconds"] = time.monotonic() - mark
        timings["tickSeconds"] = time.monotonic() - self.started
        timings.update(cycle_percentiles(self.cycle_seconds))
        results = [self.outcomes[key].result for key in order]
        for document in claimed.in_progress:
            identity = identity_of(document)
            results.append(_result(identity, "skipped", error="in progress (claimed by another tick)"))
        return TickOutcome(
            self.tick_id, self.now, results, persist_error=persist_error, timings=timings, weight_plan=self.weight_plan,
            stored_logs=self.stored_logs, ai_calls=dict(self.ai_calls),
        )

    # --- 1. documents -------------------------------------------------------

    def _parse(self, documents: Sequence[dict[str, Any]]) -> list[BotDocument]:
        bots = []
        for document in documents:
            self.identities[document.get("_id")] = identity_of(document)
            try:
                bots.append(parse_bot(document))
            except InvalidBotDocument as error:
                self._fail(identity_of(document), f"Invalid bot document: {error.message}", "INVALID_BOT_DOCUMENT")
        return bots

    # --- 2. weight plan -------------------------------------------------------

    def _plan_weight(self, bots: list[BotDocument]) -> list[BotDocument]:
        if self.config.weight_budget <= 0 or not bots:
            return bots
        # Market data only: the executor's Binance reads are paced by its own governor and
        # user-data streams (see weight_plan.py), so no exchange connection is read here.
        plan = plan_weight(weight_inputs(bots), self.config.weight_budget, self.config.candle_limit)
        self.weight_plan = plan
        log.info("weight plan", extra={"needed": plan.needed, "planned": plan.planned, "budget": plan.budget})
        if not plan.deferred:
            return bots
        log.warning(
            "weight budget: bots deferred",
            extra={"needed": plan.needed, "budget": plan.budget, "deferred": len(plan.deferred)},
        )
        deferred = set(plan.deferred)
        for bot in bots:
            if bot.instance_id in deferred:
                self._skip(bot.identity, "weight budget", data={"weightNeeded": plan.needed, "weightBudget": plan.budget})
        return [bot for bot in bots if bot.instance_id not in deferred]

    # --- 3. groups ----------------------------------------------------------

    async def _run_groups(self, bots: Sequence[BotDocument]) -> None:
        by_market: dict[tuple[str, str, str], list[BotDocument]] = defaultdict(list)
        for bot in bots:
            # Without grouping (the benchmark's baseline) every bot is a group of its own.
            solo = "" if self.config.group_work else str(bot.instance_id)
            by_market[(bot.symbol, bot.config.interval, solo)].append(bot)
        tasks = {asyncio.create_task(self._market_group(key, members)): members for key, members in by_market.items()}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max(self.time_left(), 0) + 1.0)
        for task in pending:  # only if a call ignored its own deadline
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task, members in tasks.items():
            error = None if task.cancelled() else task.exception()
            if error is not None:
                # A bug, not an upstream failure: the group's unfinished bots fail with a generic reason.
                log.error("tick group crashed", exc_info=error)
                unfinished = [bot for bot in members if bot.instance_id not in self.outcomes]
                self._fail_all(unfinished, f"Internal gateway error ({type(error).__name__})", "GATEWAY_ERROR")

    async def _market_group(self, key: tuple[str, str, str], bots: list[BotDocument]) -> None:
        symbol, interval, solo = key
        try:
            market = await self._upstream(lambda: self._market(symbol, interval, solo))
        except _Skip as skip:
            self._skip_all(bots, str(skip))
            return
        except _StageFailed as failure:
            self._fail_all(bots, f"Market data for {symbol} {interval} unavailable: {failure}", "MARKET_DATA_ERROR")
            return
        # Before this group's cycles: a flash crash in these candles opens the breaker for their entries too.
        await self.flash_watch.judge(symbol, interval, market.candles)
        by_strategy: dict[tuple[Any, ...], list[BotDocument]] = defaultdict(list)
        for bot in bots:
            # Same strategy, parameters and AI choice on the same candles: one analysis.
            use_ai = self.config.use_ai and bot.config.use_ai
            by_strategy[(bot.bot_id, symbol, interval, bot.config.strategy_params, use_ai)].append(bot)
        await asyncio.gather(*(self._strategy_group(k, members, market) for k, members in by_strategy.items()))

    async def _market(self, symbol: str, interval: str, solo: str) -> _Market:
        candles = await self._call(
            "market GetCandles",
            self.clients.market.GetCandles,
            market_pb2.GetCandlesRequest(symbol=symbol, interval=interval, limit=self.config.candle_limit),
        )
        closed = [candle for candle in candles.candles if candle.closed]
        if not closed:
            raise _StageFailed(f"no closed candles for {symbol} {interval}")
        return _Market(closed)

    async def _strategy_group(self, key: tuple[Any, ...], bots: list[BotDocument], market: _Market) -> None:
        bot_id, symbol, interval, params, use_ai = key
        request = strategy_pb2.AnalyzeRequest(
            bot_id=bot_id,
            symbol=symbol,
            interval=interval,
            candles=market.candles,
            params=dict(params),
            use_ai=use_ai,
        )
        try:
            analysis = await self._upstream(lambda: self._call("strategy Analyze", self.clients.strategy.Analyze, request))
        except _Skip as skip:
            self._skip_all(bots, str(skip))
            return
        except _StageFailed as failure:
            if failure.code == grpc.StatusCode.INVALID_ARGUMENT and params:
                # The strategy refused this group's overrides (unknown name, out of range): only
                # the bots carrying them fail, with the strategy's own words.
                self._fail_all(bots, f"Invalid config.strategyParams: {failure.details}", "INVALID_STRATEGY_PARAMS")
            else:
                self._fail_all(bots, f"Strategy analysis failed: {failure}", "STRATEGY_ERROR")
            return
        self._count_ai(analysis.ai)
        await asyncio.gather(*(self._bot(bot, analysis) for bot in bots))

    def _count_ai(self, ai: strategy_pb2.AiVerdict) -> None:
        if ai.requested:
            self.ai_calls["requested"] += 1
            self.ai_calls["used"] += int(ai.used)
            self.ai_calls["fallbacks"] += int(not ai.used)
            self.ai_calls["cached"] += int(ai.cached)

    # --- 4. per bot -----------------------------------------------------------

    async def _bot(self, bot: BotDocument, analysis: strategy_pb2.AnalyzeResponse) -> None:
        # Open positions first: monitoring risk matters more than finding an entry.
        async with self.executor_slots.slot(0 if bot.position is not None else 1):
            if self.time_left() < MIN_CALL_SECONDS:
                self._skip(bot.identity, "deadline")
                return
            self.started_bots.add(bot.instance_id)
            token = bot_instance_id_var.set(str(bot.instance_id))
            called = time.monotonic()
            try:
                cycle = await self._call(
                    "executor RunCycle",
                    self.clients.executor.RunCycle,
                    self._cycle_request(bot, analysis),
                    bot_instance_id=str(bot.instance_id),
                )
            except _Skip as skip:
                self._skip(bot.identity, str(skip))
                return
            except _StageFailed as failure:
                self._fail(bot.identity, f"Executor failed: {failure}", "EXECUTOR_ERROR")
                return
            finally:
                self.cycle_seconds.append(time.monotonic() - called)
                bot_instance_id_var.reset(token)
        self._succeed(bot, analysis, cycle)

    def _cycle_request(self, bot: BotDocument, analysis: strategy_pb2.AnalyzeResponse) -> executor_pb2.RunCycleRequest:
        # The bot's id, the tick and the signal; the identity fields are checked by the executor against
        # the stored bot, whose config, statistics and position it reads itself.
        return executor_pb2.RunCycleRequest(
            tick_id=self.tick_id,
            bot=executor_pb2.BotRef(
                bot_instance_id=str(bot.instance_id),
                user_id=str(bot.user_id),
                bot_id=bot.bot_id,
                bot_name=bot.bot_name,
                symbol=bot.symbol,
                exchange_connection_id="" if bot.exchange_connection_id is None else str(bot.exchange_connection_id),
            ),
            signal=analysis.signal,
        )

    # --- calls ----------------------------------------------------------------

    async def _upstream(self, call: Callable[[], Awaitable[Any]]) -> Any:
        async with self.upstream_slots:
            return await call()

    async def _call(self, name: str, method: Any, request: Any, *, bot_instance_id: str | None = None) -> Any:
        timeout = self.time_left()
        if timeout < MIN_CALL_SECONDS:
            raise _Skip("deadline")
        metadata = self.metadata
        if bot_instance_id is not None:
            metadata = (*metadata, (BOT_INSTANCE_ID_METADATA_KEY, bot_instance_id))
        try:
            return await method(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.ABORTED:   # the executor found the bot held by another tick
                raise _Skip(f"in progress ({without_addresses(error.details() or 'held by another tick')})") from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                retry_after = retry_after_trailer(error)
                wait = f", retry in {retry_after}s" if retry_after else ""
                raise _Skip(f"rate limited ({name}: {without_addresses(error.details() or '')}{wait})") from None
            # The text reaches lastError, TradeLogs and webhooks: no internal addresses in it.
            details = without_addresses(error.details() or "no details")
            raise _StageFailed(f"{name}: {code.name}: {details}", code=code, details=details) from None

    # --- outcomes -------------------------------------------------------------

    def _succeed(
        self,
        bot: BotDocument,
        analysis: strategy_pb2.AnalyzeResponse,
        cycle: executor_pb2.RunCycleResponse,
    ) -> None:
        # Entries stopped by an operator's halt or the circuit breaker: a bot whose cycle had nothing to do but the
        # entry it stopped is "skipped" with the reason; one with a position (monitored, protected) or a trade
        # closed this cycle (a stop, a flatten) was served and succeeds, the reason in its result.
        stopped = cycle.entries_stopped
        skipped = bool(stopped) and not cycle.has_position and not cycle.closed_trades
        result = _result(
            bot.identity,
            "skipped" if skipped else "success",
            action=action_name(analysis.signal.action),
            confidence=analysis.signal.confidence,
            order_placed=cycle.order.placed,
            has_position=cycle.has_position,
            error=stopped if skipped else "; ".join(filter(None, (records.cycle_error(cycle), stopped))) or None,
        )
        self.outcomes[bot.instance_id] = _BotOutcome(
            result,
            records.cycle_update(bot.statistics, analysis, cycle, self.now, bot.position),
            records.cycle_logs(bot.identity, bot.config.interval, cycle.reference_price, analysis, cycle, self.now,
                               bot.position),
        )

    def _fail(self, identity: BotIdentity, error: str, action: str) -> None:
        log.warning("bot failed", extra={"botInstanceId": str(identity.instance_id), "reason": error})
        self.outcomes[identity.instance_id] = _BotOutcome(
            _result(identity, "failed", error=error),
            records.failure_update(error, self.now),
            [records.trade_log(identity, self.now, "ERROR", "ERROR", action, error, {"error": error})],
        )

    def _skip(self, identity: BotIdentity, reason: str, data: dict[str, Any] | None = None) -> None:
        # An IP ban blinds every account behind the IP: CRITICAL, so it reaches the users' SAFETY webhooks.
        banned = "IP ban" in reason   # the governor's "an IP ban (418)" and the market's "HTTP 418 (IP banned)"
        severity, action = ("CRITICAL", "EXCHANGE_BANNED") if banned else ("WARNING", "SKIPPED")
        log.log(logging.CRITICAL if banned else logging.WARNING, "bot skipped",
                extra={"botInstanceId": str(identity.instance_id), "reason": reason})
        message = f"Skipped this cycle: {reason}"
        self.outcomes[identity.instance_id] = _BotOutcome(
            _result(identity, "skipped", error=reason),
            records.release_update(),
            [
                records.trade_log(
                    identity, self.now, "SYSTEM", severity, action, message, {"reason": reason, **(data or {})}
                )
            ],
        )

    def _fail_all(self, bots: Sequence[BotDocument], error: str, action: str) -> None:
        for bot in bots:
            self._fail(bot.identity, error, action)

    def _skip_all(self, bots: Sequence[BotDocument], reason: str) -> None:
        for bot in bots:
            self._skip(bot.identity, reason)

    def _settle_unfinished(self, order: Sequence[Any]) -> None:
        """Bots the deadline caught: skipped if never started, failed if their cycle was cut off."""
        for key in order:
            if key in self.outcomes:
                continue
            identity = self.identities[key]
            if key in self.started_bots:
                self._fail(identity, "Tick deadline reached during the executor cycle; the next tick reconciles", "DEADLINE")
            else:
                self._skip(identity, "deadline")

    async def _write(self, order: Sequence[Any]) -> str | None:
        updates = [
            BotUpdate(key, self.outcomes[key].update)
            for key in order
            if self.outcomes[key].update is not None and key is not None
        ]
        logs = [entry for key in order for entry in self.outcomes[key].logs]
        # The response must leave before the deadline, even if the database hangs mid-write.
        budget = max(self.started + self.config.deadline_seconds - RESPONSE_MARGIN_SECONDS - time.monotonic(), 0.1)
        write = asyncio.ensure_future(self.repository.write_results(self.tick_id, updates, logs))
        try:
            self.stored_logs = await asyncio.wait_for(asyncio.shield(write), budget)
        except TimeoutError:
            self.runner.finish_later(write, self.tick_id)
            log.error("writing tick results did not finish before the deadline; it goes on after the response")
            return "Results could not be saved before the deadline (TimeoutError); they are still being written"
        except Exception as error:  # reported in the response; leases expire on their own
            log.error("writing tick results failed", exc_info=error)
            return f"Results could not be saved: {type(error).__name__}"
        return None


class _StageFailed(Exception):
    """A call failed for a reason other than a rate limit; the affected bots fail."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details or message


def cycle_percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 of the bots' executor cycles (nearest rank); nothing when no cycle ran."""
    if not seconds:
        return {}
    ordered = sorted(seconds)
    return {f"botCycleP{p}Seconds": ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)] for p in (50, 95, 99)}


def _result(identity: BotIdentity, status: BotStatus, **fields: Any) -> BotResult:
    return BotResult(
        bot_instance_id=str(identity.instance_id),
        bot_name=identity.bot_name,
        symbol=identity.symbol,
        status=status,
        **fields,
    )
