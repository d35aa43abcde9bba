"""One account's REST calls: the python-binance client (behind the weight governor), errors translated.

The client is built at one seam (``services.common.binance_client``): every
request reserves its weight with the process's governor before it is sent.
Here vendor errors become the project's own; reads are retried a bounded number
of times; order POSTs are sent once, after the account's order-rate guard.

A -1021 answer (timestamp outside recvWindow) means Binance refused the
request before executing it, so it is repeated once after the process's clock
offset is measured again, even for an order. A 429 or 418 means the same (not
executed): it surfaces as ``ResourceExhausted`` and is never looked up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from binance.exceptions import BinanceAPIException
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.binance_client import ConfiguredAsyncClient
from services.common.errors import ResourceExhausted, Unavailable
from services.executor.binance import errors as errs
from services.executor.binance.account import AccountShared
from services.executor.binance.ratelimit import ORDERS_AFTER_AN_ENTRY
from services.executor.binance.user_stream import ListenKeyGone

logger = logging.getLogger(__name__)

T = TypeVar("T")
LISTEN_KEY_GONE = -1125


@dataclass(frozen=True)
class BrokerTuning:
    """Bounds on retries and on the look-ups that resolve an unknown order outcome."""

    read_attempts: int = 3          # a read is tried at most this often (transient failures only)
    retry_wait_s: float = 0.1       # first back-off between read attempts, doubling, capped at 2 s
    resolve_attempts: int = 4       # look-ups by client id before an unknown outcome is reported
    resolve_wait_s: float = 0.2     # wait before the n-th look-up: n × this
    stream_wait_s: float = 2.0      # how long an own order's stream events are awaited before REST is asked


class AccountRest:
    def __init__(self, client: ConfiguredAsyncClient, shared: AccountShared, tuning: BrokerTuning) -> None:
        self.client = client
        self.shared = shared
        self.tuning = tuning

    async def call(self, action: str, request: Callable[[], Awaitable[T]],
                   accept_codes: frozenset[int] = frozenset()) -> T | None:
        """One request, vendor errors translated; -1021 re-measures the clock offset and tries once more."""
        for attempt in range(2):
            sent_at = time.monotonic()
            try:
                return await request()
            except BinanceAPIException as exc:
                if exc.code in accept_codes:
                    return None
                if exc.code == errs.TIMESTAMP_OUTSIDE_RECV_WINDOW and attempt == 0:
                    logger.warning("Binance clock drift during %s; re-measuring the offset", action)
                    await self.sync_clock(refused_at=sent_at)
                    continue
                raise errs.translate_api_error(exc, action) from None
            except errs.TRANSPORT_ERRORS as exc:
                raise errs.translate_transport_error(exc, action) from None
        raise AssertionError("unreachable")

    async def read(self, action: str, request: Callable[[], Awaitable[T]],
                   accept_codes: frozenset[int] = frozenset()) -> T | None:
        """A read (or idempotent setting): transient failures retried, a bounded number of times.

        Rate limits are not retried here: the governor already waited as long as the caller allows."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.tuning.read_attempts),
            wait=wait_exponential(multiplier=self.tuning.retry_wait_s, max=2.0),
            retry=retry_if_exception_type(Unavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.call(action, request, accept_codes)
        raise AssertionError("unreachable")

    async def sync_clock(self, *, refused_at: float | None = None) -> None:
        """The process's offset to Binance's clock (one measurement serves every account); measured again
        when Binance refused a request sent at ``refused_at`` with -1021."""
        try:
            await (self.client.sync_time() if refused_at is None else self.client.resync_time(refused_at))
        except BinanceAPIException as exc:
            raise errs.translate_api_error(exc, "server time sync") from None
        except errs.TRANSPORT_ERRORS as exc:
            raise errs.translate_transport_error(exc, "server time sync") from None

    async def send_order(self, action: str, request: Callable[[], Awaitable[dict[str, Any]]], *,
                         entry: bool = False) -> dict[str, Any] | None:
        """POST an order once, after the rate guard; None when its client id is already taken (-4116).

        An entry must leave room for the orders that would protect it; every other order we send
        (stop, target, close) protects a position and may use the guard's safety margin."""
        if self.shared.hedge_mode:
            raise errs.hedge_mode_error(action)
        if entry:
            self.shared.rate_guard.before_order(reserve=ORDERS_AFTER_AN_ENTRY)
        else:
            self.shared.rate_guard.before_order(protective=True)
        try:
            return await self.call(action, request, accept_codes=frozenset({errs.DUPLICATE_CLIENT_ID}))
        except errs.PositionModeMismatch:
            self.shared.hedge_mode = True   # remembered: the next entries fail without asking Binance
            raise
        finally:
            self.shared.forget_account()   # balances and positions may have moved
            headers = self.client.last_response_headers()
            if "X-MBX-ORDER-COUNT-1M" in headers or "X-MBX-ORDER-COUNT-10S" in headers:
                self.shared.rate_guard.observe(headers)

    async def close(self) -> None:
        await self.client.close_connection()


class RestListenKeys:
    """The account's listenKey calls (weight 1 each, through the governor) for the user-data stream."""

    def __init__(self, rest: AccountRest) -> None:
        self._rest = rest

    async def create(self) -> str:
        answer = await self._rest.call("listenKey creation", lambda: self._rest.client.futures_stream_get_listen_key())
        if not isinstance(answer, str) or not answer:
            raise Unavailable("Binance sent no listenKey")
        return answer

    async def keepalive(self, listen_key: str) -> None:
        try:
            await self._rest.client.futures_stream_keepalive(listenKey=listen_key)
        except BinanceAPIException as exc:
            if exc.code == LISTEN_KEY_GONE:
                raise ListenKeyGone(str(exc.message)) from None
            raise errs.translate_api_error(exc, "listenKey keepalive") from None
        except errs.TRANSPORT_ERRORS as exc:
            raise errs.translate_transport_error(exc, "listenKey keepalive") from None

    async def close(self, listen_key: str) -> None:
        try:
            await self._rest.call("listenKey close", lambda: self._rest.client.futures_stream_close(listenKey=listen_key))
        except (Unavailable, ResourceExhausted):
            pass   # it expires by itself within the hour
