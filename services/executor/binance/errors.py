"""Binance answers -> the project's errors, in one place.

The broker never lets a python-binance or aiohttp exception out: each is
translated here with Binance's code and message (which never carry
credentials; registered secrets are redacted anyway) and nothing from the
request (URLs, signatures, headers). ``UnknownOutcome`` marks answers after
which an order may or may not have executed (HTTP 5xx, timeouts, dropped
connections): order placement resolves those by client id, never by
sending again.
"""

from __future__ import annotations

import asyncio

import aiohttp
from binance.exceptions import BinanceAPIException, BinanceRequestException

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TradebotError,
    Unavailable,
)
from services.common.jsonlog import redact
from services.common.weight_governor import IP_BAN_WORDS

TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
DUPLICATE_CLIENT_ID = -4116
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
ORDER_DOES_NOT_EXIST = -2013
UNKNOWN_ORDER_SENT = -2011

CREDENTIAL_CODES = frozenset({-1022, -2014, -2015, -2008})
INVALID_ARGUMENT_CODES = frozenset({
    -1013,  # filter failure (LOT_SIZE, MARKET_LOT_SIZE, ...)
    -1102, -1106, -1111, -1116, -1117, -1121,
    -4003, -4005, -4014, -4015, -4023, -4028, -4164,
})
RATE_LIMIT_CODES = frozenset({-1003, -1015})
# Binance's own "the request may or may not have been executed" codes.
UNKNOWN_STATUS_CODES = frozenset({-1000, -1001, -1006, -1007, -1008})
MARGIN_INSUFFICIENT = -2019
CONDITIONAL_TYPE_ON_ORDER_ENDPOINT = -4120
POSITION_SIDE_MISMATCH = -4061


class UnknownOutcome(Unavailable):
    """The request reached (or may have reached) Binance but its result is unknown."""


class PositionModeMismatch(FailedPrecondition):
    """-4061: the account is in hedge mode (dual-side positions); Binance executed nothing."""


HEDGE_MODE_ADVICE = ("the Binance Futures account is in hedge mode (dual-side positions); "
                     "switch it to one-way mode to trade with this bot")


def hedge_mode_error(action: str) -> PositionModeMismatch:
    return PositionModeMismatch(f"{HEDGE_MODE_ADVICE} ({action} not sent)")


def is_ip_ban(error: BaseException) -> bool:
    """Binance's 418 as translated below, or the weight governor's refusal while the ban lasts ("an IP ban (418)
    on ..."): the words the gateway reports as CRITICAL EXCHANGE_BANNED."""
    return isinstance(error, ResourceExhausted) and IP_BAN_WORDS in error.message


def describe(exc: BinanceAPIException) -> str:
    return redact(f"code {exc.code}: {exc.message}")


def translate_api_error(exc: BinanceAPIException, action: str) -> TradebotError:
    """A Binance error answer as the project error a caller can act on."""
    code = int(exc.code or 0)
    status = int(exc.status_code or 0)
    detail = describe(exc)
    if status in (418, 429) or code in RATE_LIMIT_CODES:
        # Not executed (Binance refused it): a rejection, never an unknown outcome to look up.
        retry_after = _retry_after(exc)
        # "IP ban": the gateway reports a ban as CRITICAL EXCHANGE_BANNED (every account behind the IP is blind),
        # from the 418 itself as from the governor's refusals while the ban lasts.
        what = f"Binance {IP_BAN_WORDS}" if status == 418 else "Binance rate limit hit"
        return ResourceExhausted(f"{what} during {action} ({detail})", retry_after=retry_after)
    if code in CREDENTIAL_CODES or status == 401:
        return FailedPrecondition(f"exchange rejected the API credentials during {action} ({detail})")
    if status >= 500 or code in UNKNOWN_STATUS_CODES:
        return UnknownOutcome(f"Binance could not answer {action} (HTTP {status}, {detail})")
    if code == MARGIN_INSUFFICIENT:
        return FailedPrecondition(f"margin is insufficient for {action} ({detail})")
    if code == CONDITIONAL_TYPE_ON_ORDER_ENDPOINT:
        return FailedPrecondition(f"conditional order sent to the wrong endpoint during {action} ({detail})")
    if code == POSITION_SIDE_MISMATCH:
        return PositionModeMismatch(f"{HEDGE_MODE_ADVICE} ({action} refused: {detail})")
    if code in INVALID_ARGUMENT_CODES:
        return InvalidArgument(f"Binance rejected {action} ({detail})")
    if code in (ORDER_DOES_NOT_EXIST, UNKNOWN_ORDER_SENT):
        return NotFound(f"Binance does not know the order in {action} ({detail})")
    if code == TIMESTAMP_OUTSIDE_RECV_WINDOW:
        return Unavailable(f"clock out of sync with Binance during {action} ({detail})")
    return FailedPrecondition(f"Binance rejected {action} ({detail})")


def translate_transport_error(exc: BaseException, action: str) -> TradebotError:
    """Timeouts, resets and unreadable answers: the outcome is unknown; no URL or request detail leaks."""
    if isinstance(exc, BinanceRequestException):
        return UnknownOutcome(f"Binance sent an unreadable answer to {action}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Unavailable(f"Binance is unreachable for {action} (connection failed)")
    return UnknownOutcome(f"Binance did not answer {action} ({type(exc).__name__})")


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, BinanceRequestException)


def _retry_after(exc: BinanceAPIException) -> float:
    headers = getattr(exc.response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", "0") or 0)
    except (TypeError, ValueError):
        return 0.0
