"""Reading ``botinstances`` documents into validated values.

The collection is shared with the Next.js app (Mongoose names, camelCase),
so a document can be anything a user or an old app version wrote. Each bot
is parsed on its own: a broken document raises ``InvalidBotDocument`` with
a message naming the field and the bad value, and only that bot fails.
The gateway parses what it claims; the executor parses the same document
again before it trades, with this same code, because the stored bot (not the
caller's request) is what it acts on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bson import ObjectId
from bson.decimal128 import Decimal128

PRESET_BOT_IDS = (1, 2, 3, 4)
# The strategy behind each preset botId (the seed's four bots).
PRESET_NAMES = {1: "Bitcoin Pro", 2: "Safe Trader", 3: "Trend Rider", 4: "Range Scalper"}
BINANCE_INTERVALS = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip
DEFAULT_INTERVAL = "5m"
DEFAULT_CONFIDENCE_THRESHOLD = 70.0
DEFAULT_MAX_CONSECUTIVE_LOSSES = 3
MARGIN_TYPES = ("ISOLATED", "CROSSED")
DEFAULT_MARGIN_TYPE = "ISOLATED"
MAX_STRATEGY_PARAMS = 32
# Strategy parameter names as the strategies declare them (rsiOversold, ema_fast, ...).
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# USDⓈ-M futures symbols: base asset letters/digits then the quote (BTCUSDT, 1000PEPEUSDT).
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}(USDT|USDC)$")

# The fields a tick reads: lastAnalysis and anything the app adds stay in the database.
def empty_statistics() -> dict[str, Any]:
    """A new bot's ``statistics``: the seed's fields plus ``consecutiveLosses``."""
    return {
        "totalTrades": 0,
        "winningTrades": 0,
        "losingTrades": 0,
        "totalProfit": 0,
        "totalLoss": 0,
        "winRate": 0,
        "avgProfit": 0,
        "consecutiveLosses": 0,
    }


def new_bot_document(
    *,
    user_id: ObjectId,
    bot_id: int,
    bot_name: str,
    symbol: str,
    config: dict[str, Any],
    status: str = "ACTIVE",
    exchange_connection_id: ObjectId | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A ``botinstances`` document exactly in the seed's BotInstance shape (what every writer creates)."""
    created = now or datetime.now(UTC)
    document: dict[str, Any] = {
        "userId": user_id,
        "botId": bot_id,
        "botName": bot_name,
        "symbol": symbol,
        "status": status,
        "config": config,
        "currentPosition": None,
        "lastAnalysis": None,
        "statistics": empty_statistics(),
        "lastError": None,
        "createdAt": created,
        "updatedAt": created,
    }
    if exchange_connection_id is not None:
        document["exchangeConnectionId"] = exchange_connection_id
    return document


BOT_PROJECTION: dict[str, int] = {
    "_id": 1,
    "userId": 1,
    "botId": 1,
    "botName": 1,
    "symbol": 1,
    "status": 1,
    "config": 1,
    "currentPosition": 1,
    "statistics": 1,
    "exchangeConnectionId": 1,
    "lockOwner": 1,
    "lockedUntil": 1,
}


