"""One weight governor per process and Binance host: no request is sent that would earn a 429.

Binance counts request weight per egress IP and clock minute (2,400 on USDⓈ-M
futures), answers 429 past it and bans the IP (418, two minutes up to three
days) when requests go on after a 429. A ban blinds every user behind the IP,
open positions included, so the rules are strict:

* every REST request reserves its documented weight (``binance_weights``)
  here before it is sent, and waits for the next minute when the budget is
  spent, as long as its caller's deadline allows, else ``ResourceExhausted``;
* every answer's ``X-MBX-USED-WEIGHT-1M`` counts the whole IP (other processes
  and replicas included): the plan never assumes less than the exchange reported;
* this process spends at most ``share`` of the limit (market and executor
  replicas split the IP: their shares must add up to at most 1), and plans the
  IP as a whole to at most ``ip_headroom`` of the limit;
* background reads spend at most ``background_share`` of that and the bring-up
  of accounts at most ``bring_up_share`` (``Priority``), so a tick's reads,
  entries and protective orders always find room;
* after a 429 nothing is sent to the host until its Retry-After has passed;
  after a 418 nothing until the ban ends, with a CRITICAL log and a metric (the
  ``BinanceIpBanned`` alert). Refusals during the ban say ``IP_BAN_WORDS``, as the
  executor's translation of the 418 itself does: the gateway reports those words
  as CRITICAL EXCHANGE_BANNED. ``alarm`` is an optional hook; no service sets it.

Minutes follow the exchange's clock (local time plus the measured offset).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from services.common import metrics
from services.common.binance_weights import IP_WEIGHT_LIMIT_1M
from services.common.errors import ResourceExhausted
from services.common.settings import env_float, env_int

log = logging.getLogger(__name__)

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
MINUTE_S = 60.0
BOUNDARY_MARGIN_S = 0.25     # wait a little past the minute: our clock and Binance's differ by a few ms
DEFAULT_MAX_WAIT_S = 10.0    # a caller without a deadline waits at most this long
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")
IP_BAN_WORDS = "IP ban (418)"   # in every refusal during a ban: the gateway reports it CRITICAL EXCHANGE_BANNED

# The monotonic instant by which the current caller needs its answer (set by the gRPC servicers).
deadline_var: ContextVar[float | None] = ContextVar("binance_deadline", default=None)


class Priority(enum.Enum):
    """Who asks, and so how much of the process's minute it may fill: the tick's own reads and orders all of
    it, background reads (today's PnL baselines) ``background_share``, and the bring-up of accounts (listenKeys,
    snapshots of accounts no cycle is waiting on) ``bring_up_share``. Lower bands fill first and stop first:
    after a restart, thousands of snapshots must not starve the entries of accounts already up."""

    TICK = "tick"
    BACKGROUND = "background"
    BRING_UP = "bring-up"


priority_var: ContextVar[Priority] = ContextVar("binance_priority", default=Priority.TICK)


@dataclass(frozen=True)
class GovernorSettings:
    limit_1m: int = IP_WEIGHT_LIMIT_1M
    share: float = 1.0              # of the limit, for this process
    ip_headroom: float = 0.95       # the IP as a whole is planned to at most this share of the limit
    background_share: float = 0.75  # of this process's cap, for background work
    bring_up_share: float = 0.6     # of this process's cap, for bringing accounts up
    max_wait_s: float = DEFAULT_MAX_WAIT_S

    @classmethod
    def from_env(cls, default_share: float) -> GovernorSettings:
        return cls(
            limit_1m=env_int("BINANCE_WEIGHT_LIMIT_1M", IP_WEIGHT_LIMIT_1M, minimum=1),
            share=env_float("BINANCE_WEIGHT_SHARE", default_share, minimum=0.01, maximum=1.0),
            ip_headroom=env_float("BINANCE_WEIGHT_IP_HEADROOM", 0.95, minimum=0.1, maximum=1.0),
            background_share=env_float("BINANCE_WEIGHT_BACKGROUND_SHARE", 0.75, minimum=0.05, maximum=1.0),
            bring_up_share=env_float("BINANCE_WEIGHT_BRING_UP_SHARE", 0.6, minimum=0.05, maximum=1.0),
            max_wait_s=env_float("BINANCE_WEIGHT_MAX_WAIT_SECONDS", DEFAULT_MAX_WAIT_S, minimum=0.0),
        )

    @property
    def process_cap(self) -> int:
        return int(self.limit_1m * self.share)

    @property
    def ip_cap(self) -> int:
        return int(self.limit_1m * self.ip_headroom)


@dataclass
class Ticket:
    """One admitted request: its weight counts until the answer's header takes over."""

    weight: int
    minute: int
    what: str


