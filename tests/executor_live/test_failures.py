"""Credentials, fail-closed reads and secrets that never leak, through the real client against the fake."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest

from services.common.errors import FailedPrecondition, TradebotError, Unavailable
from services.common.jsonlog import JsonFormatter
from services.executor.brokers.base import EntryOrder
from services.executor.binance.broker import BinanceFuturesBroker, create_binance_broker
from tests.executor_live.conftest import Credentials, connect
from tests.fakes.binance_futures import FakeBinanceFutures


class Collect(logging.Handler):
    """Every record of every logger, formatted the way services write them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter("executor"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(record.getMessage())  # unformatted too: redaction must not be what saves us


@pytest.fixture
def all_logs() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def test_wrong_secret_is_a_credentials_error_and_the_secret_is_never_written(
    fake: FakeBinanceFutures, credentials: Credentials, all_logs: Collect
) -> None:
    wrong_secret = f"{credentials.api_secret}WRONG"
    broker = await connect(fake, credentials.api_key, wrong_secret)
    try:
        with pytest.raises(FailedPrecondition) as rejected:
            await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.01"), "bot1-t1-entry", Decimal("50000")))
    finally:
        await broker.close()

    message = str(rejected.value)
    assert "exchange rejected the API credentials" in message and "-1022" in message
    assert wrong_secret not in message and credentials.api_key not in message
    assert fake.orders_sent() == []  # the pre-check look-up was already refused; nothing was sent
    assert fake.position("BTCUSDT").amount == 0
    for line in all_logs.lines:
        assert wrong_secret not in line and credentials.api_key not in line


async def test_unknown_api_key_is_a_credentials_error(fake: FakeBinanceFutures) -> None:
    broker = await connect(fake, "someOtherKey123456", "someOtherSecret123456")
    try:
        with pytest.raises(FailedPrecondition, match="credentials.*-2015"):
            await broker.account()
    finally:
        await broker.close()


async def test_a_full_trade_writes_no_secret_to_any_log(
    fake: FakeBinanceFutures, broker: BinanceFuturesBroker, credentials: Credentials, all_logs: Collect
) -> None:
    fill = await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.01"), "bot1-t1-entry", Decimal("50000")))
    await broker.protect("BTCUSDT", "LONG", Decimal("48000"), Decimal("49000"), "bot1-t1-sl", "bot1-t1-tp")  # TP refused
    fake.unknown_status_next()
    await broker.close_position("BTCUSDT", "bot1-t1-close", "EMERGENCY_STOP")
    await broker.closed_trade("BTCUSDT", "LONG", fill.time_ms)

    assert any("take-profit" in line for line in all_logs.lines)  # the logs were captured
    for line in all_logs.lines:
        assert credentials.api_secret not in line and credentials.api_key not in line


async def test_position_read_failure_raises_never_flat(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    await broker.open_position(EntryOrder("BTCUSDT", "LONG", Decimal("0.01"), "bot1-t1-entry", Decimal("50000")))
    fake.fail_next("GET", "/fapi/v3/positionRisk", status=500, code=-1001, msg="Internal error; unable to process your request.",
                   times=3)

    with pytest.raises(Unavailable):
        await broker.position("BTCUSDT")

    assert len([r for r in fake.requests if r.path == "/fapi/v3/positionRisk"]) == 3  # bounded retries
    # A transient failure followed by an answer is just a slower read.
    fake.fail_next("GET", "/fapi/v3/positionRisk", status=503, code=-1001, msg="Service Unavailable.")
    position = await broker.position("BTCUSDT")
    assert position is not None and position.quantity == Decimal("0.01")


async def test_a_rejected_read_is_not_retried(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    fake.fail_next("GET", "/fapi/v3/positionRisk", status=401, code=-2015, msg="Invalid API-key, IP, or permissions for action.")
    with pytest.raises(FailedPrecondition, match="credentials"):
        await broker.position("BTCUSDT")
    assert len([r for r in fake.requests if r.path == "/fapi/v3/positionRisk"]) == 1


async def test_account_read_failure_raises(fake: FakeBinanceFutures, broker: BinanceFuturesBroker) -> None:
    fake.fail_next("GET", "/fapi/v3/account", status=502, code=-1001, msg="Bad gateway", times=3)
    with pytest.raises(Unavailable):
        await broker.account()


async def test_unreachable_exchange_is_unavailable(credentials: Credentials) -> None:
    async with FakeBinanceFutures(api_key=credentials.api_key, api_secret=credentials.api_secret) as gone:
        url = gone.url
    with pytest.raises(TradebotError) as failed:
        await create_binance_broker(api_key=credentials.api_key, api_secret=credentials.api_secret, futures_url=url, spot_url=url)
    assert isinstance(failed.value, Unavailable)
    assert url not in str(failed.value)
