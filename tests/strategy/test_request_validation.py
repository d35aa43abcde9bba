"""Bad requests are INVALID_ARGUMENT with a message naming the problem; too little history FAILED_PRECONDITION."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.strategy.analysis import job_from_request
from tests.strategy.conftest import analyze_request


def bad(mutate) -> None:
    request = analyze_request()
    mutate(request)
    job_from_request(request)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: setattr(r, "symbol", ""), "symbol must not be empty"),
        (lambda r: setattr(r, "symbol", "btc/usdt"), "symbol must be upper-case"),
        (lambda r: setattr(r, "interval", "7m"), "interval must be one of"),
        (lambda r: setattr(r, "interval", ""), "interval must be one of"),
        (lambda r: setattr(r.candles[10], "close", "NaN"), r"candles\[10\].close must be a finite number"),
        (lambda r: setattr(r.candles[3], "open", "-5"), r"candles\[3\].open must be greater than 0"),
        (lambda r: setattr(r.candles[4], "high", "abc"), r"candles\[4\].high must be a decimal number"),
        (lambda r: setattr(r.candles[5], "volume", "-1"), r"candles\[5\].volume must not be negative"),
        (lambda r: setattr(r.candles[6], "low", "999999"), r"candles\[6\].low must not exceed"),
        (lambda r: setattr(r.candles[7], "open_time_ms", r.candles[6].open_time_ms), "oldest first"),
        (lambda r: r.candles.reverse(), "oldest first"),
        (lambda r: setattr(r, "bot_id", 0), "bot_id must be one of 1, 2, 3, 4, got 0"),
        (lambda r: r.params.update({"min_score": 10.0}), "min_score must be between 30 and 95, got 10"),
        (lambda r: r.params.update({"leverage": 10.0}), "has no parameter leverage"),
    ],
)
def test_invalid_requests_are_rejected_with_a_clear_message(mutate, message):
    with pytest.raises(InvalidArgument, match=message):
        bad(mutate)


def test_too_few_closed_candles_is_a_failed_precondition_saying_how_many():
    request = analyze_request()
    del request.candles[150:]
    with pytest.raises(FailedPrecondition, match="Bitcoin Pro needs at least 200 closed candles.*got 150"):
        job_from_request(request)


def test_open_candles_do_not_count_towards_the_history():
    request = analyze_request()
    del request.candles[200:]
    request.candles[-1].closed = False
    with pytest.raises(FailedPrecondition, match="got 199"):
        job_from_request(request)
