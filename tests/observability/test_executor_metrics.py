"""Executor metrics: orders and safety trips, read off real RunCycle calls on a real gRPC server."""

from __future__ import annotations

from tradebot.v1 import common_pb2, executor_pb2

from services.executor.metrics_hooks import record_cycle
from tests.executor.builders import request
from tests.observability.scrape import moved, scrape

RUN_CYCLE = "/tradebot.v1.Executor/RunCycle"


async def test_a_paper_order_counts_as_placed_in_paper_mode(executor, paper_connection, metrics_port):
    user_id, _ = paper_connection
    before = await scrape(metrics_port)

    reply = await executor.run_cycle(request(user_id=user_id, tick_id="obs-order", confidence=80))

    after = await scrape(metrics_port)
    assert reply.order.placed and reply.order.side == common_pb2.SIDE_LONG
    assert moved(before, after, "tradebot_orders_placed_total", mode="paper", side="LONG") == 1
    assert moved(before, after, "tradebot_orders_placed_total", mode="paper", side="SHORT") == 0
    assert moved(before, after, "tradebot_safety_trips_total", rule="CONSECUTIVE_LOSSES") == 0
    assert moved(before, after, "tradebot_grpc_server_handling_seconds_count", method=RUN_CYCLE) == 1


async def test_a_losing_streak_counts_as_a_safety_trip_and_places_nothing(executor, paper_connection, metrics_port):
    user_id, _ = paper_connection
    before = await scrape(metrics_port)

    reply = await executor.run_cycle(request(user_id=user_id, tick_id="obs-trip", consecutive_losses=3))

    after = await scrape(metrics_port)
    assert reply.safety.tripped and reply.safety.rule == "CONSECUTIVE_LOSSES"
    assert not reply.order.placed
    assert moved(before, after, "tradebot_safety_trips_total", rule="CONSECUTIVE_LOSSES") == 1
    assert moved(before, after, "tradebot_orders_placed_total", mode="paper", side="LONG") == 0


async def test_a_rejected_entry_and_a_failed_protection_count_as_failed_orders(metrics_port):
    # Paper never rejects an entry, so this reads a response shaped like a live rejection.
    response = executor_pb2.RunCycleResponse(events=[
        executor_pb2.ExecutorEvent(log_type="ERROR", severity="ERROR", action="ORDER_FAILED", message="rejected"),
        executor_pb2.ExecutorEvent(log_type="SAFETY", severity="CRITICAL", action="STOP_LOSS_FAILED", message="x"),
        executor_pb2.ExecutorEvent(log_type="SYSTEM", severity="WARNING", action="POSITION_GONE", message="y"),
    ])
    before = await scrape(metrics_port)
    record_cycle(response, "live")
    after = await scrape(metrics_port)
    assert moved(before, after, "tradebot_orders_failed_total", mode="live", reason="rejected") == 1
    assert moved(before, after, "tradebot_orders_failed_total", mode="live", reason="protection") == 1
    assert moved(before, after, "tradebot_orders_placed_total", mode="live", side="LONG") == 0