@dataclass
class GovernorStats:
    answered_429: int = 0
    answered_418: int = 0
    refused: int = 0               # callers told RESOURCE_EXHAUSTED (deadline too short for the wait)
    waited: int = 0                # callers that waited for the next minute or the end of a pause


class WeightGovernor:
    def __init__(
        self,
        settings: GovernorSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        server_offset_s: Callable[[], float] = lambda: 0.0,
        alarm: Callable[[str, float], None] | None = None,
    ) -> None:
        self.settings = settings or GovernorSettings()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._server_offset_s = server_offset_s
        self.alarm = alarm
        self.stats = GovernorStats()
        self._minute = self._current_minute()
        self._answered_own = 0     # weight of this process's answered requests this minute
        self._in_flight = 0        # weight sent, answer not seen yet
        self._ip_seen = 0          # highest X-MBX-USED-WEIGHT-1M this minute
        self._paused_until = 0.0   # server-clock seconds
        self._pause_reason = ""
        self._ban_count = 0
        metrics.EXCHANGE_WEIGHT_LIMIT.set(self.settings.limit_1m)

    # ------------------------------------------------------------ time
    def _server_now(self) -> float:
        return self._clock() + self._server_offset_s()

    def _current_minute(self) -> int:
        return int(self._server_now() // MINUTE_S)

    def _roll(self) -> None:
        minute = self._current_minute()
        if minute != self._minute:
            self._minute = minute
            self._answered_own = 0
            self._ip_seen = 0

    def seconds_to_next_minute(self) -> float:
        now = self._server_now()
        return (math.floor(now / MINUTE_S) + 1) * MINUTE_S - now

    # ------------------------------------------------------------ views
    def own_used(self) -> int:
        self._roll()
        return self._answered_own + self._in_flight

    def ip_used(self) -> int:
        """The IP's weight this minute as best known: the exchange's report, or our own count if higher."""
        self._roll()
        return max(self._ip_seen, self._answered_own) + self._in_flight

    def pause_left(self) -> float:
        return max(0.0, self._paused_until - self._server_now())

    def share_of(self, priority: Priority) -> float:
        if priority is Priority.BACKGROUND:
            return self.settings.background_share
        if priority is Priority.BRING_UP:
            return self.settings.bring_up_share
        return 1.0

    def has_room(self, weight: int, *, priority: Priority = Priority.TICK) -> bool:
        self._roll()
        if self.pause_left() > 0:
            return False
        if weight <= 0:
            # Orders (entries, stops, targets, closes) weigh nothing on the IP: they count on the account's
            # order-rate limits. A minute the IP has spent (other processes' reads) must not hold a stop back.
            return True
        share = self.share_of(priority)
        return (self.own_used() + weight <= self.settings.process_cap * share
                and self.ip_used() + weight <= self.settings.ip_cap * share)

    # ------------------------------------------------------------ admission
    async def acquire(self, weight: int, what: str, *, priority: Priority | None = None) -> Ticket:
        """Reserve ``weight`` for one request, waiting within the caller's deadline; else ResourceExhausted."""
        priority = priority_var.get() if priority is None else priority
        deadline = deadline_var.get()
        limit = self._monotonic() + self.settings.max_wait_s if deadline is None else deadline
        waited = False
        while True:
            if self.has_room(weight, priority=priority):
                self._in_flight += weight
                if waited:
                    self.stats.waited += 1
                return Ticket(weight, self._minute, what)
            pause = self.pause_left()
            wait = pause if pause > 0 else self.seconds_to_next_minute()
            if self._monotonic() + wait + BOUNDARY_MARGIN_S > limit:
                self.stats.refused += 1
                reason = (f"Binance paused after {self._pause_reason}" if pause > 0 else
                          f"Binance weight budget spent ({self.ip_used()} of {self.settings.ip_cap} on the IP, "
                          f"{self.own_used()} of {self.settings.process_cap} by this process this minute)")
                raise ResourceExhausted(f"{reason}: {what} (weight {weight}) not sent; retry in {wait:.1f}s",
                                        retry_after=wait)
            waited = True
            await self._sleep(wait + BOUNDARY_MARGIN_S + random.uniform(0.0, 0.5))   # waiters spread over 0.5 s

    def settle(self, ticket: Ticket, status: int | None, headers: Mapping[str, str], message: str = "") -> None:
        """The answer to an admitted request (status None: none came; its weight stays counted)."""
        self._roll()
        if ticket.minute == self._minute:
            self._in_flight -= ticket.weight
            self._answered_own += ticket.weight
        else:
            self._in_flight -= ticket.weight   # sent in an earlier minute; that minute is over
        reported = _int(headers.get(WEIGHT_HEADER) or headers.get(WEIGHT_HEADER.lower()))
        if reported is not None:
            self._ip_seen = max(self._ip_seen, reported)
            metrics.EXCHANGE_WEIGHT_USED.set(reported)
        if status == 429:
            self.stats.answered_429 += 1
            metrics.RATE_LIMIT_EVENTS_TOTAL.labels(status="429").inc()
            seconds = _retry_after(headers, message, default=self.seconds_to_next_minute(), now=self._server_now())
            self._pause(seconds, f"a 429 on {ticket.what}")
            log.error("Binance answered 429; sending nothing until Retry-After has passed",
                      extra={"request": ticket.what, "retryAfterSeconds": round(seconds, 1)})
        elif status == 418:
            self.stats.answered_418 += 1
            self._ban_count += 1
            metrics.RATE_LIMIT_EVENTS_TOTAL.labels(status="418").inc()
            seconds = _retry_after(headers, message, default=120.0, now=self._server_now())
            self._pause(seconds, f"an {IP_BAN_WORDS} on {ticket.what}")
            log.critical("Binance banned this IP (418); sending nothing until the ban ends",
                         extra={"request": ticket.what, "banSeconds": round(seconds, 1)})
            if self.alarm is not None:
                try:
                    self.alarm(f"Binance banned this IP for {seconds:.0f} s after {ticket.what}", seconds)
                except Exception:  # an alarm must never break the request path
                    log.exception("ban alarm failed")

    def _pause(self, seconds: float, reason: str) -> None:
        until = self._server_now() + max(1.0, seconds)
        if until > self._paused_until:
            self._paused_until, self._pause_reason = until, reason


def _int(raw: str | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str], message: str, *, default: float, now: float) -> float:
    """Seconds to stay away: Retry-After, else the ban's end in a 418 message, else ``default``."""
    raw = headers.get("Retry-After") or headers.get("RETRY-AFTER") or headers.get("retry-after")
    value = _int(raw)
    if value is not None:
        return max(1.0, float(value))
    match = _BANNED_UNTIL.search(message or "")
    if match:
        return max(1.0, int(match.group(1)) / 1000 - now)
    return default