class InvalidBotDocument(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BotConfigValues:
    leverage: int
    stop_loss_percent: Decimal
    take_profit_percent: Decimal
    position_size_percent: Decimal
    max_daily_loss: Decimal
    interval: str
    confidence_threshold: float
    max_consecutive_losses: int
    # Overrides of the strategy's parameters, sorted by name: part of the analysis group key.
    # The strategy service checks names and bounds (INVALID_ARGUMENT); here only their type.
    strategy_params: tuple[tuple[str, float], ...] = ()
    max_position_notional: Decimal | None = None   # hard cap in USDT; None: no cap beyond the size rule
    margin_type: str = DEFAULT_MARGIN_TYPE
    use_ai: bool = True                             # ANDed with TICK_USE_AI


@dataclass(frozen=True)
class BotStatisticsValues:
    total_trades: int = 0
    winning_trades: int = 0
    losing_trades: int = 0
    total_profit: float = 0.0
    total_loss: float = 0.0
    consecutive_losses: int = 0
    stored_as_object: bool = False  # False: the field is missing or null, so $inc on its paths cannot work


@dataclass(frozen=True)
class StoredPosition:
    symbol: str
    side: str  # LONG | SHORT
    entry_price: Decimal
    quantity: Decimal
    leverage: int
    stop_loss: Decimal | None
    take_profit: Decimal | None
    pnl: Decimal | None
    pnl_percent: Decimal | None
    open_time: datetime | None
    # The signal that opened this position (strategy, confidence, the AI's verdict), as the gateway stored it at
    # the entry; copied onto the CLOSE_POSITION TradeLog so calibration links each trade to its signal.
    opening_signal: dict[str, Any] | None = None


@dataclass(frozen=True)
class BotIdentity:
    """What can be said about any bot document, even a broken one."""

    instance_id: Any
    user_id: ObjectId | None
    bot_name: str
    symbol: str


@dataclass(frozen=True)
class BotDocument:
    identity: BotIdentity
    user_id: ObjectId
    bot_id: int
    exchange_connection_id: ObjectId | None
    config: BotConfigValues
    statistics: BotStatisticsValues
    position: StoredPosition | None

    @property
    def instance_id(self) -> ObjectId:
        return self.identity.instance_id

    @property
    def bot_name(self) -> str:
        return self.identity.bot_name

    @property
    def symbol(self) -> str:
        return self.identity.symbol


def identity_of(doc: dict[str, Any]) -> BotIdentity:
    user_id = doc.get("userId")
    name = doc.get("botName")
    symbol = doc.get("symbol")
    return BotIdentity(
        instance_id=doc.get("_id"),
        user_id=user_id if isinstance(user_id, ObjectId) else None,
        bot_name=name if isinstance(name, str) else "",
        symbol=symbol if isinstance(symbol, str) else "",
    )


def parse_bot(doc: dict[str, Any]) -> BotDocument:
    identity = identity_of(doc)
    if not isinstance(doc.get("_id"), ObjectId):
        raise InvalidBotDocument(f"_id must be an ObjectId, got {_show(doc.get('_id'))}")
    user_id = doc.get("userId")
    if not isinstance(user_id, ObjectId):
        raise InvalidBotDocument(f"userId must be an ObjectId, got {_show(user_id)}")
    bot_id = _integer(doc.get("botId"), "botId")
    if bot_id not in PRESET_BOT_IDS:
        raise InvalidBotDocument(f"botId must be one of 1, 2, 3, 4, got {_show(doc.get('botId'))}")
    name = doc.get("botName")
    if not isinstance(name, str) or not name.strip():
        raise InvalidBotDocument(f"botName must be a non-empty string, got {_show(name)}")
    symbol = doc.get("symbol")
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise InvalidBotDocument(
            f"symbol must be a Binance USDⓈ-M futures symbol such as BTCUSDT, got {_show(symbol)}"
        )
    connection_id = doc.get("exchangeConnectionId")
    if connection_id is not None and not isinstance(connection_id, ObjectId):
        raise InvalidBotDocument(f"exchangeConnectionId must be an ObjectId, got {_show(connection_id)}")
    return BotDocument(
        identity=identity,
        user_id=user_id,
        bot_id=bot_id,
        exchange_connection_id=connection_id,
        config=_parse_config(doc.get("config", _MISSING)),
        statistics=_parse_statistics(doc.get("statistics")),
        position=_parse_position(doc.get("currentPosition"), symbol),
    )


def _parse_config(config: Any) -> BotConfigValues:
    if config is _MISSING:
        raise InvalidBotDocument("config is missing")
    if not isinstance(config, dict):
        raise InvalidBotDocument(f"config must be an object, got {_show(config)}")
    leverage = _integer(config.get("leverage"), "config.leverage")
    if not 1 <= leverage <= 125:
        raise InvalidBotDocument(f"config.leverage must be between 1 and 125, got {leverage}")
    interval = config.get("interval", DEFAULT_INTERVAL)
    if interval is None:
        interval = DEFAULT_INTERVAL
    if interval not in BINANCE_INTERVALS:
        raise InvalidBotDocument(
            f"config.interval must be a Binance interval ({', '.join(BINANCE_INTERVALS)}), got {_show(interval)}"
        )
    threshold = _optional_number(config, "confidenceThreshold", Decimal(str(DEFAULT_CONFIDENCE_THRESHOLD)))
    _check_range(threshold, "config.confidenceThreshold", low=Decimal(0), high=Decimal(100))
    max_losses = config.get("maxConsecutiveLosses")
    losses_limit = (
        DEFAULT_MAX_CONSECUTIVE_LOSSES if max_losses is None else _integer(max_losses, "config.maxConsecutiveLosses")
    )
    if not 1 <= losses_limit <= 1000:
        raise InvalidBotDocument(f"config.maxConsecutiveLosses must be between 1 and 1000, got {losses_limit}")
    stop_loss_percent = _price_distance(config, "stopLossPercent")
    beyond = stop_beyond_liquidation(leverage, stop_loss_percent)
    if beyond is not None:
        raise InvalidBotDocument(f"config.{beyond}")
    return BotConfigValues(
        leverage=leverage,
        stop_loss_percent=stop_loss_percent,
        take_profit_percent=_price_distance(config, "takeProfitPercent"),
        position_size_percent=_positive(config, "positionSizePercent", high=Decimal(100)),
        max_daily_loss=_positive(config, "maxDailyLoss"),
        interval=interval,
        confidence_threshold=float(threshold),
        max_consecutive_losses=losses_limit,
        strategy_params=_parse_strategy_params(config.get("strategyParams")),
        max_position_notional=_optional_positive(config, "maxPositionNotional"),
        margin_type=_parse_margin_type(config.get("marginType")),
        use_ai=_optional_bool(config.get("useAi"), "config.useAi", default=True),
    )


def _parse_strategy_params(params: Any) -> tuple[tuple[str, float], ...]:
    if params is None:
        return ()
    if not isinstance(params, dict):
        raise InvalidBotDocument(f"config.strategyParams must be an object of name -> number, got {_show(params)}")
    if len(params) > MAX_STRATEGY_PARAMS:
        raise InvalidBotDocument(f"config.strategyParams has {len(params)} entries, at most {MAX_STRATEGY_PARAMS}")
    parsed: dict[str, float] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise InvalidBotDocument(f"config.strategyParams has an invalid parameter name {_show(name)}")
        field = f"config.strategyParams.{name}"
        # Numbers only: a string or a nested object is a mistake, not a value to guess at.
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal128)):
            raise InvalidBotDocument(f"{field} must be a number, got {_show(value)}")
        number = float(_decimal(value, field))
        if not math.isfinite(number):
            raise InvalidBotDocument(f"{field} must be a finite number, got {_show(value)}")
        parsed[name] = number
    return tuple(sorted(parsed.items()))


