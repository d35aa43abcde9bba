"""Before the fan-out: how much Binance request weight will this tick spend, and who fits.

Binance counts request weight per egress IP per minute (2400 on USDⓈ-M
futures). A tick that needs more earns 429s, then an IP ban for everyone on
that address. The planner estimates the weight each bot adds (pure
arithmetic, no I/O) and, when the total passes the budget, keeps the bots
with an open position first (risk before opportunity), then the others in a
stable order, and defers the rest with ``skipped`` "weight budget".

What one bot adds is its marginal cost: the work it shares with bots already
kept is paid once.

* Market side, per distinct (symbol, interval): one klines read. The market
  service's cache may already hold the candles, but the gateway cannot know,
  so it counts the documented weight for ``limit + 1`` candles (the market
  asks one more for the open candle: 301 -> 2). Per distinct symbol:
  exchangeInfo (1) and the price (1).
* Executor side, per distinct live/testnet exchange connection: one account
  read (``GET /fapi/v3/account``: balances and every position in one answer,
  weight 5), shared by that user's bots. Per bot with an open position on
  such a connection: its protective-order audit (weight 1). Paper connections
  cost nothing. Orders carry no IP weight (they count against the per-account
  order limits, which the executor keeps).
* Not planned per tick: the income-history refresh behind the daily-loss rule
  (weight 30 per account). The executor keeps today's realised PnL from the
  fills it books itself and refreshes the income baseline at most every 30
  minutes per account, only while Binance's reported used weight leaves room
  (see services/executor/brokers/binance_account.py), i.e. in the headroom
  between this budget and 2,400, so it is not a per-tick cost.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.binance_weights import EXCHANGE_INFO_WEIGHT, klines_weight
from services.common.binance_weights import MARK_PRICE_WEIGHT_ONE_SYMBOL as PRICE_WEIGHT
from services.common.bot_documents import BotDocument

DEFAULT_WEIGHT_BUDGET = 1920  # 80 % of Binance's 2400 per IP per minute: headroom for retries and other clients
ACCOUNT_READ_WEIGHT = 5        # GET /fapi/v3/account: balances + positions of one account
POSITION_CHECK_WEIGHT = 1      # GET /fapi/v1/openAlgoOrders?symbol=: the protective-order audit
LIVE_MODES = ("live", "testnet")


@dataclass(frozen=True)
class BotWeightInput:
    key: Hashable                 # the bot's instance id
    symbol: str
    interval: str
    account: Hashable | None      # the exchange connection it spends weight on; None: paper (free)
    has_position: bool
    order_key: str = ""           # stable order within a priority (the instance id as text)


@dataclass(frozen=True)
class WeightPlan:
    budget: int                   # 0: planning off, every bot kept
    needed: int                   # weight all the claimed bots would need
    planned: int                  # weight of the kept bots
    kept: list[Hashable] = field(default_factory=list)
    deferred: list[Hashable] = field(default_factory=list)


def plan_weight(bots: Sequence[BotWeightInput], budget: int, candle_limit: int) -> WeightPlan:
    """Keep bots while their marginal weight fits ``budget``: open positions first, then by ``order_key``.

    A bot that does not fit is deferred, but the next one may still be kept
    when it costs less (its account and symbol already paid for): the budget
    is spent on as many bots as it can carry.
    """
    klines = klines_weight(candle_limit + 1)
    needed = _Tally(klines)
    for bot in bots:
        needed.add(bot)
    if budget <= 0:
        return WeightPlan(budget, needed.total, needed.total, [bot.key for bot in bots], [])
    ordered = sorted(bots, key=lambda bot: (not bot.has_position, bot.order_key))
    kept = _Tally(klines)
    kept_keys: list[Hashable] = []
    deferred: list[Hashable] = []
    for bot in ordered:
        if kept.total + kept.marginal(bot) <= budget:
            kept.add(bot)
            kept_keys.append(bot.key)
        else:
            deferred.append(bot.key)
    return WeightPlan(budget, needed.total, kept.total, kept_keys, deferred)


class _Tally:
    """The weight of a set of bots, with what they share counted once."""

    def __init__(self, klines: int) -> None:
        self.klines = klines
        self.total = 0
        self.markets: set[tuple[str, str]] = set()
        self.symbols: set[str] = set()
        self.accounts: set[Hashable] = set()

    def marginal(self, bot: BotWeightInput) -> int:
        weight = 0
        if (bot.symbol, bot.interval) not in self.markets:
            weight += self.klines
        if bot.symbol not in self.symbols:
            weight += EXCHANGE_INFO_WEIGHT + PRICE_WEIGHT
        if bot.account is not None:
            if bot.account not in self.accounts:
                weight += ACCOUNT_READ_WEIGHT
            if bot.has_position:
                weight += POSITION_CHECK_WEIGHT
        return weight

    def add(self, bot: BotWeightInput) -> None:
        self.total += self.marginal(bot)
        self.markets.add((bot.symbol, bot.interval))
        self.symbols.add(bot.symbol)
        if bot.account is not None:
            self.accounts.add(bot.account)


def weight_inputs(bots: Sequence[BotDocument], connections: Sequence[dict[str, Any]] | None) -> list[BotWeightInput]:
    """What the planner needs of each bot; ``connections`` are the users' ``exchangeconnections``
    (non-secret fields; the repository reads only the active live/testnet ones), None when they
    could not be read. Indexed by user once, so this is linear in bots + connections."""
    by_user: dict[str, list[dict[str, Any]]] | None = None
    if connections is not None:
        by_user = {}
        for doc in connections:
            by_user.setdefault(str(doc.get("userId")), []).append(doc)
    return [
        BotWeightInput(
            key=bot.instance_id,
            symbol=bot.symbol,
            interval=bot.config.interval,
            account=_resolve(bot, None if by_user is None else by_user.get(str(bot.user_id), [])),
            has_position=bot.position is not None,
            order_key=str(bot.instance_id),
        )
        for bot in bots
    ]


def weighed_account(bot: BotDocument, connections: Sequence[dict[str, Any]] | None) -> Hashable | None:
    """The live/testnet connection this bot's executor cycle will read, resolved as the executor
    does (``exchangeConnectionId``, else the user's single active one); None when it costs no
    exchange weight (paper, or a connection the executor will refuse before any exchange call).

    Given only the active live/testnet connections (what the repository reads), a user with an
    active paper AND an active live connection and no ``exchangeConnectionId`` is planned as live:
    the executor refuses that bot as ambiguous, so the plan over-estimates, never under."""
    if connections is None:
        return _resolve(bot, None)
    return _resolve(bot, [doc for doc in connections if str(doc.get("userId")) == str(bot.user_id)])


def _resolve(bot: BotDocument, owned: Sequence[dict[str, Any]] | None) -> Hashable | None:
    if owned is None:  # unknown: assume the worst, a live account per connection (or per user)
        return bot.exchange_connection_id or ("user", bot.user_id)
    if bot.exchange_connection_id is not None:
        chosen = [doc for doc in owned if doc.get("_id") == bot.exchange_connection_id and doc.get("isActive")]
    else:
        chosen = [doc for doc in owned if doc.get("isActive")]
    if len(chosen) != 1:  # none or ambiguous: the executor fails the bot before any exchange call
        return None
    connection_id: Hashable = chosen[0].get("_id")
    return connection_id if chosen[0].get("mode") in LIVE_MODES else None