_governors: dict[str, WeightGovernor] = {}


def governor_for(host: str, *, default_share: float = 1.0, settings: GovernorSettings | None = None,
                 clock: Callable[[], float] = time.time) -> WeightGovernor:
    """The process's governor for one Binance host (live and testnet are separate IP budgets).

    The first caller for a host fixes its settings: ``settings``, else the ``BINANCE_WEIGHT_*``
    environment with ``default_share`` as this process's share."""
    governor = _governors.get(host)
    if governor is None:
        from services.common.server_clock import server_clock   # the offset belongs to the host, like the budget
        offset = server_clock(host)
        governor = _governors[host] = WeightGovernor(settings or GovernorSettings.from_env(default_share),
                                                     clock=clock, server_offset_s=lambda: offset.offset_ms / 1000)
    return governor



@contextmanager
def waiting_at_most(seconds: float) -> Iterator[None]:
    """Requests in this block wait for weight at most ``seconds`` (and never past the caller's deadline):
    for work that had better be deferred to a later tick than hold the current one up."""
    current = deadline_var.get()
    limit = time.monotonic() + seconds
    token = deadline_var.set(limit if current is None else min(current, limit))
    try:
        yield
    finally:
        deadline_var.reset(token)


@contextmanager
def at_priority(priority: Priority) -> Iterator[None]:
    """Requests in this block are ``priority``'s work for the governor."""
    token = priority_var.set(priority)
    try:
        yield
    finally:
        priority_var.reset(token)


@contextmanager
def caller_deadline(deadline: float | None, *, margin_s: float = 0.5) -> Iterator[None]:
    """The gRPC caller's deadline (a monotonic instant) for the requests made on its behalf."""
    token = deadline_var.set(None if deadline is None else deadline - margin_s)
    try:
        yield
    finally:
        deadline_var.reset(token)
