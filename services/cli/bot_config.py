"""Validating a new bot's settings and building its ``botinstances`` document.

The rules match what the gateway and executor accept (leverage 1..125,
positive percentages up to 100, a Binance USDⓈ-M symbol), so a bot created
here never fails its first tick on its own configuration. Every message
names the setting and the value it got.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bson import ObjectId

from services.cli.errors import USAGE, CliError
from services.common.bot_documents import (
    MAX_PRICE_DISTANCE_PERCENT,
    MIN_PRICE_DISTANCE_PERCENT,
    PRESET_NAMES,
    new_bot_document,
    stop_beyond_liquidation,
)

INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
_SYMBOL = re.compile(r"^[A-Z0-9]{5,20}$")

# The seed's defaults; anything not given on the command line takes these.
DEFAULT_CONFIG: dict[str, Any] = {
    "leverage": 10,
    "stopLossPercent": 3,
    "takeProfitPercent": 6,
    "positionSizePercent": 10,
    "maxDailyLoss": 100,
    "interval": "5m",
    "confidenceThreshold": 70,
    "maxConsecutiveLosses": 3,
}


@dataclass(frozen=True)
class _Rule:
    low: Decimal
    high: Decimal | None
    low_inclusive: bool = False
    high_inclusive: bool = True
    integer: bool = False
    unit: str = ""


_RULES: dict[str, _Rule] = {
    "leverage": _Rule(Decimal(1), Decimal(125), low_inclusive=True, integer=True, unit="x"),
    # Price distances from the entry fill, bounded as the gateway and executor bound them.
    "stopLossPercent": _Rule(MIN_PRICE_DISTANCE_PERCENT, MAX_PRICE_DISTANCE_PERCENT, low_inclusive=True,
                             high_inclusive=False, unit="%"),
    "takeProfitPercent": _Rule(MIN_PRICE_DISTANCE_PERCENT, MAX_PRICE_DISTANCE_PERCENT, low_inclusive=True,
                               high_inclusive=False, unit="%"),
    "positionSizePercent": _Rule(Decimal(0), Decimal(100), unit="%"),
    "maxDailyLoss": _Rule(Decimal(0), None, unit=" USDT"),
    "confidenceThreshold": _Rule(Decimal(0), Decimal(100), low_inclusive=True),
    "maxConsecutiveLosses": _Rule(Decimal(1), Decimal(1000), low_inclusive=True, integer=True),
}


def _bounds(rule: _Rule) -> str:
    low = f"{'>=' if rule.low_inclusive else '>'} {rule.low}"
    if rule.high is None:
        return f"must be {low}"
    return f"must be {low} and {'<=' if rule.high_inclusive else '<'} {rule.high}"


def _number(key: str, raw: Any) -> int | float:
    rule = _RULES[key]
    if isinstance(raw, bool):
        raise CliError(f"{key} must be a number, got {raw!r}", USAGE)
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise CliError(f"{key} must be a number, got {raw!r}", USAGE) from None
    if not value.is_finite():
        raise CliError(f"{key} must be a finite number, got {raw!r}", USAGE)
    if rule.integer and value != value.to_integral_value():
        raise CliError(f"{key} must be a whole number, got {raw}", USAGE)
    too_low = value < rule.low or (value == rule.low and not rule.low_inclusive)
    too_high = rule.high is not None and (value > rule.high or (value == rule.high and not rule.high_inclusive))
    if too_low or too_high:
        raise CliError(f"{key} {_bounds(rule)}, got {raw}", USAGE)
    # Stored as plain numbers like the Next.js app writes them; readers parse
    # doubles through their shortest repr, so "2.5" stays exactly 2.5.
    return int(value) if value == value.to_integral_value() else float(value)


def validate_symbol(symbol: str) -> str:
    cleaned = symbol.strip().upper()
    if not _SYMBOL.match(cleaned) or not cleaned.endswith(("USDT", "USDC")):
        raise CliError(
            f"symbol must be a Binance USDⓈ-M futures symbol such as BTCUSDT (5-20 letters/digits ending in "
            f"USDT or USDC), got {symbol!r}",
            USAGE,
        )
    return cleaned


def validate_preset(preset: int) -> int:
    if preset not in PRESET_NAMES:
        raise CliError(f"preset must be one of 1, 2, 3, 4, got {preset}", USAGE)
    return preset


def parse_config_json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"--config is not valid JSON: {error.msg} at position {error.pos}", USAGE) from None
    if not isinstance(parsed, dict):
        raise CliError("--config must be a JSON object such as {\"leverage\": 5}", USAGE)
    return parsed


def build_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then ``overrides`` (JSON and flags), every value checked."""
    unknown = sorted(set(overrides) - set(DEFAULT_CONFIG))
    if unknown:
        raise CliError(
            f"unknown config setting {', '.join(unknown)}; known settings: {', '.join(DEFAULT_CONFIG)}", USAGE
        )
    merged = {**DEFAULT_CONFIG, **{key: value for key, value in overrides.items() if value is not None}}
    config: dict[str, Any] = {}
    for key, value in merged.items():
        if key == "interval":
            if value not in INTERVALS:
                raise CliError(f"interval must be one of {', '.join(INTERVALS)}, got {value!r}", USAGE)
            config[key] = value
        else:
            config[key] = _number(key, value)
    beyond = stop_beyond_liquidation(int(config["leverage"]), Decimal(repr(config["stopLossPercent"])))
    if beyond is not None:
        raise CliError(beyond, USAGE)
    return config


def bot_document_for_preset(
    *,
    user_id: ObjectId,
    preset: int,
    symbol: str,
    config: dict[str, Any],
    name: str | None = None,
    exchange_connection_id: ObjectId | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    document = new_bot_document(
        user_id=user_id,
        bot_id=preset,
        bot_name=(name or PRESET_NAMES[preset]).strip(),
        symbol=symbol,
        config=config,
        exchange_connection_id=exchange_connection_id,
        now=now,
    )
    if not document["botName"]:
        raise CliError("--name must not be empty", USAGE)
    return document
