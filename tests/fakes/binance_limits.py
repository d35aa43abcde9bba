"""Binance's per-IP limits as the fakes enforce them, on a clock tests can move.

An independent reading of the USDⓈ-M futures docs
(https://developers.binance.com/docs/derivatives/usds-margined-futures), not an
import of ``services/``: the fakes must catch a client that read them wrong.

- REST request weight: 2,400 per IP per clock minute (reset on the minute).
  Every request is decided before it is served. Past the limit: HTTP 429
  (-1003) with Retry-After to the minute's end; a request sent while that 429
  is in force (or while banned) is answered 418 and bans the IP: 2 minutes the
  first time, doubling per new ban, up to 3 days. Every answer carries
  ``X-MBX-USED-WEIGHT-1M``.
- WebSocket connection attempts: 300 per 5 minutes per IP (``ConnectionAttempts``).

``FakeClock`` is wall time plus an offset, so a test or benchmark moves time
(weight minutes, bans, listenKey validity, connection lifetime, server time)
with ``advance`` instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
IP = "127.0.0.1"
FIRST_BAN_S = 120.0
MAX_BAN_S = 3 * 86_400.0

Clock = Callable[[], float]


class FakeClock:
    """Epoch seconds: ``time.time()`` plus an offset that only ``advance`` moves. Callable like ``time.time``."""

    def __init__(self, offset: float = 0.0, *, start: float | None = None) -> None:
        self.offset = offset if start is None else start - time.time()

    def now(self) -> float:
        return time.time() + self.offset

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def __call__(self) -> float:
        return self.now()


def klines_weight(limit: int) -> int:
    """GET /fapi/v1/klines by LIMIT: [1,100) 1, [100,500) 2, [500,1000] 5, > 1000 10."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


# (method, path) -> weight, or (with ``symbol``, without ``symbol``). From each endpoint's "Request Weight".
FAKE_WEIGHTS: dict[tuple[str, str], int | tuple[int, int]] = {
    ("GET", "/fapi/v1/ping"): 1,
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/premiumIndex"): (1, 10),
    ("GET", "/fapi/v1/ticker/price"): (1, 2),
    ("GET", "/fapi/v2/ticker/price"): (1, 2),
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("POST", "/fapi/v1/positionSide/dual"): 1,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("POST", "/fapi/v1/order"): 0,          # orders count against the account's order limits instead
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): (1, 40),
    ("GET", "/fapi/v1/allOrders"): 5,
    ("POST", "/fapi/v1/algoOrder"): 0,      # "0 on IP rate limit"
    ("DELETE", "/fapi/v1/algoOrder"): 1,    # the Cancel Algo Order page says 1
    ("GET", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/openAlgoOrders"): (1, 40),
    ("GET", "/fapi/v1/allAlgoOrders"): 5,
    ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/income"): 30,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
    ("GET", "/fapi/v1/symbolConfig"): 5,
    ("GET", "/fapi/v1/accountConfig"): 5,
}
UNKNOWN_ROUTE_WEIGHT = 1


def fake_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """The IP weight of one request."""
    if path == "/fapi/v1/klines":
        try:
            return klines_weight(int(params.get("limit", "500")))
        except ValueError:
            return 1
    entry = FAKE_WEIGHTS.get((method.upper(), path), UNKNOWN_ROUTE_WEIGHT)
    if isinstance(entry, tuple):
        return entry[0] if params.get("symbol") else entry[1]
    return entry


