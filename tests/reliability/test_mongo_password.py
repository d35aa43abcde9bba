"""The system on a MongoDB that requires authentication, with a password holding a quote, a backslash and
a non-ASCII letter: ticks run, the CLI works, and no spelling of the password appears in any output."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import uuid
from urllib.parse import quote

import httpx
import pytest
from cryptography.fernet import Fernet
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from services.devstack.processes import REPO_ROOT, start_mongo
from services.devstack.seed import seed_demo
from services.devstack.stack import Stack, StackConfig, StackPorts

pytestmark = pytest.mark.e2e

USER = "tradebot-app"


def _with_credentials(uri: str, password: str) -> str:
    scheme, rest = uri.split("://", 1)
    separator = "&" if "?" in rest else "?"
    # SCRAM-SHA-256 named: MongoDB 7 negotiates it, the embedded mongoeco does not negotiate.
    return f"{scheme}://{USER}:{quote(password, safe='')}@{rest}{separator}authSource=admin&authMechanism=SCRAM-SHA-256"


def test_a_mongodb_password_with_quote_backslash_and_accent_never_appears_in_any_log():
    password = 'Pw"\\é-' + secrets.token_urlsafe(12)
    mongo, plain_uri = start_mongo("memory", auth=(USER, password))
    uri = _with_credentials(plain_uri, password)
    database = f"auth_{uuid.uuid4().hex[:8]}"
    fernet_key = Fernet.generate_key().decode()
    stack = None
    try:
        with MongoClient(plain_uri, serverSelectionTimeoutMS=3000) as anonymous:   # authentication is enforced
            with pytest.raises(OperationFailure):
                anonymous[database].botinstances.find_one({})
        with MongoClient(uri) as client:
            seed_demo(client[database], fernet_key)
        config = StackConfig(mongodb_uri=uri, cron_secret="auth-cron-" + secrets.token_urlsafe(32),
                             credentials_keys=fernet_key, mongodb_db=database, ports=StackPorts.free(),
                             env={"*": {"LOG_LEVEL": "DEBUG"}, "gateway": {"TICK_USE_AI": "false"}})
        stack = Stack(config).start()
        ticks = [httpx.get(config.gateway_url + "/api/cron/run-bots",
                           headers={"Authorization": f"Bearer {config.cron_secret}"}, timeout=60) for _ in range(2)]
        assert all(tick.status_code == 200 and tick.json()["summary"]["successful"] == 4 for tick in ticks), ticks[-1].text
        cli_env = {"MONGODB_URI": uri, "MONGODB_DB": database, "PATH": ""}
        listed = subprocess.run([sys.executable, "-m", "services.cli", "bot", "list"], env=cli_env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert listed.returncode == 0 and "Bitcoin Pro" in listed.stdout, listed.stderr
        # A wrong password: the CLI fails, and says so without quoting the URI it was given.
        wrong_uri = _with_credentials(plain_uri, password + "x")
        refused = subprocess.run([sys.executable, "-m", "services.cli", "bot", "list"],
                                 env={**cli_env, "MONGODB_URI": wrong_uri}, cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode != 0
        output = "\n".join([stack.output(), mongo.output(), listed.stdout, listed.stderr, refused.stdout,
                            refused.stderr, *(tick.text for tick in ticks)])
    finally:
        if stack is not None:
            stack.stop()
        mongo.stop()
    spellings = {password, json.dumps(password)[1:-1], json.dumps(password, ensure_ascii=False)[1:-1],
                 quote(password, safe=""), quote(password), repr(password)[1:-1], password.split("-", 1)[1]}
    leaked = sorted(form for form in spellings if form in output)
    assert not leaked, f"the MongoDB password leaked as {leaked}"
    assert len(output) > 5_000   # DEBUG logs of four processes and two ticks were read
