"""The controls' documents: what applies to a user's bots, and what an unreadable document means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.trading_controls import (
    BREAKER_ID,
    NO_CONTROLS,
    breaker_document,
    control_ids,
    control_records,
    controls_for,
    describe_halts,
    halt_document,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _halt(user_id: str | None = None, reason: str = "maintenance", flatten: bool = False) -> dict:
    return halt_document(user_id=user_id, reason=reason, by="alice", now=NOW, flatten=flatten)


def _breaker(seconds: float = 600) -> dict:
    return breaker_document(cause="flash_crash", reason="BTCUSDT moved 12%", evidence={}, by="gateway@x",
                            now=NOW, cooldown_seconds=seconds)


def test_nothing_stored_allows_entries() -> None:
    assert controls_for([], "u1", NOW) == NO_CONTROLS
    assert NO_CONTROLS.entries_stopped == "" and not NO_CONTROLS.flatten


def test_a_users_halt_applies_to_that_user_only_and_the_fleet_halt_to_everyone() -> None:
    documents = [_halt("u1", "review")]
    assert controls_for(documents, "u1", NOW).entries_stopped == "halted: review"
    assert controls_for(documents, "u2", NOW).entries_stopped == ""
    both = [_halt("u1", "review"), _halt(None, "incident")]
    assert controls_for(both, "u1", NOW).entries_stopped == "halted: incident"   # the fleet's reason first
    assert controls_for(both, "u2", NOW).entries_stopped == "halted: incident"


def test_flatten_comes_from_either_halt() -> None:
    assert controls_for([_halt("u1", flatten=True)], "u1", NOW).flatten
    assert controls_for([_halt(None, flatten=True), _halt("u1")], "u1", NOW).flatten
    assert controls_for([_halt(None, flatten=True)], "u1", NOW).flatten
    assert not controls_for([_halt("u2", flatten=True)], "u1", NOW).flatten   # another user's flatten


def test_the_breaker_stops_entries_until_its_cool_down_ends_and_a_halt_outranks_it() -> None:
    assert controls_for([_breaker()], "u1", NOW).entries_stopped == "circuit breaker open: BTCUSDT moved 12%"
    assert controls_for([_breaker()], "u1", NOW + timedelta(seconds=600)).entries_stopped == ""
    assert controls_for([_breaker(), _halt()], "u1", NOW).entries_stopped == "halted: maintenance"


def test_unreadable_documents_are_honoured_fail_closed() -> None:
    junk_halt = {"_id": "halt:fleet", "reason": ["not", "text"]}
    assert controls_for([junk_halt], "u1", NOW).entries_stopped.startswith("halted: (the stored control document")
    junk_breaker = {"_id": BREAKER_ID, "until": "tomorrow", "reason": "x"}
    assert controls_for([junk_breaker], "u1", NOW + timedelta(days=365)).entries_stopped == "circuit breaker open: x"


def test_one_query_by_id_covers_every_control_of_a_user() -> None:
    assert control_ids("u1") == ["halt:fleet", "breaker:fleet", "halt:user:u1"]


def test_an_event_and_its_trade_log_share_one_id_and_the_seeds_fields() -> None:
    event, trade_log = control_records("TRADING_HALTED", user_id="6650f0f0f0f0f0f0f0f0f0f0", message="halted",
                                       data={"reason": "x"}, now=NOW)
    assert event["_id"] == trade_log["_id"] and event["notifiedAt"] is None
    assert set(trade_log) == {"_id", "userId", "botInstanceId", "logType", "severity", "action", "message", "data",
                              "createdAt"}
    assert (trade_log["logType"], trade_log["severity"]) == ("SAFETY", "CRITICAL")


def test_the_status_view_lists_every_control() -> None:
    shown = describe_halts([_halt(None, "incident", flatten=True), _halt("u1", "review"), _breaker()], NOW)
    assert shown["halted"] is True and shown["fleetHalt"]["flatten"] is True
    assert [halt["userId"] for halt in shown["userHalts"]] == ["u1"]
    assert shown["circuitBreaker"]["open"] is True and shown["circuitBreaker"]["cause"] == "flash_crash"
    assert describe_halts([], NOW) == {"halted": False, "fleetHalt": None, "userHalts": [],
                                       "circuitBreaker": {"open": False}}
