"""The embedded MongoDB of make run and the tests: fast inserts, duplicates still refused."""

from __future__ import annotations

import time

import pytest
from bson import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError


def test_inserts_stay_linear_in_collection_size(mongo_client, mongo_db_name):
    logs = mongo_client[mongo_db_name].tradelogs
    logs.insert_many([{"n": i} for i in range(2000)])  # a collection that is already large
    started = time.perf_counter()
    logs.insert_many([{"n": i} for i in range(2000)])
    # Quadratic behaviour took ~9 s here; linear takes well under a second.
    assert time.perf_counter() - started < 4.0
    assert logs.count_documents({}) == 4000


@pytest.mark.parametrize("duplicate_id", [ObjectId(), "bot-1", 7])
def test_duplicate_ids_are_still_refused(mongo_client, mongo_db_name, duplicate_id):
    collection = mongo_client[mongo_db_name].things
    collection.insert_one({"_id": duplicate_id})
    with pytest.raises(DuplicateKeyError):
        collection.insert_one({"_id": duplicate_id})
    with pytest.raises(BulkWriteError):
        collection.insert_many([{"_id": ObjectId()}, {"_id": duplicate_id}])
    assert collection.count_documents({"_id": duplicate_id}) == 1


def test_numerically_equal_ids_are_still_one_key(mongo_client, mongo_db_name):
    collection = mongo_client[mongo_db_name].numbers
    collection.insert_one({"_id": 1})
    with pytest.raises(DuplicateKeyError):
        collection.insert_one({"_id": 1.0})
