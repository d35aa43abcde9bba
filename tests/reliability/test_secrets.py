"""A full tick with distinctive secrets, then a grep of everything the system produced: none may appear."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_no_secret_in_any_output_response_or_document(rstack):
    strategy, symbol, interval, _ = rstack.find_tradeable()
    testnet_user, _ = rstack.add_testnet_user()
    testnet_bot = rstack.add_bot(testnet_user, 1, symbol="BTCUSDT", config={"confidenceThreshold": 1})
    paper_user, _ = rstack.add_user()
    rstack.add_bot(paper_user, strategy, symbol=symbol, config={"interval": interval, "confidenceThreshold": 1})
    broken_user, _ = rstack.add_user(with_paper_connection=False)
    # A connection whose stored secret is plain text, not a Fernet token: the error must not quote it.
    rstack.db.exchangeconnections.insert_one({
        "userId": broken_user, "exchange": "binance", "mode": "testnet", "apiKey": rstack.testnet_key,
        "apiSecret": rstack.testnet_secret, "isActive": True,
    })  # fmt: skip
    rstack.add_bot(broken_user, 2)

    responses = [rstack.tick(), rstack.tick(secret=rstack.cron_secret[:-1]), rstack.tick(method="POST")]

    assert [response.status_code for response in responses] == [200, 401, 200]
    results = {result["botInstanceId"]: result for result in responses[0].json()["results"]}
    # The testnet bot really signed requests with the key against the fake futures server.
    assert results[str(testnet_bot)]["status"] == "success", results[str(testnet_bot)]
    assert sum(result["status"] == "failed" for result in results.values()) == 1, results
    documents = [*rstack.db.tradelogs.find({}), *rstack.db.botinstances.find({})]
    everything = "\n".join([
        rstack.all_output(),
        *(response.text for response in responses),
        *(str(dict(response.headers)) for response in responses),
        *map(str, documents),
    ])  # fmt: skip
    secrets = {
        "cron secret": rstack.cron_secret,
        "OpenAI key": rstack.openai_key,
        "API key": rstack.testnet_key,
        "API secret": rstack.testnet_secret,
        "Fernet key": rstack.stack.config.credentials_keys,
    }
    leaked = {name for name, secret in secrets.items() if secret in everything}
    assert not leaked, f"leaked: {sorted(leaked)}"
    assert len(everything) > 10_000  # the grep read real output, not an empty string
