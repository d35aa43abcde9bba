from tests.support.grpcurl import grpcurl


def test_mongo_fixture_round_trip(mongo_client, mongo_db_name):
    collection = mongo_client[mongo_db_name].things
    collection.insert_one({"_id": "a", "value": 1})
    assert mongo_client.admin.command("ping")["ok"] == 1.0
    assert collection.find_one({"_id": "a"})["value"] == 1


def test_grpcurl_binary_runs():
    result = grpcurl("-version")
    assert "grpcurl" in (result.stdout + result.stderr)
