"""The simulated feed as one exchange sees it: symbol filters, and mark prices at the fake clock.

Shared by the market-data and trading routes of ``FakeBinanceExchange`` so that
fills, premiumIndex and the last kline agree. The mark price is the feed's
price at the start of the current second (Binance updates it every second),
cached per second so 2,000 accounts filling at once cost one evaluation.
"""

from __future__ import annotations

from decimal import Decimal

from services.market.sources.simulated import SimulatedMarketSource
from services.market.sources.universe import SIMULATED_UNIVERSE
from tests.fakes.binance_futures_model import SymbolSpec, decimals
from tests.fakes.binance_limits import Clock

MARK_RESOLUTION_MS = 1000


def spec_of(symbol: str) -> SymbolSpec:
    """The trading filters of a simulated symbol (MARKET_LOT_SIZE bounds market orders)."""
    rules = SIMULATED_UNIVERSE[symbol].rules
    return SymbolSpec(symbol, rules.tick_size, rules.market_step_size, rules.min_qty, rules.market_max_qty,
                      rules.min_notional, decimals(rules.tick_size), decimals(rules.market_step_size))


class SimulatedFeed:
    def __init__(self, clock: Clock, resolution_ms: int = MARK_RESOLUTION_MS) -> None:
        self.clock = clock
        self.resolution_ms = resolution_ms
        self.source = SimulatedMarketSource(clock=clock)
        self._marks: dict[str, tuple[int, Decimal]] = {}

    def symbols(self) -> list[str]:
        return list(SIMULATED_UNIVERSE)

    def specs(self) -> tuple[SymbolSpec, ...]:
        return tuple(spec_of(symbol) for symbol in SIMULATED_UNIVERSE)

    def now_ms(self) -> int:
        """The feed's time: the clock, floored to the mark price's resolution."""
        now = int(self.clock() * 1000)
        return now - now % self.resolution_ms

    def mark_price(self, symbol: str) -> Decimal:
        at = self.now_ms()
        cached = self._marks.get(symbol)
        if cached is not None and cached[0] == at:
            return cached[1]
        price = self.source.bars(symbol, "1m", 1, at)[-1].close
        self._marks[symbol] = (at, price)
        return price
