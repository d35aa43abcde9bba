"""The results of a tick go to MongoDB in chunks of at most 1,000: round trips grow with bots / 1,000 only."""

from __future__ import annotations

from bson import ObjectId

from services.gateway.repository import CHUNK_SIZE, BotRepository, BotUpdate
from tests.gateway.conftest import CommandRecorder


async def test_2500_results_take_three_bulk_writes_and_three_inserts(mongo_uri, mongo_client, mongo_db_name):
    recorder = CommandRecorder()
    repository = BotRepository.connect(mongo_uri, mongo_db_name, event_listeners=[recorder])
    bots = [ObjectId() for _ in range(2_500)]
    mongo_client[mongo_db_name].botinstances.insert_many(
        [{"_id": bot, "status": "ACTIVE", "lockOwner": "tick-1", "statistics": {"totalRuns": 0}} for bot in bots]
    )
    updates = [BotUpdate(bot, {"$set": {"lastError": None}, "$unset": {"lockOwner": ""},
                               "$inc": {"statistics.totalRuns": 1}}) for bot in bots]  # fmt: skip
    logs = [{"botInstanceId": bot, "logType": "ANALYSIS", "message": "HOLD"} for bot in bots]
    try:
        stored = await repository.write_results("tick-1", updates, logs)
    finally:
        await repository.close()

    assert recorder.data_commands() == ["update"] * 3 + ["insert"] * 3
    assert all(len(body.get("updates", body.get("documents", []))) <= CHUNK_SIZE for body in recorder.bodies)
    database = mongo_client[mongo_db_name]
    assert database.botinstances.count_documents({"statistics.totalRuns": 1, "lockOwner": {"$exists": False}}) == 2_500
    assert database.tradelogs.count_documents({}) == 2_500 and len(stored) == 2_500