def _optional_positive(config: dict[str, Any], key: str) -> Decimal | None:
    if config.get(key) is None:
        return None
    return _positive(config, key)


def _parse_margin_type(value: Any) -> str:
    if value is None:
        return DEFAULT_MARGIN_TYPE
    if not isinstance(value, str) or value.strip().upper() not in MARGIN_TYPES:
        raise InvalidBotDocument(f"config.marginType must be ISOLATED or CROSSED, got {_show(value)}")
    return value.strip().upper()


def _optional_bool(value: Any, field: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidBotDocument(f"{field} must be true or false, got {_show(value)}")
    return value


def _parse_statistics(statistics: Any) -> BotStatisticsValues:
    if statistics is None:
        return BotStatisticsValues()
    if not isinstance(statistics, dict):
        raise InvalidBotDocument(f"statistics must be an object, got {_show(statistics)}")
    counts = {}
    for field in ("totalTrades", "winningTrades", "losingTrades", "consecutiveLosses"):
        value = statistics.get(field)
        counts[field] = 0 if value is None else _integer(value, f"statistics.{field}")
        if counts[field] < 0:
            raise InvalidBotDocument(f"statistics.{field} must not be negative, got {counts[field]}")
    amounts = {}
    for field in ("totalProfit", "totalLoss"):
        value = statistics.get(field)
        amounts[field] = 0.0 if value is None else float(_decimal(value, f"statistics.{field}"))
    return BotStatisticsValues(
        total_trades=counts["totalTrades"],
        winning_trades=counts["winningTrades"],
        losing_trades=counts["losingTrades"],
        total_profit=amounts["totalProfit"],
        total_loss=amounts["totalLoss"],
        consecutive_losses=counts["consecutiveLosses"],
        stored_as_object=True,
    )


def _parse_position(position: Any, bot_symbol: str) -> StoredPosition | None:
    if position is None:
        return None
    if not isinstance(position, dict):
        raise InvalidBotDocument(f"currentPosition must be an object or null, got {_show(position)}")
    symbol = position.get("symbol", bot_symbol)
    if symbol != bot_symbol:
        raise InvalidBotDocument(f"currentPosition.symbol must be the bot's symbol {bot_symbol}, got {_show(symbol)}")
    side = position.get("side")
    if side not in ("LONG", "SHORT"):
        raise InvalidBotDocument(f"currentPosition.side must be LONG or SHORT, got {_show(side)}")
    leverage = _integer(position.get("leverage"), "currentPosition.leverage")
    open_time = position.get("openTime")
    if open_time is not None and not isinstance(open_time, datetime):
        raise InvalidBotDocument(f"currentPosition.openTime must be a date, got {_show(open_time)}")
    if open_time is not None and open_time.tzinfo is None:
        open_time = open_time.replace(tzinfo=UTC)
    return StoredPosition(
        symbol=symbol,
        side=side,
        entry_price=_positive(position, "entryPrice", prefix="currentPosition"),
        quantity=_positive(position, "quantity", prefix="currentPosition"),
        leverage=leverage,
        stop_loss=_maybe_decimal(position, "stopLoss"),
        take_profit=_maybe_decimal(position, "takeProfit"),
        pnl=_maybe_decimal(position, "pnl"),
        pnl_percent=_maybe_decimal(position, "pnlPercent"),
        open_time=open_time,
        # Informational only: whatever else is stored there never fails the bot.
        opening_signal=position.get("openingSignal") if isinstance(position.get("openingSignal"), dict) else None,
    )


_MISSING = object()


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or value is None:
        raise InvalidBotDocument(f"{field} must be an integer, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # JavaScript numbers can arrive as doubles
    raise InvalidBotDocument(f"{field} must be an integer, got {_show(value)}")


def _decimal(value: Any, field: str) -> Decimal:
    """A number as exact Decimal: doubles go through their shortest repr (3.0 -> Decimal('3.0'))."""
    if isinstance(value, bool) or value is None:
        raise InvalidBotDocument(f"{field} must be a number, got {_show(value)}")
    try:
        if isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, Decimal128):
            number = value.to_decimal()
        elif isinstance(value, str):
            number = Decimal(value.strip())
        else:
            raise InvalidBotDocument(f"{field} must be a number, got {_show(value)}")
    except InvalidOperation:
        raise InvalidBotDocument(f"{field} must be a number, got {_show(value)}") from None
    if not number.is_finite():
        raise InvalidBotDocument(f"{field} must be a finite number, got {_show(value)}")
    return number


def _check_range(number: Decimal, field: str, *, low: Decimal, high: Decimal) -> None:
    if not low <= number <= high:
        raise InvalidBotDocument(f"{field} must be between {low} and {high}, got {number}")


def _optional_number(container: dict[str, Any], key: str, default: Decimal) -> Decimal:
    value = container.get(key)
    return default if value is None else _decimal(value, f"config.{key}")


def _positive(
    container: dict[str, Any],
    key: str,
    *,
    high: Decimal | None = None,
    high_inclusive: bool = True,
    prefix: str = "config",
) -> Decimal:
    field = f"{prefix}.{key}"
    if key not in container or container[key] is None:
        raise InvalidBotDocument(f"{field} is missing")
    number = _decimal(container[key], field)
    if number <= 0:
        raise InvalidBotDocument(f"{field} must be greater than 0, got {number}")
    if high is not None and (number > high or (not high_inclusive and number == high)):
        bound = "at most" if high_inclusive else "below"
        raise InvalidBotDocument(f"{field} must be {bound} {high}, got {number}")
    return number


# Stop-loss and take-profit are price distances from the entry fill: at 100 % a
# long's stop (or a short's target) sits at zero, and a distance inside the
# spread triggers at once. The executor enforces the same bounds.
MIN_PRICE_DISTANCE_PERCENT = Decimal("0.05")
MAX_PRICE_DISTANCE_PERCENT = Decimal(100)


# A leveraged position is liquidated when its loss eats the margin down to the maintenance margin:
# about 1/leverage minus the maintenance rate away from the entry (isolated margin). Binance's
# tier-1 rates are 0.4 % (BTC) to 1 % and more for small coins; 1 % is the conservative bound.
MAINTENANCE_MARGIN_RATE_PERCENT = Decimal(1)


def liquidation_distance_percent(leverage: int) -> Decimal:
    """How far from the entry (in % of price) an isolated position at ``leverage`` is liquidated."""
    return Decimal(100) / leverage - MAINTENANCE_MARGIN_RATE_PERCENT


def stop_beyond_liquidation(leverage: int, stop_loss_percent: Decimal) -> str | None:
    """Why a stop this far away would never fire (the position is liquidated first), or None."""
    reach = liquidation_distance_percent(leverage)
    if stop_loss_percent < reach:
        return None
    return (f"stopLossPercent {stop_loss_percent} at leverage {leverage} is at or beyond liquidation: the position "
            f"is liquidated about {max(reach, Decimal(0)).normalize():f}% from its entry (100/leverage minus the "
            f"{MAINTENANCE_MARGIN_RATE_PERCENT}% maintenance margin), before its stop; lower the leverage or the stop "
            "distance")


def _price_distance(config: dict[str, Any], key: str) -> Decimal:
    number = _positive(config, key, high=MAX_PRICE_DISTANCE_PERCENT, high_inclusive=False)
    if number < MIN_PRICE_DISTANCE_PERCENT:
        raise InvalidBotDocument(f"config.{key} must be at least {MIN_PRICE_DISTANCE_PERCENT}, got {number}")
    return number


def _maybe_decimal(container: dict[str, Any], key: str) -> Decimal | None:
    value = container.get(key)
    return None if value is None else _decimal(value, f"currentPosition.{key}")
