"""The strategy registry: bot preset id -> strategy class.

A strategy registers itself with ``@register``; the server looks bots up
here, so adding a preset is one new module and one import below.
"""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.strategy.strategies.base import Strategy

_REGISTRY: dict[int, type[Strategy]] = {}


def register[S: type[Strategy]](strategy: S) -> S:
    if strategy.bot_id in _REGISTRY:
        raise ValueError(f"bot_id {strategy.bot_id} is already taken by {_REGISTRY[strategy.bot_id].name}")
    _REGISTRY[strategy.bot_id] = strategy
    return strategy


def strategy_for(bot_id: int) -> type[Strategy]:
    try:
        return _REGISTRY[bot_id]
    except KeyError:
        known = ", ".join(str(key) for key in sorted(_REGISTRY))
        raise InvalidArgument(f"bot_id must be one of {known}, got {bot_id}") from None


def all_strategies() -> list[type[Strategy]]:
    return [_REGISTRY[key] for key in sorted(_REGISTRY)]


# Imported for their @register side effect.
from services.strategy.strategies import bitcoin_pro, range_scalper, safe_trader, trend_rider  # noqa: E402,F401
