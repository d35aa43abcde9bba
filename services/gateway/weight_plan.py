"""Before the fan-out: how much Binance market-data weight will this tick spend, and whose markets fit.

Binance counts request weight per egress IP per minute (2,400 on USDⓈ-M
futures). Every process that talks to Binance now goes through its own weight
governor (``services/common/weight_governor.py``): it spends at most its share
of the IP, waits for the next minute within its caller's deadline or answers
RESOURCE_EXHAUSTED, and sends nothing during a 429/418 pause. So nothing can
earn a ban any more; what the gateway still decides is *which* bots get the
market data when not all of them can, instead of leaving it to whichever
``GetCandles`` happens to reach the market's governor first.

The planner estimates the market side of the tick (pure arithmetic, no I/O)
and, when the total passes the budget, keeps the bots with an open position
first (risk before opportunity), then the others in a stable order, and defers
the rest with ``skipped`` "weight budget". What one bot adds is its marginal
cost: the market it shares with bots already kept is paid once.

* Per distinct (symbol, interval): one klines read. The market service's
  cache may already hold the candles, but the gateway cannot know, so it
  counts the documented weight for ``limit + 1`` candles (the market asks one
  more for the open candle: 301 -> 2).
* Per distinct symbol: exchangeInfo (1) and the price (1), which the executor
  reads through the market service.

What is not planned: the executor's side. Live accounts' balances, positions,
conditional orders and fills come from Binance user-data streams
(``services/executor/binance/``), so a live bot's cycle costs no IP weight
once its account is brought up; first contact (listenKey + one account
snapshot) and the reconcile after a stream gap are spread by the executor
itself on its governor's background share (``bring_up.py``), and orders weigh
nothing on the IP (they count against the per-account order limits, which the
executor keeps). A bot's accounts, live or paper, therefore cost this plan
nothing, and the gateway reads no exchange connections for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from services.common.binance_weights import EXCHANGE_INFO_WEIGHT, klines_weight
from services.common.binance_weights import MARK_PRICE_WEIGHT_ONE_SYMBOL as PRICE_WEIGHT
from services.common.bot_documents import BotDocument

# Market-data weight one tick may plan: the market service's share of the IP,
# MARKET_WEIGHT_BUDGET_SHARE = 0.15 of 2,400 per minute = 360 (the executor's
# governor takes 0.8, the rest is headroom). A tick's reads land within a
# minute or two, so its plan is held to one minute's share. The market's own
# governor enforces the same share at run time (it waits or answers
# RESOURCE_EXHAUSTED); the planner's job is to say up front which bots'
# markets do not fit, open positions first, rather than let the first groups
# to ask win. Raise it (GATEWAY_WEIGHT_BUDGET_PER_TICK) together with the
# market's share; 0 turns planning off.
DEFAULT_WEIGHT_BUDGET = 360


@dataclass(frozen=True)
class BotWeightInput:
    key: Hashable                 # the bot's instance id
    symbol: str
    interval: str
    has_position: bool
    order_key: str = ""           # stable order within a priority (the instance id as text)


@dataclass(frozen=True)
class WeightPlan:
    budget: int                   # 0: planning off, every bot kept
    needed: int                   # market-data weight all the claimed bots would need
    planned: int                  # market-data weight of the kept bots
    kept: list[Hashable] = field(default_factory=list)
    deferred: list[Hashable] = field(default_factory=list)


def plan_weight(bots: Sequence[BotWeightInput], budget: int, candle_limit: int) -> WeightPlan:
    """Keep bots while their marginal market-data weight fits ``budget``: open positions first, then by ``order_key``.

    A bot that does not fit is deferred, but the next one may still be kept
    when it costs less (its market and symbol already paid for): the budget
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
    """The market-data weight of a set of bots, with what they share counted once."""

    def __init__(self, klines: int) -> None:
        self.klines = klines
        self.total = 0
        self.markets: set[tuple[str, str]] = set()
        self.symbols: set[str] = set()

    def marginal(self, bot: BotWeightInput) -> int:
        weight = 0
        if (bot.symbol, bot.interval) not in self.markets:
            weight += self.klines
        if bot.symbol not in self.symbols:
            weight += EXCHANGE_INFO_WEIGHT + PRICE_WEIGHT
        return weight

    def add(self, bot: BotWeightInput) -> None:
        self.total += self.marginal(bot)
        self.markets.add((bot.symbol, bot.interval))
        self.symbols.add(bot.symbol)


def weight_inputs(bots: Sequence[BotDocument]) -> list[BotWeightInput]:
    """What the planner needs of each bot: its market and whether it holds a position."""
    return [
        BotWeightInput(
            key=bot.instance_id,
            symbol=bot.symbol,
            interval=bot.config.interval,
            has_position=bot.position is not None,
            order_key=str(bot.instance_id),
        )
        for bot in bots
    ]
