"""``tradebot connection add`` and ``tradebot keys rotate`` with the executor's real encryption."""

from __future__ import annotations

import re

import pytest
from bson import ObjectId
from cryptography.fernet import Fernet, InvalidToken
from pymongo.database import Database

from tests.cli.conftest import RunCli

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def _store_connection_available() -> bool:
    try:
        from services.executor.admin import rotate_all, store_connection  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _store_connection_available(),
    reason="services.executor.admin.store_connection/rotate_all are not in this tree yet",
)


def test_connection_add_stores_encrypted_keys_and_never_prints_them(run_cli: RunCli, db: Database, user_id) -> None:
    key = Fernet.generate_key().decode()
    result = run_cli("connection", "add", "--user-id", str(user_id), "--mode", "testnet", "--api-key-stdin",
                     input=f"{API_KEY}\n{API_SECRET}\n", extra_env={"CREDENTIALS_KEYS": key})
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert API_KEY not in output and API_SECRET not in output
    assert API_SECRET[:8] not in output and API_SECRET[-8:] not in output
    connection_id = ObjectId(re.search(r"connection ([0-9a-f]{24})", result.stdout).group(1))
    stored = db.exchangeconnections.find_one({"_id": connection_id})
    assert stored["userId"] == user_id and stored["mode"] == "testnet" and stored["isActive"] is True
    assert API_KEY not in str(stored) and API_SECRET not in str(stored)
    fernet = Fernet(key.encode())
    assert fernet.decrypt(stored["apiKey"].encode()).decode() == API_KEY
    assert fernet.decrypt(stored["apiSecret"].encode()).decode() == API_SECRET


def test_connection_add_refuses_missing_inputs(run_many, db: Database, user_id) -> None:
    key = Fernet.generate_key().decode()
    add = ("connection", "add", "--mode", "live", "--api-key-stdin", "--user-id")
    no_keys_env, one_line, unknown_user = run_many(
        ((*add, str(user_id)), {"input": f"{API_KEY}\n{API_SECRET}\n"}),
        ((*add, str(user_id)), {"input": f"{API_KEY}\n", "extra_env": {"CREDENTIALS_KEYS": key}}),
        ((*add, str(ObjectId())), {"input": f"{API_KEY}\n{API_SECRET}\n", "extra_env": {"CREDENTIALS_KEYS": key}}),
    )
    assert no_keys_env.returncode == 2 and "CREDENTIALS_KEYS is required" in no_keys_env.stderr
    assert one_line.returncode == 2 and "two lines" in one_line.stderr
    assert unknown_user.returncode == 1 and "no user" in unknown_user.stderr
    for result in (no_keys_env, one_line, unknown_user):
        assert API_SECRET not in result.stdout + result.stderr
    assert db.exchangeconnections.count_documents({}) == 0


def test_keys_rotate_re_encrypts_under_the_new_first_key(run_cli: RunCli, db: Database, user_id) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    added = run_cli("connection", "add", "--user-id", str(user_id), "--mode", "live", "--api-key-stdin",
                    input=f"{API_KEY}\n{API_SECRET}\n", extra_env={"CREDENTIALS_KEYS": old_key})
    assert added.returncode == 0, added.stderr
    rotated = run_cli("keys", "rotate", extra_env={"CREDENTIALS_KEYS": f"{new_key},{old_key}"})
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 exchange connection(s)" in rotated.stdout
    stored = db.exchangeconnections.find_one({"userId": user_id})
    # The old key can now be dropped: the new one alone decrypts.
    assert Fernet(new_key.encode()).decrypt(stored["apiSecret"].encode()).decode() == API_SECRET
    with pytest.raises(InvalidToken):
        Fernet(old_key.encode()).decrypt(stored["apiSecret"].encode())
    # Rotating without the key the tokens are under stops with a clear message.
    lost = run_cli("keys", "rotate", extra_env={"CREDENTIALS_KEYS": Fernet.generate_key().decode()})
    assert lost.returncode == 1 and "could not be decrypted with any key" in lost.stderr
