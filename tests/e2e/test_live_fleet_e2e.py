"""50 live accounts for 3 ticks through the real processes and python-binance, on the exchange that enforces
Binance's limits: no 429 or 418 ever, nothing sent after one, every bot served from tick 2 on, no order
twice, and the accounts kept from their user-data streams (no weight-30 read, no per-tick account read)."""

from __future__ import annotations

import pytest

from bench.live import LiveOptions, run_live
from bench.population import plan

pytestmark = pytest.mark.e2e

BOTS = 250   # 5 bots an account: 50 live accounts
TICKS = 3


@pytest.fixture(scope="module")
def fleet() -> tuple[list[dict], list[dict]]:
    return run_live(plan(BOTS), LiveOptions(ticks=TICKS, openai_latency_ms=50, minute_apart=False,
                                            tick_timeout_seconds=240))


def test_the_exchange_never_had_to_refuse_anything(fleet) -> None:
    rows, _ = fleet
    assert [row["tick"] for row in rows] == [1, 2, 3] and all(row["accounts"] == 50 for row in rows)
    for row in rows:
        assert (row["answered_429"], row["answered_418"], row["sent_after_429"]) == (0, 0, 0), row
        assert 0 < row["peak_used_weight_1m"] <= 2400, row


def test_every_bot_is_served_from_the_second_tick_on(fleet) -> None:
    rows, _ = fleet
    for row in rows[1:]:
        assert (row["served"], row["skipped"], row["failed"]) == (BOTS, 0, 0), row


def test_accounts_come_from_their_streams_not_from_per_tick_reads(fleet) -> None:
    rows, details = fleet
    assert all(row["ws_connections"] >= 1 for row in rows)
    for tick in details:
        spent = tick["weight_by_path"]
        assert "/fapi/v1/income" not in spent and "/fapi/v1/positionSide/dual" not in spent   # no weight-30 read
    # Tick 1 brings every account up (one snapshot each, weight 5); the ticks after it read no account.
    first, *later = details
    assert first["weight_by_path"].get("/fapi/v3/account", 0) <= 50 * 5 * 2
    assert all(tick["weight_by_path"].get("/fapi/v3/account", 0) <= 5 * 5 for tick in later)


def test_no_order_was_placed_twice(fleet) -> None:
    _, details = fleet
    assert details[-1]["duplicate_client_order_ids"] == []