@dataclass(frozen=True)
class Admission:
    """The pool's decision on one request: served (200) or refused (429 / 418) with Binance's body."""

    status: int
    used: int
    retry_after: int = 0
    body: dict[str, object] | None = None

    @property
    def admitted(self) -> bool:
        return self.status == 200

    def headers(self) -> dict[str, str]:
        headers = {WEIGHT_HEADER: str(self.used)}
        if not self.admitted:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class IpWeightPool:
    """One IP's request weight, shared by every route of every fake on it. Thread-safe."""

    def __init__(self, limit: int = 2400, clock: Clock | None = None, *, ip: str = IP,
                 first_ban_s: float = FIRST_BAN_S, max_ban_s: float = MAX_BAN_S) -> None:
        self.limit = limit
        self.clock: Clock = clock or time.time
        self.ip = ip
        self.first_ban_s = first_ban_s
        self.max_ban_s = max_ban_s
        self.other_clients_weight = 0   # weight other clients on this IP spent this minute (a test knob)
        self._lock = threading.Lock()
        self.reset()

    # ---------------------------------------------------------------- state
    def reset(self) -> None:
        """Counters and state (the minute, the 429 period, bans) back to a fresh IP."""
        with self._lock:
            self._minute = -1
            self._used = 0
            self.limited_until = 0.0     # a 429 is in force until then (the minute's end)
            self.banned_until = 0.0
            self.bans = 0
        self.reset_counters()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = 0
            self.answered_429 = 0
            self.answered_418 = 0
            self.sent_after_429 = 0
            self.peak_used_1m = 0
            self.weight_by_path: Counter[str] = Counter()
            self.history: list[tuple[int, int]] = []   # (minute start, used) of each finished minute

    def used_1m(self) -> int:
        with self._lock:
            self._roll(self.clock())
            return self._used + self.other_clients_weight

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            if self._minute >= 0 and self._used:
                self.history.append((self._minute * 60, self._used))
            self._minute, self._used = minute, 0

    # ------------------------------------------------------------- decision
    def admit(self, weight: int, path: str = "") -> Admission:
        """Decide one request before it is served: spend its weight, or refuse it with 429 / 418."""
        with self._lock:
            now = self.clock()
            self._roll(now)
            self.requests += 1
            if now < self.banned_until or now < self.limited_until:
                return self._ban(now)
            used = self._used + self.other_clients_weight
            if used + weight > self.limit:
                minute_end = (self._minute + 1) * 60
                self.limited_until = minute_end
                self.answered_429 += 1
                return Admission(429, used, max(1, math.ceil(minute_end - now)), {
                    "code": -1003,
                    "msg": f"Too many requests; current limit of IP({self.ip}) is {self.limit} requests per minute. "
                           "Please use the websocket for live updates to avoid polling the API.",
                })
            self._used += weight
            self.peak_used_1m = max(self.peak_used_1m, self._used)
            if weight:
                self.weight_by_path[path] += weight
            return Admission(200, self._used + self.other_clients_weight)

    def _ban(self, now: float) -> Admission:
        """A request while a 429 or a ban is in force: 418, and a new (longer) ban unless one is running."""
        self.sent_after_429 += 1
        self.answered_418 += 1
        if now >= self.banned_until:
            self.banned_until = now + min(self.first_ban_s * 2 ** self.bans, self.max_ban_s)
            self.bans += 1
        until_ms = int(self.banned_until * 1000)
        return Admission(418, self._used + self.other_clients_weight, max(1, math.ceil(self.banned_until - now)), {
            "code": -1003,
            "msg": f"Way too many requests; IP({self.ip}) banned until {until_ms}. "
                   "Please use the websocket for live updates to avoid bans.",
        })


class ConnectionAttempts:
    """WebSocket connection attempts per IP in a sliding window (300 per 5 minutes); refused ones count too."""

    def __init__(self, limit: int = 300, window_s: float = 300.0, clock: Clock | None = None) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock: Clock = clock or time.time
        self.attempts = 0
        self.refused = 0
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def reset_counters(self) -> None:
        """Zero ``attempts`` and ``refused``; the window (Binance's state) is kept."""
        with self._lock:
            self.attempts = self.refused = 0

    def attempt(self) -> bool:
        """Record one attempt; whether it may connect."""
        with self._lock:
            now = self.clock()
            while self._times and now - self._times[0] >= self.window_s:
                self._times.popleft()
            self.attempts += 1
            self._times.append(now)
            if len(self._times) > self.limit:
                self.refused += 1
                return False
            return True
