"""The simulated feed's universe: real USDⓈ-M perpetuals with realistic rules.

Reference prices, tick/step sizes and minimum notionals follow Binance's
USDⓈ-M futures exchangeInfo (late 2024 / 2025 orders of magnitude); the
simulated price wanders around the reference. ``volatility`` scales the
random walk relative to BTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from services.market.sources.base import TradingRules


@dataclass(frozen=True, slots=True)
class SimulatedSymbol:
    symbol: str
    reference_price: float
    rules: TradingRules
    volatility: float
    daily_volume_usd: float


# symbol, reference price, tickSize, stepSize (= minQty), notional, volatility, daily volume (USD)
_ROWS: tuple[tuple[str, float, str, str, str, float, float], ...] = (
    ("BTCUSDT", 60000.0, "0.10", "0.001", "100", 1.0, 15e9),
    ("ETHUSDT", 3000.0, "0.01", "0.001", "20", 1.25, 8e9),
    ("BNBUSDT", 580.0, "0.010", "0.01", "5", 1.1, 6e8),
    ("SOLUSDT", 150.0, "0.0100", "1", "5", 1.6, 3e9),
    ("XRPUSDT", 0.55, "0.0001", "0.1", "5", 1.5, 1.5e9),
    ("DOGEUSDT", 0.12, "0.000010", "1", "5", 1.9, 1.5e9),
    ("ADAUSDT", 0.45, "0.00010", "1", "5", 1.6, 4e8),
    ("AVAXUSDT", 28.0, "0.0010", "1", "5", 1.8, 4e8),
    ("LINKUSDT", 14.0, "0.001", "0.01", "5", 1.7, 4e8),
    ("DOTUSDT", 6.5, "0.001", "0.1", "5", 1.6, 2e8),
    ("TRXUSDT", 0.12, "0.00001", "1", "5", 0.9, 1.5e8),
    ("LTCUSDT", 75.0, "0.01", "0.001", "5", 1.4, 3e8),
    ("BCHUSDT", 380.0, "0.01", "0.001", "5", 1.5, 3e8),
    ("ATOMUSDT", 7.5, "0.001", "0.01", "5", 1.6, 1.2e8),
    ("UNIUSDT", 8.0, "0.0010", "1", "5", 1.8, 1.5e8),
    ("ETCUSDT", 22.0, "0.001", "0.01", "5", 1.5, 1.5e8),
    ("FILUSDT", 4.5, "0.001", "0.1", "5", 1.8, 1.5e8),
    ("APTUSDT", 8.0, "0.00010", "0.1", "5", 1.9, 2e8),
    ("ARBUSDT", 0.8, "0.0001", "0.1", "5", 2.0, 2e8),
    ("OPUSDT", 1.8, "0.0001000", "0.1", "5", 2.0, 1.5e8),
    ("NEARUSDT", 5.0, "0.0010", "1", "5", 1.9, 2.5e8),
    ("SUIUSDT", 1.5, "0.000100", "0.1", "5", 2.2, 6e8),
    ("INJUSDT", 22.0, "0.001000", "0.1", "5", 2.1, 1.5e8),
    ("AAVEUSDT", 150.0, "0.010", "0.1", "5", 1.8, 2.5e8),
    ("MKRUSDT", 2000.0, "0.10", "0.001", "5", 1.7, 6e7),
    ("XLMUSDT", 0.1, "0.00001", "1", "5", 1.4, 1e8),
    ("ALGOUSDT", 0.15, "0.0001", "0.1", "5", 1.7, 5e7),
    ("VETUSDT", 0.025, "0.000001", "1", "5", 1.7, 5e7),
    ("ICPUSDT", 9.0, "0.001", "1", "5", 1.9, 8e7),
    ("HBARUSDT", 0.07, "0.00001", "1", "5", 1.8, 1e8),
    ("SANDUSDT", 0.35, "0.00010", "1", "5", 2.0, 6e7),
    ("MANAUSDT", 0.35, "0.0001", "1", "5", 2.0, 4e7),
    ("AXSUSDT", 5.0, "0.001", "1", "5", 2.0, 4e7),
    ("EOSUSDT", 0.6, "0.0001", "0.1", "5", 1.7, 5e7),
    ("THETAUSDT", 1.2, "0.0010", "0.1", "5", 1.9, 3e7),
    ("XTZUSDT", 0.7, "0.0001", "0.1", "5", 1.6, 2e7),
    ("CRVUSDT", 0.3, "0.0001", "0.1", "5", 2.2, 8e7),
    ("SNXUSDT", 1.8, "0.001", "0.1", "5", 2.1, 3e7),
    ("COMPUSDT", 50.0, "0.01", "0.001", "5", 1.9, 3e7),
    ("GRTUSDT", 0.15, "0.00001", "1", "5", 2.0, 4e7),
    ("LDOUSDT", 1.6, "0.000100", "1", "5", 2.2, 8e7),
    ("RUNEUSDT", 4.0, "0.0010", "1", "5", 2.3, 8e7),
    ("SEIUSDT", 0.35, "0.0001", "1", "5", 2.3, 1e8),
    ("TIAUSDT", 6.0, "0.001000", "1", "5", 2.4, 1.5e8),
    ("WLDUSDT", 2.0, "0.0001000", "1", "5", 2.5, 2e8),
    ("1000PEPEUSDT", 0.01, "0.0000001", "1", "5", 2.8, 8e8),
    ("1000SHIBUSDT", 0.017, "0.000001", "1", "5", 2.0, 1e8),
    ("1000BONKUSDT", 0.02, "0.0000010", "1", "5", 2.8, 1.5e8),
    ("WIFUSDT", 2.0, "0.0001000", "0.1", "5", 3.0, 5e8),
    ("ORDIUSDT", 30.0, "0.001", "0.1", "5", 2.6, 1.5e8),
    ("STXUSDT", 1.6, "0.0001", "1", "5", 2.2, 5e7),
    ("IMXUSDT", 1.4, "0.0001", "1", "5", 2.1, 4e7),
    ("DYDXUSDT", 1.2, "0.001", "0.1", "5", 2.2, 5e7),
    ("GALAUSDT", 0.025, "0.00001", "1", "5", 2.3, 6e7),
    ("APEUSDT", 0.9, "0.0001", "1", "5", 2.2, 6e7),
    ("ENSUSDT", 20.0, "0.001", "0.1", "5", 2.1, 4e7),
    ("JUPUSDT", 0.8, "0.0001", "1", "5", 2.4, 8e7),
    ("TONUSDT", 5.5, "0.0001", "0.1", "5", 1.8, 1e8),
    ("ZECUSDT", 35.0, "0.01", "0.001", "5", 1.8, 3e7),
    ("XMRUSDT", 160.0, "0.01", "0.001", "5", 1.4, 3e7),
    ("DASHUSDT", 25.0, "0.01", "0.001", "5", 1.7, 2e7),
    ("KASUSDT", 0.15, "0.000010", "1", "5", 2.3, 6e7),
)


def _max_quantities(reference_price: float, step: Decimal) -> tuple[Decimal, Decimal]:
    """LOT_SIZE and MARKET_LOT_SIZE maxQty: about $60M and $6M, as round numbers of the step."""
    limit = Decimal(10) ** round(math.log10(60_000_000 / reference_price))
    limit = max(limit, step * 1000)
    return limit, max(limit / 10, step * 100)


def _build() -> dict[str, SimulatedSymbol]:
    universe: dict[str, SimulatedSymbol] = {}
    for symbol, price, tick, step, notional, volatility, volume in _ROWS:
        step_size = Decimal(step)
        max_qty, market_max_qty = _max_quantities(price, step_size)
        if symbol == "BTCUSDT":  # Binance's own values for the flagship
            max_qty, market_max_qty = Decimal("1000"), Decimal("120")
        rules = TradingRules(
            symbol=symbol,
            tick_size=Decimal(tick),
            step_size=step_size,
            min_qty=step_size,
            max_qty=max_qty,
            min_notional=Decimal(notional),
            market_step_size=step_size,
            market_max_qty=market_max_qty,
        )
        universe[symbol] = SimulatedSymbol(symbol, price, rules, volatility, volume)
    return universe


SIMULATED_UNIVERSE: dict[str, SimulatedSymbol] = _build()
