"""Fernet credentials: decrypt failures, key rotation, and the admin CLI through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bson import ObjectId
from cryptography.fernet import Fernet, MultiFernet
from prometheus_client import REGISTRY

from services.common.errors import FailedPrecondition
from services.executor.admin import rotate_all, store_connection
from services.executor.credentials import CredentialVault
from tests.support.processes import REPO_ROOT

CLI_SECRET = "Xy9-cli-secret-never-echoed-4242"


def test_a_token_that_does_not_decrypt_fails_with_a_clean_message():
    failures_before = REGISTRY.get_sample_value("tradebot_credential_failures_total", {"reason": "decrypt"}) or 0.0
    vault = CredentialVault([Fernet.generate_key().decode()])
    foreign = Fernet(Fernet.generate_key()).encrypt(b"real-secret-value").decode()
    with pytest.raises(FailedPrecondition) as raised:
        vault.decrypt(foreign)
    assert raised.value.message == "credentials could not be decrypted"
    assert foreign not in str(raised.value) and raised.value.__cause__ is None
    with pytest.raises(FailedPrecondition):
        vault.decrypt("not a token")
    # Counted for the operator's alert (a lost CREDENTIALS_KEYS stops every bot of the accounts it locked).
    assert REGISTRY.get_sample_value("tradebot_credential_failures_total", {"reason": "decrypt"}) == failures_before + 2


def test_rotation_keeps_old_tokens_readable_and_re_encrypts_under_the_first_key(mongo_client, mongo_db_name):
    db = mongo_client[mongo_db_name]
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    connection_id = store_connection(db, str(ObjectId()), "testnet", "api-key-abc123", "api-secret-xyz789",
                                     Fernet(old_key))
    rotated_vault = CredentialVault([new_key.decode(), old_key.decode()])
    before = db.exchangeconnections.find_one({"_id": ObjectId(connection_id)})
    assert rotated_vault.decrypt(before["apiSecret"]) == "api-secret-xyz789"      # old key still decrypts

    assert rotate_all(db, MultiFernet([Fernet(new_key), Fernet(old_key)])) == 1
    after = db.exchangeconnections.find_one({"_id": ObjectId(connection_id)})
    assert after["apiSecret"] != before["apiSecret"]
    only_new = CredentialVault([new_key.decode()])
    assert only_new.decrypt(after["apiKey"]) == "api-key-abc123"
    assert only_new.decrypt(after["apiSecret"]) == "api-secret-xyz789"
    with pytest.raises(FailedPrecondition):
        CredentialVault([old_key.decode()]).decrypt(after["apiSecret"])
    # New tokens are written under the first key.
    assert only_new.decrypt(rotated_vault.encrypt("fresh")) == "fresh"


def _cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.executor.admin", *args], input=stdin, text=True,
                          capture_output=True, cwd=REPO_ROOT, env={**os.environ, **env}, timeout=60, check=False)


def test_admin_cli_stores_encrypted_keys_and_rotates_without_echoing_secrets(mongo_uri, mongo_client, mongo_db_name):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name, "CREDENTIALS_KEYS": old_key}
    user_id = str(ObjectId())
    added = _cli(["add-connection", "--user-id", user_id, "--mode", "live", "--stdin"], env,
                 stdin=f"cli-api-key-0001\n{CLI_SECRET}\n")
    assert added.returncode == 0, added.stderr
    connection_id = added.stdout.strip()
    assert ObjectId.is_valid(connection_id)
    assert CLI_SECRET not in added.stdout + added.stderr

    doc = mongo_client[mongo_db_name].exchangeconnections.find_one({"_id": ObjectId(connection_id)})
    assert doc["userId"] == ObjectId(user_id) and doc["mode"] == "live" and doc["isActive"] is True
    assert CLI_SECRET not in doc["apiSecret"]
    assert CredentialVault([old_key]).decrypt(doc["apiSecret"]) == CLI_SECRET

    from_env = _cli(["add-connection", "--user-id", user_id, "--mode", "testnet", "--inactive"],
                    {**env, "TRADEBOT_API_KEY": "env-key-12345", "TRADEBOT_API_SECRET": CLI_SECRET})
    assert from_env.returncode == 0 and CLI_SECRET not in from_env.stdout + from_env.stderr

    rotated = _cli(["rotate-keys"], {**env, "CREDENTIALS_KEYS": f"{new_key},{old_key}"})
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 2" in rotated.stdout and CLI_SECRET not in rotated.stdout + rotated.stderr
    doc = mongo_client[mongo_db_name].exchangeconnections.find_one({"_id": ObjectId(connection_id)})
    assert CredentialVault([new_key]).decrypt(doc["apiSecret"]) == CLI_SECRET


def test_admin_cli_rejects_a_bad_user_id(mongo_uri, mongo_db_name):
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name, "CREDENTIALS_KEYS": Fernet.generate_key().decode()}
    result = _cli(["add-connection", "--user-id", "nope", "--mode", "live", "--stdin"], env, stdin=f"k-123456\n{CLI_SECRET}\n")
    assert result.returncode == 2 and "user id" in result.stderr and CLI_SECRET not in result.stderr
