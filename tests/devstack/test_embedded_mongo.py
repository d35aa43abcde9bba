"""The embedded database's speed-ups keep MongoDB's answers (through the real wire server and pymongo)."""

from __future__ import annotations

import time

from bson import Int64, ObjectId
from pymongo import MongoClient, ReturnDocument


def test_queries_by_a_missing_id_find_nothing_and_upserts_create(mongo_client: MongoClient, mongo_db_name: str) -> None:
    collection = mongo_client[mongo_db_name]["things"]
    collection.insert_many([{"_id": f"key-{n}", "n": n} for n in range(50)] + [{"_id": ObjectId(), "n": -1}])

    assert collection.find_one({"_id": "key-7"}) == {"_id": "key-7", "n": 7}
    assert collection.find_one({"_id": "missing"}) is None
    assert collection.find_one({"_id": ObjectId()}) is None
    assert collection.find_one({"_id": "missing", "n": 7}) is None
    assert collection.update_one({"_id": "missing"}, {"$set": {"n": 1}}).matched_count == 0
    assert collection.delete_one({"_id": "missing"}).deleted_count == 0

    created = collection.find_one_and_update({"_id": "new"}, {"$setOnInsert": {"n": 99}}, upsert=True,
                                             return_document=ReturnDocument.AFTER)
    assert created == {"_id": "new", "n": 99}
    assert collection.count_documents({}) == 52


def test_numeric_ids_still_match_across_number_types(mongo_client: MongoClient, mongo_db_name: str) -> None:
    # MongoDB: 1 == 1.0 == Int64(1). The exact-id shortcut must not apply to numbers.
    collection = mongo_client[mongo_db_name]["numbers"]
    collection.insert_one({"_id": 1, "name": "one"})

    assert collection.find_one({"_id": 1.0}) == {"_id": 1, "name": "one"}
    assert collection.find_one({"_id": Int64(1)}) == {"_id": 1, "name": "one"}


def test_a_missing_id_costs_about_what_a_present_one_does(mongo_client: MongoClient, mongo_db_name: str) -> None:
    # Unpatched, a miss scanned the whole collection: ~30 ms at 20,000 documents against ~1 ms for a hit.
    collection = mongo_client[mongo_db_name]["large"]
    collection.insert_many([{"_id": f"key-{n}", "payload": "x" * 50} for n in range(20_000)])

    def average_seconds(ids: list[str]) -> float:
        started = time.perf_counter()
        for value in ids:
            collection.find_one({"_id": value})
        return (time.perf_counter() - started) / len(ids)

    hit = average_seconds([f"key-{n}" for n in range(0, 20_000, 500)])
    miss = average_seconds([f"absent-{n}" for n in range(40)])
    assert miss < 3 * hit + 0.002


def test_documents_are_validated_once_and_encoded_exactly_as_before(monkeypatch) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    import pytest
    from mongoeco.core import codec

    from services.devstack.mongo_server import _validate_each_document_once

    document = {"_id": ObjectId(), "config": {"leverage": 5, "stops": [1.5, {"take": Decimal("2.5")}]},
                "lastAnalysis": {"indicators": {"rsi": 41.2, "ema": [1, 2, 3]}, "at": datetime.now(UTC)},
                "statistics": {"totalRuns": 2**40, "streak": {"losses": 0}}}
    invalid = {"config": {"deep": {"deeper": {1, 2}}}}   # a set is not BSON
    expected = codec.DocumentCodec.encode(document)
    with pytest.raises(TypeError):
        codec.DocumentCodec.encode(invalid)

    monkeypatch.setattr(codec, "validate_bson_value", codec.validate_bson_value)   # restored afterwards
    monkeypatch.setattr(codec.DocumentCodec, "encode", codec.DocumentCodec.encode)
    checked: list[object] = []
    real_validate = codec.validate_bson_value
    monkeypatch.setattr(codec, "validate_bson_value", lambda value: (checked.append(value), real_validate(value)))
    _validate_each_document_once()

    assert codec.DocumentCodec.encode(document) == expected
    assert checked == [document]                  # the whole document, once, not once per level
    with pytest.raises(TypeError):
        codec.DocumentCodec.encode(invalid)       # still refused, before anything is encoded


def test_an_in_query_by_ids_finds_exactly_those_and_costs_what_it_asks(mongo_client: MongoClient,
                                                                       mongo_db_name: str) -> None:
    # The executor reads a tick's bots with {_id: {$in: [...]}}: unpatched, every such read scanned the collection.
    collection = mongo_client[mongo_db_name]["bots"]
    ids = [ObjectId() for _ in range(20_000)]
    collection.insert_many([{"_id": value, "n": n} for n, value in enumerate(ids)])
    collection.insert_one({"_id": 7, "n": "numeric"})
    wanted = [ids[19_999], ids[3], ObjectId(), ids[500]]
    found = list(collection.find({"_id": {"$in": wanted}}, {"n": 1}))
    assert [document["n"] for document in found] == [3, 500, 19_999]   # natural order, the absent id skipped
    assert list(collection.find({"_id": {"$in": [ids[3]]}, "n": 4})) == []   # the rest of the filter still applies
    assert [d["n"] for d in collection.find({"_id": {"$in": [7.0, ids[1]]}})] == [1, "numeric"]   # numbers: engine path

    started = time.perf_counter()
    for start in range(0, 40 * 25, 25):
        collection.find({"_id": {"$in": ids[start:start + 25]}}).to_list()
    batched = (time.perf_counter() - started) / 40
    started = time.perf_counter()
    for value in ids[:40]:
        collection.find_one({"_id": value})
    single = (time.perf_counter() - started) / 40
    assert batched < 10 * single + 0.005   # 25 ids cost about 25 keys, not 20,000 documents
